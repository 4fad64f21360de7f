"""The shared Docker engine and etcd, started the way the README starts them."""

from __future__ import annotations

import subprocess

from tests.support import ROOT


def services_up(quiet: bool = False) -> None:
    """scripts/services.sh up: idempotent, so every test session and benchmark run may call it."""
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(["bash", str(ROOT / "scripts/services.sh"), "up"], check=True, timeout=300, stdout=out, stderr=out)
