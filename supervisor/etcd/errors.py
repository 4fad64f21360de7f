"""How an etcd call fails, the same on both APIs, so the publisher (and any other client) needs no
knowledge of which one it talks to."""


class Unavailable(Exception):
    """No member answered, or a request failed on its way: try again later."""


class Unanswered(Unavailable):
    """No member answered at all (refused connections, timeouts): etcd is away for every request on this
    connection, not for this one alone (an error a member answered with may be the request's own)."""


CREDENTIALS_FIX = "check [etcd] username and password_file, or ca_cert, cert and key"


class Refused(Unavailable):
    """A member answered but refused us (bad credentials, no permission, a TLS certificate it rejects,
    no such API): retrying alone will not help, so it is reported as a mistake to fix, with its ``fix``."""

    def __init__(self, message: str, fix: str = CREDENTIALS_FIX) -> None:
        super().__init__(message)
        self.fix = fix


class Missing(Exception):
    """The record is not as we last wrote it (deleted, expired, its lease gone, or changed by a write
    we did not make or did not see land): write it again, whole."""
