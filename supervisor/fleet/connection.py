"""Where etcd is and how to talk to it, for every ``horizon`` command: one ``EtcdSection``, built and
checked by supervisor/config.py exactly as a task file's ``[etcd]`` section is (the same converters and
checks: nothing is listed twice), from these sources, each over the one before:

1. the defaults of ``[etcd]`` (127.0.0.1:2379, v3, /horizon, 2 s);
2. the environment: ``HORIZON_ETCD`` (hosts) and ``HORIZON_ETCD_PASSWORD``;
3. ``--config FILE``: the ``[etcd]`` section of a task file;
4. the flags.

A password given by a later source replaces a ``password`` or ``password_file`` of an earlier one.
A mistake names where the value came from (the flag, the file and key, or the variable).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Dict, Mapping, Optional, Tuple

from supervisor import config as cfg
from supervisor.config import EtcdSection
from supervisor.etcd.store import Backend, connect

ENV_HOSTS = "HORIZON_ETCD"
ENV_PASSWORD = "HORIZON_ETCD_PASSWORD"
SECRETS = ("password", "password_file")

# [etcd] key -> the flag that sets it (the keys a client of the fleet has no flag for come from --config)
FLAGS = {
    "hosts": "--etcd", "api": "--api", "namespace": "--namespace", "ca_cert": "--ca-cert", "cert": "--cert",
    "key": "--key", "username": "--username", "password_file": "--password-file", "timeout": "--timeout",
}


def add_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The etcd options, on the main parser (``defaults``: None when not given) and again on each
    command's parser (no default at all, so that a flag given after the command wins and one not given
    there leaves the main parser's)."""
    default = None if defaults else argparse.SUPPRESS
    group = parser.add_argument_group("etcd (also HORIZON_ETCD, HORIZON_ETCD_PASSWORD)")
    add = group.add_argument
    add("--etcd", metavar="HOSTS", default=default, help="comma-separated host:port of etcd members "
        "(default: $HORIZON_ETCD, else 127.0.0.1:2379)")
    add("--api", metavar="v2|v3", default=default, help="etcd API: v3 (default) or v2; the supervisors' [etcd] api")
    add("--namespace", metavar="PATH", default=default, help="root of horizon's keys (default /horizon)")
    add("--config", metavar="FILE", default=default, help="read these settings from the [etcd] section of a task file")
    add("--ca-cert", metavar="FILE", default=default, help="CA to verify etcd's certificate with (https)")
    add("--cert", metavar="FILE", default=default, help="client certificate (PEM; https)")
    add("--key", metavar="FILE", default=default, help="the client certificate's unencrypted key (PEM)")
    add("--username", metavar="USER", default=default, help="etcd user")
    add("--password-file", metavar="FILE", default=default,
        help="file holding the user's password (or set $HORIZON_ETCD_PASSWORD; never a flag: ps shows flags)")
    add("--timeout", metavar="SECONDS", default=default, help="bound of each etcd request (default 2, or the "
        "file's [etcd] timeout); stop, pause and resume: how long to wait for the effect (default 30)")


def layers(args: argparse.Namespace, environ: Mapping[str, str], request_timeout: bool
           ) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The raw [etcd] values from every source, later ones over earlier ones, and where each came from."""
    given: Dict[str, str] = {}
    origin: Dict[str, str] = {}

    def layer(values: Mapping[str, str], where: Mapping[str, str]) -> None:
        if any(values.get(secret) for secret in SECRETS):
            for secret in SECRETS:
                given.pop(secret, None)
        for key, value in values.items():
            given[key] = value
            origin[key] = where[key]

    if environ.get(ENV_HOSTS):
        layer({"hosts": environ[ENV_HOSTS]}, {"hosts": ENV_HOSTS})
    if environ.get(ENV_PASSWORD):
        layer({"password": environ[ENV_PASSWORD]}, {"password": ENV_PASSWORD})
    if getattr(args, "config", None):
        path = args.config
        section = cfg.read_ini(path).get("etcd", {})
        layer(section, {key: f"{path}: [etcd] {key}" for key in section})
    flags = {key: getattr(args, flag[2:].replace("-", "_"), None) for key, flag in FLAGS.items()}
    if not request_timeout:
        flags.pop("timeout")
    if flags.get("ca_cert") or flags.get("cert"):
        flags["protocol"] = "https"
    values = {key: value for key, value in flags.items() if value is not None}
    layer(values, {key: FLAGS.get(key, "--ca-cert/--cert") for key in values})
    return given, origin


def etcd_section(args: argparse.Namespace, environ: Mapping[str, str] = os.environ,
                 request_timeout: bool = True) -> EtcdSection:
    """The command's etcd settings (ConfigError for a mistake, naming its source). ``request_timeout``:
    --timeout bounds each etcd request (for stop, pause and resume it is the wait for the effect)."""
    given, origin = layers(args, environ, request_timeout)

    def where(section: str, key: str) -> str:
        return origin.get(key) or FLAGS.get(key) or f"[{section}] {key}"

    return cfg.build_etcd(given, where)


def password(etcd: EtcdSection) -> str:
    return cfg.read_password(etcd.password_file) if etcd.password_file else etcd.password


def open_backend(etcd: EtcdSection) -> Backend:
    return connect(etcd, password(etcd))


def within(etcd: EtcdSection, seconds: Optional[float]) -> EtcdSection:
    """The settings with each request bounded by ``seconds`` at most."""
    if seconds is None or seconds >= etcd.timeout:
        return etcd
    return dataclasses.replace(etcd, timeout=max(0.1, seconds))
