"""etcd as horizon uses it, for the publisher and for any client of the fleet (one place for both):

- layout.py: where a task's record lives and what its keys are called (both APIs use the same layout)
- errors.py: the three ways an etcd call fails, the same on both APIs
- store.py: ``Backend`` and ``RecordStore``, what the publisher needs, and ``connect`` to pick the API
- v2.py: the v2 keys API through python-etcd (a directory with a TTL per task)
- tls.py: TLS settings both API clients share
- gateway.py: a small client of etcd's v3 JSON gateway on http.client (no gRPC: it is unsafe across fork)
- v3.py: the v3 API (a lease per task, the record written in one transaction, guarded writes)

Nothing here is imported by the parent at start: the API modules load http.client (v3), or python-etcd
and urllib3 (v2), which only the processes that talk to etcd need.
"""
