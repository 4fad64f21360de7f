"""TLS for both APIs' clients: the v3 gateway's SSL context, python-etcd's urllib3 pool settings (v2), and
telling a refused handshake from silence. Nothing here imports urllib3: the v3 client does without it."""

from __future__ import annotations

import ssl
import sys
from typing import Any, Dict, Optional


def is_tls_refusal(exc: BaseException) -> bool:
    """A TLS handshake that failed (bad certificate, unknown CA): ssl's error as http.client raises it
    (v3), or urllib3's SSLError that python-etcd wraps (v2)."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, ssl.SSLError):
        return True
    urllib3 = sys.modules.get("urllib3")  # only v2 loads it; without it, no error can be one of its
    return urllib3 is not None and isinstance(cause, urllib3.exceptions.SSLError)


def tls_context(ca_cert: Optional[str], cert: Optional[str], key: Optional[str]) -> ssl.SSLContext:
    """The v3 gateway's https: etcd's certificate and name verified against ``ca_cert`` (else the
    system's CAs), and the client certificate shown when there is one; as tls_pool_options asks of urllib3."""
    context = ssl.create_default_context(cafile=ca_cert)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def tls_pool_options(ca_cert: Optional[str], cert: Optional[str], key: Optional[str]) -> Dict[str, Any]:
    """urllib3 pool arguments for a CA to verify etcd with and a client certificate to show it."""
    options: Dict[str, Any] = {}
    if ca_cert:
        options.update(ca_certs=ca_cert, cert_reqs=ssl.CERT_REQUIRED)
    if cert:
        options.update(cert_file=cert, key_file=key)
    return options
