"""Which etcd failures are refusals (fix the settings) and which are silence (wait for etcd)."""

from __future__ import annotations

import ssl

import etcd
import urllib3

from supervisor.etcd.tls import is_tls_refusal


def test_a_failed_tls_handshake_is_a_refusal() -> None:
    assert is_tls_refusal(etcd.EtcdConnectionFailed("failed", cause=urllib3.exceptions.SSLError("bad certificate")))
    assert is_tls_refusal(ssl.SSLError(1, "sslv3 alert bad certificate"))


def test_timeouts_and_refused_connections_are_silence() -> None:
    timeout = urllib3.exceptions.ReadTimeoutError(None, "/v2/keys", "read timed out")
    assert not is_tls_refusal(etcd.EtcdConnectionFailed("failed", cause=timeout))
    assert not is_tls_refusal(ConnectionRefusedError(111, "Connection refused"))
