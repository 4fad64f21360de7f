"""What tests and benchmarks share: the real services, supervisors started as a user starts them, etcd
read over plain HTTP, and waiting. One module per job:

- waiting.py: ``wait_for``, the one poll-until-true (its failure is an ``AssertionError``)
- net.py: ``free_port``, ``http_request`` / ``http_get``
- services.py: ``services_up`` (the shared Docker engine and etcds, through scripts/services.sh)
- docker.py: ``docker`` and what the engine tells of a service's containers
- etcd.py: ``EtcdV2`` / ``EtcdV3`` (``etcd_client(api)``), small etcd clients of our own that read a
  task as a ``TaskNode`` and every change under a prefix as a history, whatever the API; ``etcdctl``
- etcd_cluster.py: ``Member`` / ``Cluster``, private etcd members (either API) to freeze, kill or start late
- supervisor.py: ``Supervisor``, one ``main.py`` or ``python -m supervisor`` run on an API, and its cleanup;
  ``interruptible``, for a child that is sent SIGINT
- ini.py: ``write_ini``, a task file for an API
- metrics.py: ``seq_at`` / ``seq_passes``, the sample number at a supervisor's endpoint
- leftovers.py: ``assert_nothing_left`` after a supervisor's own end
- host.py: ``HostTree``, a host tree (``python -m supervisor DIR``) on a directory of task files, and its
  ``host_tree`` fixture
- notify.py: ``NotifyListener``, a NOTIFY_SOCKET of the test's own (systemd's notify protocol)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE = "horizon-busybox:latest"
# The shared etcds, as --etcd takes them: Debian's etcd 3.4 with --enable-v2 (the v2 tests'; it serves v3
# too) and etcd 3.5 as it comes, v3 only (the v3 tests'): scripts/services.sh starts both.
ETCD = "127.0.0.1:2379"
ETCD_V3 = "127.0.0.1:2479"
ETCD_HOSTS = {"v2": ETCD, "v3": ETCD_V3}  # api -> the shared etcd its tests use
NAMESPACE = "/horizon-test"  # the tests' (benchmarks use their own, per run)

# PID 1 in a container ignores signals it does not handle: these tasks say how they end.
POLITE = "sh -c 'trap \"exit 0\" TERM; while true; do sleep 0.1; done'"  # stops at once on SIGTERM
DIES_ON_TERM = "sh -c 'trap \"exit 143\" TERM; while true; do sleep 0.1; done'"
ENDS_ON_CUE = "sh -c 'trap \"exit 143\" TERM; while [ ! -e /tmp/end ]; do sleep 0.1; done; exit {code}'"
