"""The ``horizon`` command: the fleet of tasks as etcd holds it, across every host, and control of it.

One module per job:

- records.py: every task's record from one read of ``{namespace}/services/`` (``Fleet``, ``Task``), and the
  filters (``Selection``) that ls, watch and the control commands share
- render.py: a task as a row (text table or JSON) and as the ``show`` page; units and durations
- changes.py: what changed between two looks at the fleet (appeared, state changed, gone): ``watch``
- control.py: stop, pause and resume through the control key, and the wait for their effect
- logs.py: a task's output from its endpoint (``/logs``), or the last lines its final record keeps
- prune.py: what ``prune`` removes (finished records that would never expire or are old, empty v2
  service directories), never a live record
- connection.py: the etcd options (flags, ``--config``, environment) as one ``EtcdSection``, built and
  checked by supervisor/config.py like a task file's, and the backend they name
- cli.py: the command line (``horizon = supervisor.fleet.cli:main``): one line and exit 2 for a usage
  mistake, one line and exit 1 when etcd does not answer or refuses

Nothing here is imported by the supervisor; it reads and writes etcd through supervisor/etcd like the
publisher does, with the key layout of supervisor/etcd/layout.py.
"""
