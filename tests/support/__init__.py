"""What tests and benchmarks share: the real services, supervisors started as a user starts them, etcd
read over plain HTTP, and waiting. One module per job:

- waiting.py: ``wait_for``, the one poll-until-true (its failure is an ``AssertionError``)
- net.py: ``free_port``, ``http_request`` / ``http_get``
- services.py: ``services_up`` (the shared Docker engine and etcd, through scripts/services.sh)
- docker.py: ``docker`` and what the engine tells of a service's containers
- etcd.py: ``EtcdV2``, a small etcd client of our own, and ``EtcdHistory``, every change under a prefix
- etcd_cluster.py: ``Member`` / ``Cluster``, private etcd members to freeze, kill or start late
- supervisor.py: ``Supervisor``, one ``main.py`` or ``python -m supervisor`` run and its cleanup
- ini.py: ``write_ini``, a task file
- metrics.py: ``seq_at`` / ``seq_passes``, the sample number at a supervisor's endpoint
- leftovers.py: ``assert_nothing_left`` after a supervisor's own end
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE = "horizon-busybox:latest"
ETCD = "127.0.0.1:2379"  # the shared etcd, as --etcd takes it
NAMESPACE = "/horizon-test"  # the tests' (benchmarks use their own, per run)

# PID 1 in a container ignores signals it does not handle: these tasks say how they end.
POLITE = "sh -c 'trap \"exit 0\" TERM; while true; do sleep 0.1; done'"  # stops at once on SIGTERM
DIES_ON_TERM = "sh -c 'trap \"exit 143\" TERM; while true; do sleep 0.1; done'"
ENDS_ON_CUE = "sh -c 'trap \"exit 143\" TERM; while [ ! -e /tmp/end ]; do sleep 0.1; done; exit {code}'"
