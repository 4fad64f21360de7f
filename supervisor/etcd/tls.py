"""TLS for both APIs' clients: the urllib3 pool settings, and telling a refused handshake from silence."""

from __future__ import annotations

import ssl
from typing import Any, Dict, Optional

import urllib3


def is_tls_refusal(exc: BaseException) -> bool:
    """A TLS handshake that failed (bad certificate, unknown CA): python-etcd wraps urllib3's SSLError."""
    cause = getattr(exc, "cause", None) or exc
    return isinstance(cause, (urllib3.exceptions.SSLError, ssl.SSLError))


def tls_pool_options(ca_cert: Optional[str], cert: Optional[str], key: Optional[str]) -> Dict[str, Any]:
    """urllib3 pool arguments for a CA to verify etcd with and a client certificate to show it."""
    options: Dict[str, Any] = {}
    if ca_cert:
        options.update(ca_certs=ca_cert, cert_reqs=ssl.CERT_REQUIRED)
    if cert:
        options.update(cert_file=cert, key_file=key)
    return options
