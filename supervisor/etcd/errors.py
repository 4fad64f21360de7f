"""How an etcd call fails, the same on both APIs, so the publisher (and any other client) needs no
knowledge of which one it talks to."""


class Unavailable(Exception):
    """No member answered, or a request failed on its way: try again later."""


class Refused(Unavailable):
    """A member answered but refused us (bad credentials, no permission, a TLS certificate it rejects):
    retrying alone will not help, so it is reported as a mistake to fix, not as an outage."""


class Missing(Exception):
    """The record is not as we last wrote it (deleted, expired, its lease gone, or changed by a write
    we did not make or did not see land): write it again, whole."""
