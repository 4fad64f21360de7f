"""horizon's benchmark suite: ``.venv/bin/python -m bench [--smoke] [--only NAME,...]`` (see bench/run.py)."""
