"""horizon's benchmark suite: ``.venv/bin/python -m bench.run [--smoke] [--only NAME,...]``."""
