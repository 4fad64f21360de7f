"""One log format for the parent and every worker, so a unit's journal reads as one program."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s horizon[%(process)d] %(name)s %(levelname)s %(message)s"


def configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # python-etcd logs every failed request at ERROR; the publisher reports outages itself.
    logging.getLogger("etcd").setLevel(logging.CRITICAL)
    for chatty in ("urllib3", "docker", "asyncio"):
        logging.getLogger(chatty).setLevel(max(level, logging.INFO))
