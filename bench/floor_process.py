"""The footprint's baseline: the least a supervisor of this design could be. One parent that imports
the same libraries and forks three idle children, like horizon's three workers, and samples the same
container at the same interval by re-reading its files (``Floor``). ``python -m bench.floor_process PID
INTERVAL``; it runs until killed."""

import os
import select
import sys
import time

import docker  # noqa: F401 - the same imports as a supervisor: their memory is part of the floor
import etcd  # noqa: F401
import msgpack  # noqa: F401
import psutil  # noqa: F401
import tornado.web  # noqa: F401

from bench.common import Floor


def main() -> None:
    pid, interval = int(sys.argv[1]), float(sys.argv[2])
    for _ in range(3):
        if os.fork() == 0:
            while os.getppid() != 1:
                select.select([], [], [], 1.0)
            os._exit(0)
    floor = Floor(pid)
    tick = time.monotonic()
    while True:
        floor.read()
        tick += interval
        select.select([], [], [], max(0.0, tick - time.monotonic()))


if __name__ == "__main__":
    main()
