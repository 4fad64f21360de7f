"""The task's configuration, parsed and validated once, in the parent.

Every key is declared once: as a field of the section's dataclass, whose metadata holds its converter
and default. The ini reader, the command line and the documentation all come from those fields, so a
key cannot be valid in one place and unknown in another. A bad value raises ``ConfigError`` naming the
file, section and key, what was wrong and what is allowed; nothing is ever warned about and skipped.

``horizon`` (supervisor/fleet) reads the [etcd] section alone, and pays for every import before it lists
anything: what only a whole task file or a mistake needs (hashlib and uuid for the default task name,
frames and its msgpack for ``Config.key``, difflib for suggestions) is imported where it is used.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import re
import shlex
import signal
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple

from supervisor.etcd import layout

if TYPE_CHECKING:
    from supervisor.frames import TaskKey

Converter = Callable[[str], Any]

SERVICE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
TASK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NAMESPACE_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE_RE = re.compile(r"^(\d+)\s*([bkmg]?)i?b?$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$")
# Docker's reference grammar: [domain[:port]/]path[/path...][:tag][@digest], paths in lowercase.
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?"
IMAGE_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::\w[\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
MIN_MEMORY = 6 << 20  # the engine refuses less


class ConfigError(Exception):
    """A user mistake in the configuration: printed as one line, exit status 2."""


# -- converters: str -> value, raising ValueError with what is allowed -------------------------------


def integer(low: int, high: Optional[int] = None) -> Converter:
    allowed = f"use a whole number {f'from {low} to {high}' if high is not None else f'of at least {low}'}"

    def convert(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number: {allowed}") from None
        if number < low or (high is not None and number > high):
            raise ValueError(f"{number} is out of range: {allowed}")
        return number

    return convert


def number(low: float) -> Converter:
    allowed = f"use a number of at least {low}"

    def convert(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number: {allowed}") from None
        if not result >= low or result == float("inf"):
            raise ValueError(f"{value} is out of range: {allowed}")
        return result

    return convert


def boolean(value: str) -> bool:
    states = configparser.ConfigParser.BOOLEAN_STATES
    if value.lower() not in states:
        raise ValueError(f"{value!r} is not a boolean: use true or false")
    return states[value.lower()]


def size(value: str) -> int:
    match = SIZE_RE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size: use a number with an optional k, m or g suffix, e.g. 256m")
    result = int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    if result < MIN_MEMORY:
        raise ValueError(f"{value} is below the engine's minimum of 6m")
    return result


def image(value: str) -> str:
    if not IMAGE_RE.match(value):
        raise ValueError(f"{value!r} is not an image reference: use [registry/]name[:tag] with a lowercase name, e.g. ubuntu:22.04")
    return value


def command(value: str) -> Tuple[str, ...]:
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r} into arguments ({exc}): check the quotes") from None
    if not argv or not argv[0]:
        raise ValueError("must not be empty: give the command to run in the container")
    return tuple(argv)


def service_name(value: str) -> str:
    if not SERVICE_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid service name: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
        )
    return value


def task_name(value: str) -> str:
    if not TASK_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid task name: use 1-63 of A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit"
        )
    return value


def tags(value: str) -> Tuple[str, ...]:
    result = tuple(tag.strip() for tag in value.split(",") if tag.strip())
    for tag in result:
        if not NAMESPACE_SEGMENT_RE.match(tag):
            raise ValueError(f"tag {tag!r} has characters other than A-Z, a-z, 0-9, '_', '.' and '-'")
    return result


def network(value: str) -> str:
    if not NETWORK_RE.match(value):
        raise ValueError(f"{value!r} is not a network: use host, none or the name of a Docker network")
    return value


def environment(value: str) -> Dict[str, str]:
    try:
        items = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split the environment ({exc}): check the quotes") from None
    result: Dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not ENV_KEY_RE.match(key):
            raise ValueError(f"{item!r} is not KEY=VALUE: write one KEY=VALUE per line, quoted if it has spaces")
        result[key] = val
    return result


def stop_signal(value: str) -> str:
    name = value.upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name
        except ValueError:
            raise ValueError(f"{value} is not a signal number: use a name such as SIGTERM or SIGINT") from None
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise ValueError(f"{value!r} is not a signal: use a name such as SIGTERM or SIGINT")
    return name


def host_port(value: str, default_port: int = 2379) -> Tuple[str, int]:
    host, port = value, str(default_port)
    match = re.match(r"^\[([0-9a-fA-F:.]+)\](?::(\d+))?$", value)
    if match:
        host, port = match.group(1), match.group(2) or port
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not is_address(host):
        raise ValueError(f"{value!r} is not host:port: use a host name or IP address and a port, e.g. 10.0.0.5:2379")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} has no valid port: use host:port with a port from 1 to 65535")
    return host, int(port)


def hosts(value: str) -> Tuple[Tuple[str, int], ...]:
    members = [item.strip() for item in value.split(",") if item.strip()]
    if not members:
        raise ValueError("no hosts: give host:port of at least one etcd member, comma-separated")
    return tuple(host_port(item) for item in members)


def namespace(value: str) -> str:
    segments = value.strip("/").split("/")
    if not value.startswith("/") or not all(NAMESPACE_SEGMENT_RE.match(s) and s not in (".", "..") for s in segments):
        raise ValueError(f"{value!r} is not a namespace: use an absolute etcd path such as /horizon")
    return "/" + "/".join(segments)


def choice(*allowed: str) -> Converter:
    def convert(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not allowed: use one of {', '.join(allowed)}")
        return value

    return convert


def readable_file(value: str) -> str:
    try:
        with open(value, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read the file {value!r} ({exc.strerror}): give the path of a readable file") from None
    return value


def is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(HOSTNAME_RE.match(value))


def address(value: str) -> str:
    if not is_address(value):
        raise ValueError(f"{value!r} is not a host name or IP address: use e.g. 127.0.0.1, 0.0.0.0 or a host name")
    return value


def username(value: str) -> str:
    if ":" in value or not value.isprintable():
        raise ValueError(f"{value!r} is not a user name: use printable characters other than ':'")
    return value


def option(
    convert: Converter, default: Any = dataclasses.MISSING, doc: str = "", empty: Any = "", secret: bool = False
) -> Any:
    """A config key: its converter, its default (a raw string, converted like user input) and its doc.

    An optional key (default "") left empty takes ``empty`` instead of going through the converter.
    A ``secret`` is left out of the Config's repr, so no log line or traceback can show it.
    """
    required = default is dataclasses.MISSING
    meta = {"convert": convert, "default": None if required else default, "doc": doc, "empty": empty}
    return field(metadata=meta, repr=not secret)


# -- sections ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSection:
    image: str = option(image, doc="Docker image to run")
    command: Tuple[str, ...] = option(command, doc="the command, split like a shell would; no shell is added")
    service: str = option(service_name, "", doc="service directory in etcd (default: the image's repository name)")
    name: str = option(task_name, "", doc="task id (default: task-<12 hex>, stable for one config file)")
    tags: Tuple[str, ...] = option(tags, "", doc="comma-separated labels for finding tasks later", empty=())
    network: str = option(network, "host", doc="host, none or a Docker network")
    environment: Dict[str, str] = option(environment, "", doc="KEY=VALUE items, shell-quoted", empty={})
    memory: Optional[int] = option(size, "", doc="memory limit such as 256m (default: none)", empty=None)
    stop_signal: str = option(stop_signal, "SIGTERM", doc="signal that asks the task to stop")
    stop_timeout: int = option(integer(0, 3600), "10", doc="seconds between stop_signal and SIGKILL")
    remove: bool = option(boolean, "true", doc="remove the container once its end is recorded")
    restart: str = option(choice("no", "on-failure", "always"), "no", doc="restart the task when it ends: no, on-failure, always")
    max_restarts: int = option(integer(0, 1000000), "5", doc="restarts in a row before giving up (state failed)")
    restart_delay: float = option(number(0.0), "1", doc="seconds before the first restart; doubles each time, up to 60")
    restart_reset: float = option(number(0.0), "60", doc="seconds up after which the restart count starts again")


@dataclass(frozen=True)
class EtcdSection:
    api: str = option(choice("v3", "v2"), "v3", doc="etcd API: v3 (etcd's default) or v2 (etcd < 3.4, or --enable-v2)")
    hosts: Tuple[Tuple[str, int], ...] = option(hosts, "127.0.0.1:2379", doc="comma-separated host:port of members")
    namespace: str = option(namespace, "/horizon", doc="root of horizon's keys")
    ttl: int = option(integer(3, 86400), "15", doc="seconds a live task's keys outlast a dead supervisor")
    keep_finished: int = option(integer(1, 31 * 86400), "600", doc="seconds a finished task's record is kept")
    timeout: float = option(number(0.1), "2", doc="seconds one etcd request may take")
    required: bool = option(boolean, "false", doc="fail at start when etcd does not answer")
    protocol: str = option(choice("http", "https"), "http", doc="http or https")
    ca_cert: Optional[str] = option(readable_file, "", doc="CA bundle to verify etcd's certificate", empty=None)
    cert: Optional[str] = option(readable_file, "", doc="client certificate (PEM)", empty=None)
    key: Optional[str] = option(readable_file, "", doc="client certificate's key (PEM)", empty=None)
    username: str = option(username, "", doc="etcd user")
    password: str = option(str, "", doc="etcd password (prefer password_file)", secret=True)
    password_file: Optional[str] = option(readable_file, "", doc="file holding the etcd password", empty=None)


@dataclass(frozen=True)
class MetricsSection:
    interval: float = option(number(0.05), "1.0", doc="seconds between samples")
    publish_every: int = option(integer(1, 3600), "5", doc="write metrics to etcd every N samples")
    history: int = option(integer(0, 100000), "600", doc="samples kept for /metrics/history and the page (0: none)")


@dataclass(frozen=True)
class EndpointSection:
    host: str = option(address, "127.0.0.1", doc="address the endpoint binds")
    port: int = option(integer(0, 65535), "0", doc="port (0: any free port)")
    advertise: str = option(address, "", doc="address published in etcd (default: host)")


SECTIONS = {"task": TaskSection, "etcd": EtcdSection, "metrics": MetricsSection, "endpoint": EndpointSection}


@dataclass(frozen=True)
class Config:
    task: TaskSection
    etcd: EtcdSection
    metrics: MetricsSection
    endpoint: EndpointSection
    source: str

    @property
    def key(self) -> TaskKey:
        from supervisor.frames import TaskKey  # see the module doc

        return TaskKey(self.task.service, self.task.name)

    @property
    def task_prefix(self) -> str:
        """The task's record in etcd."""
        return layout.task_prefix(self.etcd.namespace, self.task.service, self.task.name)


    def to_document(self) -> Dict[str, Any]:
        """The validated config as plain data, for a ``task`` frame (a host tree hands tasks to running
        workers): every value is already converted, so ``from_document`` checks nothing again."""
        return {"source": self.source, **{section: dataclasses.asdict(getattr(self, section)) for section in SECTIONS}}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> "Config":
        """The Config ``to_document`` gave (msgpack turned its tuples into lists: they are tuples again)."""
        def tuples(value: Any) -> Any:
            return tuple(tuples(item) for item in value) if isinstance(value, list) else value

        sections = {name: section(**{key: tuples(value) for key, value in document[name].items()})
                    for name, section in SECTIONS.items()}
        return cls(source=str(document["source"]), **sections)


# -- building ----------------------------------------------------------------------------------------

Where = Callable[[str, str], str]


def _nearest(word: str, candidates: Any) -> str:
    import difflib  # see the module doc

    match = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(sorted(candidates))}"


def default_service(image: str) -> str:
    """The image's repository name, made a valid service name: 'registry:5000/team/web:1' -> 'web'."""
    repository = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0].lower()
    cleaned = re.sub(r"[^a-z0-9-]+", "-", repository).strip("-")[:63].strip("-")
    return cleaned or "task"


def convert_section(section: str, given: Mapping[str, str], where: Where,
                    sections: Mapping[str, type] = SECTIONS) -> Dict[str, Any]:
    """One section's raw strings converted by its fields' converters (defaults for what is not given)."""
    kwargs: Dict[str, Any] = {}
    for spec in dataclasses.fields(sections[section]):
        raw = given.get(spec.name, spec.metadata["default"])
        if raw is None:
            raise ConfigError(f"{where(section, spec.name)}: missing; it is required ({spec.metadata['doc']})")
        raw = raw.strip()
        if not raw and spec.metadata["default"] == "":
            kwargs[spec.name] = spec.metadata["empty"]
            continue
        try:
            kwargs[spec.name] = spec.metadata["convert"](raw)
        except ValueError as exc:
            raise ConfigError(f"{where(section, spec.name)}: {exc}") from None
    return kwargs


def build_etcd(given: Mapping[str, str], where: Where) -> EtcdSection:
    """The [etcd] section alone, checked like a task file's: what a client of the fleet needs."""
    etcd_ = convert_section("etcd", given, where)
    check_etcd_security(etcd_, where)
    return EtcdSection(**etcd_)


def build(values: Mapping[str, Mapping[str, str]], where: Where, source: str, task_seed: Optional[str]) -> Config:
    """Convert raw strings (from an ini file or the command line) into a Config.

    ``where(section, key)`` names a key for error messages. ``task_seed`` makes the default task name
    stable (the config file's path, so a restarted supervisor finds its container again); None draws one.
    """
    sections = {section: convert_section(section, values.get(section, {}), where) for section in SECTIONS}
    task, etcd_, endpoint = sections["task"], sections["etcd"], sections["endpoint"]
    if not task["service"]:
        task["service"] = default_service(task["image"])
    if not task["name"]:
        import hashlib  # these two: see the module doc
        import uuid

        digest = hashlib.sha256(task_seed.encode()).hexdigest() if task_seed else uuid.uuid4().hex
        task["name"] = f"task-{digest[:12]}"
    check_etcd_security(etcd_, where)
    return Config(
        task=TaskSection(**task),
        etcd=EtcdSection(**etcd_),
        metrics=MetricsSection(**sections["metrics"]),
        endpoint=endpoint_section(endpoint),
        source=source,
    )


def endpoint_section(endpoint: Dict[str, Any]) -> EndpointSection:
    """The [endpoint] section from converted values: what is advertised defaults to the bound address,
    or this machine's name when that is a wildcard."""
    if not endpoint["advertise"]:
        endpoint["advertise"] = socket.getfqdn() if is_wildcard(endpoint["host"]) else endpoint["host"]
    return EndpointSection(**endpoint)


def check_etcd_security(etcd_: Dict[str, Any], where: Where) -> None:
    """Credentials and certificates that cannot work are mistakes now, not etcd errors later."""
    if etcd_["password"] and etcd_["password_file"]:
        raise ConfigError(f"{where('etcd', 'password')}: give password or password_file, not both")
    if etcd_["username"] and not (etcd_["password"] or etcd_["password_file"]):
        raise ConfigError(f"{where('etcd', 'username')}: needs password_file (or password) as well")
    if (etcd_["password"] or etcd_["password_file"]) and not etcd_["username"]:
        raise ConfigError(f"{where('etcd', 'username')}: a password needs a username as well (e.g. root)")
    if etcd_["password_file"]:
        try:
            empty = not read_password(etcd_["password_file"])
        except (OSError, UnicodeDecodeError):
            empty = True
        if empty:
            raise ConfigError(f"{where('etcd', 'password_file')}: holds no UTF-8 password: write the password in it")
    if (etcd_["cert"] or etcd_["ca_cert"]) and etcd_["protocol"] != "https":
        raise ConfigError(f"{where('etcd', 'protocol')}: certificates need protocol = https")
    if bool(etcd_["cert"]) != bool(etcd_["key"]):
        missing = "key" if etcd_["cert"] else "cert"
        raise ConfigError(f"{where('etcd', missing)}: cert and key go together: give {missing} as well")
    if not (etcd_["ca_cert"] or etcd_["cert"]):
        return  # nothing to load (the first context of a process takes ~3 ms to make)
    # A bare context: only the given files are checked (loading the system's CAs took ~18 ms per config).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if etcd_["ca_cert"]:
        try:
            context.load_verify_locations(etcd_["ca_cert"])
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"{where('etcd', 'ca_cert')}: not a PEM certificate: give the CA that signed etcd's certificate") from None
    if etcd_["cert"]:
        try:  # an empty passphrase: an encrypted key fails here instead of prompting on a terminal
            context.load_cert_chain(etcd_["cert"], etcd_["key"], password="")
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"{where('etcd', 'cert')}: cert and key are not a matching PEM certificate and unencrypted key"
            ) from None


def password(etcd: EtcdSection) -> str:
    """The etcd password: the file's (read when asked: a rotated file is read anew), else the key's."""
    return read_password(etcd.password_file) if etcd.password_file else etcd.password


def read_password(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


class CaseSensitiveParser(configparser.ConfigParser):
    """Keys are case-sensitive: 'Image' is a mistake, not an alias."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def read_ini(path: str, sections: Mapping[str, type] = SECTIONS) -> Dict[str, Dict[str, str]]:
    """An ini file's sections and keys, every one of them known; raw strings, not yet converted."""
    parser = CaseSensitiveParser(interpolation=None, default_section="\0none")
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; give the path of a task .ini file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror}); give the path of a readable task .ini file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {ini_mistake(exc)}") from None

    values: Dict[str, Dict[str, str]] = {}
    for section in parser.sections():
        if section not in sections:
            raise ConfigError(f"{path}: unknown section [{section}]{_nearest(section, sections)}")
        known = {spec.name for spec in dataclasses.fields(sections[section])}
        for key, value in parser.items(section):
            if key not in known:
                raise ConfigError(f"{path}: [{section}] unknown key {key!r}{_nearest(key, known)}")
        values[section] = dict(parser.items(section))
    return values


def load(path: str) -> Config:
    """Read and validate a task file."""
    values = read_ini(path)
    if "task" not in values:
        raise ConfigError(f"{path}: no [task] section; it needs at least image and command")
    return build(values, lambda s, k: f"{path}: [{s}] {k}", path, os.path.realpath(path))


def load_etcd(path: str) -> EtcdSection:
    """The [etcd] section of a task file (the other sections are checked for unknown keys only)."""
    return build_etcd(read_ini(path).get("etcd", {}), lambda s, k: f"{path}: [{s}] {k}")


def ini_mistake(exc: configparser.Error) -> str:
    """What is wrong with the file's ini syntax, on one line, with the fix."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: {exc.line.strip()!r} comes before any [section] header; start the file with [task]"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"[{exc.section}] {exc.option}: given twice (line {exc.lineno}); keep one"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"[{exc.section}]: the section appears twice (line {exc.lineno}); merge them into one"
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        return f"line {exc.errors[0][0]} is neither 'key = value' nor a [section] header"
    return "not a valid ini file: " + str(exc).splitlines()[0]


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def describe(sections: Mapping[str, type] = SECTIONS) -> str:
    """Every section and key with its default and meaning: the reference printed by --help."""
    lines = []
    for section, cls in sections.items():
        lines.append(f"[{section}]")
        for spec in dataclasses.fields(cls):
            default = spec.metadata["default"]
            shown = "required" if default is None else f"default {default!r}" if default else "optional"
            lines.append(f"  {spec.name:14} {spec.metadata['doc']} ({shown})")
    return "\n".join(lines)
