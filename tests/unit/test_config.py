"""Configuration mistakes: each is a ConfigError of ONE line that names the file (or flag), the section
and key, and what is allowed; the command lines turn it into exit status 2 with that line on stderr."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest

from supervisor import cli
from supervisor import config as cfg

BASE = "[task]\nimage = horizon-busybox:latest\ncommand = sleep 1\n"

# (id, ini text, where the message must point, what it must say is allowed)
INI_MISTAKES: List[Tuple[str, str, str, str]] = [
    # the file's syntax
    ("no-section-header", "image = x\n[task]\ncommand = y\n", "line 1", "start the file with [task]"),
    ("duplicate-key", BASE + "image = other\n", "[task] image", "keep one"),
    ("duplicate-section", BASE + "[etcd]\nttl = 5\n[etcd]\nttl = 6\n", "[etcd]", "merge them"),
    ("key-without-value", BASE + "just words\n", "line 4", "key = value"),
    ("no-task-section", "[etcd]\nttl = 5\n", "no [task] section", "image and command"),
    ("unknown-section", BASE + "[etc]\n", "unknown section [etc]", "did you mean 'etcd'"),
    ("unknown-section-far", BASE + "[zzz]\n", "unknown section [zzz]", "valid: endpoint, etcd, metrics, task"),
    ("unknown-key", "[task]\nimgae = x\ncommand = y\n", "[task] unknown key 'imgae'", "did you mean 'image'"),
    ("key-case", "[task]\nImage = x\ncommand = y\n", "[task] unknown key 'Image'", "did you mean 'image'"),
    ("unknown-etcd-key", BASE + "[etcd]\nhost = a:1\n", "[etcd] unknown key 'host'", "did you mean 'hosts'"),
    ("missing-image", "[task]\ncommand = y\n", "[task] image", "required"),
    ("missing-command", "[task]\nimage = busybox\n", "[task] command", "required"),
    # wrong types and ranges
    ("port-abc", BASE + "[endpoint]\nport = abc\n", "[endpoint] port", "from 0 to 65535"),
    ("port-high", BASE + "[endpoint]\nport = 65536\n", "[endpoint] port", "from 0 to 65535"),
    ("interval-negative", BASE + "[metrics]\ninterval = -1\n", "[metrics] interval", "at least 0.05"),
    ("interval-nan", BASE + "[metrics]\ninterval = nan\n", "[metrics] interval", "at least 0.05"),
    ("interval-text", BASE + "[metrics]\ninterval = soon\n", "[metrics] interval", "at least 0.05"),
    ("ttl-1", BASE + "[etcd]\nttl = 1\n", "[etcd] ttl", "from 3 to 86400"),
    ("timeout-0", BASE + "[etcd]\ntimeout = 0\n", "[etcd] timeout", "at least 0.1"),
    ("boolean-maybe", BASE + "[etcd]\nrequired = maybe\n", "[etcd] required", "true or false"),
    ("memory-12x", BASE + "memory = 12x\n", "[task] memory", "k, m or g suffix"),
    ("memory-below-minimum", BASE + "memory = 1m\n", "[task] memory", "minimum of 6m"),
    ("stop-timeout", BASE + "stop_timeout = 1.5\n", "[task] stop_timeout", "from 0 to 3600"),
    ("restart-choice", BASE + "restart = sometimes\n", "[task] restart", "no, on-failure, always"),
    # names that end up in etcd keys and container names
    ("service-uppercase", BASE + "service = Web\n", "[task] service", "a-z, 0-9 and '-'"),
    ("service-underscore", BASE + "service = my_web\n", "[task] service", "a-z, 0-9 and '-'"),
    ("service-too-long", BASE + f"service = {'a' * 64}\n", "[task] service", "1-63"),
    ("service-leading-dash", BASE + "service = -web\n", "[task] service", "not starting or ending with '-'"),
    ("task-dotdot", BASE + "name = ../x\n", "[task] name", "starting with a letter or digit"),
    ("task-slash", BASE + "name = a/b\n", "[task] name", "'_', '.' and '-'"),
    ("task-dotdot-alone", BASE + "name = ..\n", "[task] name", "starting with a letter or digit"),
    ("tag-slash", BASE + "tags = ok, a/b\n", "[task] tags", "A-Z, a-z, 0-9"),
    ("namespace-relative", BASE + "[etcd]\nnamespace = horizon\n", "[etcd] namespace", "absolute etcd path"),
    ("namespace-dotdot", BASE + "[etcd]\nnamespace = /a/../b\n", "[etcd] namespace", "absolute etcd path"),
    ("namespace-root", BASE + "[etcd]\nnamespace = /\n", "[etcd] namespace", "absolute etcd path"),
    ("image-uppercase", "[task]\nimage = Ubuntu\ncommand = y\n", "[task] image", "lowercase name"),
    ("image-space", "[task]\nimage = ubuntu latest\ncommand = y\n", "[task] image", "[registry/]name[:tag]"),
    ("network-slash", BASE + "network = a/b\n", "[task] network", "host, none"),
    # the command, its environment, its signal
    ("command-quoting", "[task]\nimage = busybox\ncommand = sleep 'x\n", "[task] command", "check the quotes"),
    ("command-empty", "[task]\nimage = busybox\ncommand =\n", "[task] command", "must not be empty"),
    ("command-only-quotes", "[task]\nimage = busybox\ncommand = '' x\n", "[task] command", "must not be empty"),
    ("environment-no-equals", BASE + "environment = FOO\n", "[task] environment", "KEY=VALUE"),
    ("environment-bad-key", BASE + "environment = 1X=2\n", "[task] environment", "KEY=VALUE"),
    ("environment-quoting", BASE + "environment = A='b\n", "[task] environment", "check the quotes"),
    ("stop-signal-name", BASE + "stop_signal = SIGFOO\n", "[task] stop_signal", "such as SIGTERM"),
    ("stop-signal-number", BASE + "stop_signal = 999\n", "[task] stop_signal", "such as SIGTERM"),
    # etcd members
    ("hosts-no-port", BASE + "[etcd]\nhosts = nohost:\n", "[etcd] hosts", "port from 1 to 65535"),
    ("hosts-port-0", BASE + "[etcd]\nhosts = h:0\n", "[etcd] hosts", "port from 1 to 65535"),
    ("hosts-port-99999", BASE + "[etcd]\nhosts = h:99999\n", "[etcd] hosts", "port from 1 to 65535"),
    ("hosts-empty", BASE + "[etcd]\nhosts = ,\n", "[etcd] hosts", "at least one etcd member"),
    ("hosts-bad-host", BASE + "[etcd]\nhosts = a b:2379\n", "[etcd] hosts", "host name or IP address"),
    ("hosts-no-host", BASE + "[etcd]\nhosts = :2379\n", "[etcd] hosts", "host name or IP address"),
    # the endpoint's addresses
    ("endpoint-host", BASE + "[endpoint]\nhost = not a host\n", "[endpoint] host", "127.0.0.1"),
    ("advertise", BASE + "[endpoint]\nadvertise = http://x/\n", "[endpoint] advertise", "host name"),
    # credentials and certificates
    ("password-and-file", BASE + "[etcd]\nusername = root\npassword = a\npassword_file = {secret}\n",
     "[etcd] password", "not both"),
    ("username-alone", BASE + "[etcd]\nusername = root\n", "[etcd] username", "password_file"),
    ("password-alone", BASE + "[etcd]\npassword = a\n", "[etcd] username", "needs a username"),
    ("username-colon", BASE + "[etcd]\nusername = a:b\npassword = c\n", "[etcd] username", "other than ':'"),
    ("password-file-empty", BASE + "[etcd]\nusername = root\npassword_file = {empty}\n",
     "[etcd] password_file", "write the password"),
    ("password-file-missing", BASE + "[etcd]\nusername = root\npassword_file = {missing}\n",
     "[etcd] password_file", "No such file"),
    ("ca-cert-missing", BASE + "[etcd]\nprotocol = https\nca_cert = {missing}\n", "[etcd] ca_cert", "readable file"),
    ("ca-cert-directory", BASE + "[etcd]\nprotocol = https\nca_cert = {dir}\n", "[etcd] ca_cert", "readable file"),
    ("ca-cert-not-pem", BASE + "[etcd]\nprotocol = https\nca_cert = {secret}\n", "[etcd] ca_cert", "give the CA"),
    ("cert-without-key", BASE + "[etcd]\nprotocol = https\ncert = {secret}\n", "[etcd] key", "give key as well"),
    ("key-without-cert", BASE + "[etcd]\nprotocol = https\nkey = {secret}\n", "[etcd] cert", "give cert as well"),
    ("certs-over-http", BASE + "[etcd]\nca_cert = {secret}\n", "[etcd] protocol", "protocol = https"),
    ("protocol", BASE + "[etcd]\nprotocol = ftp\n", "[etcd] protocol", "http, https"),
]


@pytest.fixture
def files(tmp_path: Path) -> dict:
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    return {"secret": secret, "empty": empty, "missing": tmp_path / "missing.pem", "dir": tmp_path}


def load_text(tmp_path: Path, text: str, name: str = "task.ini") -> cfg.Config:
    path = tmp_path / name
    path.write_text(text)
    return cfg.load(str(path))


def assert_one_line(message: str, *needles: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


@pytest.mark.parametrize("text, where, allowed", [case[1:] for case in INI_MISTAKES], ids=[c[0] for c in INI_MISTAKES])
def test_an_ini_mistake_is_one_line_naming_file_key_and_what_is_allowed(tmp_path, files, text, where, allowed):
    path = tmp_path / "task.ini"
    path.write_text(text.format(**files))
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(str(path))
    assert str(caught.value).startswith(f"{path}: ")
    assert_one_line(str(caught.value), where, allowed)
    assert "hunter2" not in str(caught.value)


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "task.ini"
    path.write_bytes(b"[task]\nimage = \xff\xfe\ncommand = y\n")
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(str(path))
    assert_one_line(str(caught.value), str(path), "not UTF-8", "save it as UTF-8")


@pytest.mark.parametrize("make", ["missing", "directory"])  # (root reads a mode-000 file: not testable here)
def test_a_file_that_cannot_be_read(tmp_path, make):
    path = tmp_path / "task.ini"
    if make == "directory":
        path.mkdir()
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(str(path))
    assert_one_line(str(caught.value), str(path), "no such file" if make == "missing" else "cannot read it")


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> dict:
    """A self-signed certificate with its key, a key that does not match it, and its key encrypted."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    where = tmp_path_factory.mktemp("pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", where / "key.pem", "-out", where / "cert.pem",
                    "-days", "1", "-subj", "/CN=etcd"], check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-out", where / "other.pem"], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", where / "key.pem", "-aes256", "-passout", "pass:secret",
                    "-out", where / "locked.pem"], check=True, capture_output=True)
    return {name: str(where / f"{name}.pem") for name in ("cert", "key", "other", "locked")}


def test_tls_settings_that_fit_together_load(tmp_path, pem):
    config = load_text(tmp_path, BASE + f"[etcd]\nprotocol = https\nca_cert = {pem['cert']}\n"
                                        f"cert = {pem['cert']}\nkey = {pem['key']}\n")
    assert (config.etcd.protocol, config.etcd.ca_cert, config.etcd.key) == ("https", pem["cert"], pem["key"])


@pytest.mark.parametrize("key", ["other", "locked"], ids=["key-of-another-cert", "encrypted-key"])
def test_a_certificate_without_its_plain_key_is_a_mistake(tmp_path, pem, key):
    with pytest.raises(cfg.ConfigError) as caught:  # and an encrypted key never prompts for a passphrase
        load_text(tmp_path, BASE + f"[etcd]\nprotocol = https\ncert = {pem['cert']}\nkey = {pem[key]}\n")
    assert_one_line(str(caught.value), "[etcd] cert", "not a matching PEM certificate and unencrypted key")


def test_a_full_file_converts_every_value(tmp_path, files):
    config = load_text(tmp_path, (
        "# a comment\n[task]\nimage = registry.local:5000/team/web_app:1.2\n"
        "command = sh -c 'echo \"$HOME\"; sleep 1'\nservice = web\nname = web.1\ntags = a, b\n"
        "network = none\nenvironment =\n    A=1\n    B='two words'\nmemory = 64m\nstop_signal = int\n"
        "stop_timeout = 3\nremove = no\nrestart = on-failure\n"
        "[etcd]\nhosts = 10.0.0.1:2379, [::1]:2380, etcd.local\nnamespace = /x/y/\nttl = 9\nkeep_finished = 60\n"
        f"timeout = 0.5\nrequired = yes\nusername = root\npassword_file = {files['secret']}\n"
        "[metrics]\ninterval = 0.25\npublish_every = 2\n"
        "[endpoint]\nhost = 0.0.0.0\nport = 8080\nadvertise = node1.example\n"
    ))
    task, etcd = config.task, config.etcd
    assert task.command == ("sh", "-c", 'echo "$HOME"; sleep 1')  # an argv: the shell is the user's own
    assert (task.service, task.name, task.tags, task.network) == ("web", "web.1", ("a", "b"), "none")
    assert task.environment == {"A": "1", "B": "two words"}
    assert (task.memory, task.stop_signal, task.stop_timeout, task.remove) == (64 << 20, "SIGINT", 3, False)
    assert etcd.hosts == (("10.0.0.1", 2379), ("::1", 2380), ("etcd.local", 2379))
    assert (etcd.namespace, etcd.ttl, etcd.timeout, etcd.required) == ("/x/y", 9, 0.5, True)
    assert cfg.password(config.etcd) == "hunter2" and "hunter2" not in repr(config)
    assert (config.metrics.interval, config.metrics.publish_every) == (0.25, 2)
    assert (config.endpoint.port, config.endpoint.advertise) == (8080, "node1.example")
    assert config.task_prefix == "/x/y/services/web/web.1"


def test_a_password_given_inline_is_kept_out_of_the_repr(tmp_path):
    config = load_text(tmp_path, BASE + "[etcd]\nusername = root\npassword = s3cr3t-value\n")
    assert cfg.password(config.etcd) == "s3cr3t-value" and "s3cr3t-value" not in repr(config)


def test_defaults(tmp_path):
    config = load_text(tmp_path, BASE)
    defaults = {
        "service": "horizon-busybox", "tags": (), "network": "host", "environment": {}, "memory": None,
        "stop_signal": "SIGTERM", "stop_timeout": 10, "remove": True, "restart": "no",
    }
    assert {key: getattr(config.task, key) for key in defaults} == defaults
    assert config.task.command == ("sleep", "1")
    assert config.etcd.hosts == (("127.0.0.1", 2379),) and config.etcd.namespace == "/horizon"
    assert (config.etcd.ttl, config.etcd.timeout, config.etcd.required, config.etcd.protocol) == (15, 2.0, False, "http")
    assert (config.metrics.interval, config.metrics.publish_every) == (1.0, 5)
    assert (config.endpoint.host, config.endpoint.port, config.endpoint.advertise) == ("127.0.0.1", 0, "127.0.0.1")


@pytest.mark.parametrize(
    "image, service",
    [("ubuntu:10.04", "ubuntu"), ("registry.local:5000/team/web_app:1.2", "web-app"),
     ("library/redis@sha256:" + "a" * 64, "redis"), ("a__b", "a-b")],
)
def test_the_default_service_is_the_image_repository_name(image, service):
    assert cfg.default_service(image) == service
    assert cfg.service_name(service) == service


def test_the_default_task_name_is_stable_per_file_path(tmp_path):
    first = load_text(tmp_path, BASE).task.name
    assert first.startswith("task-") and len(first) == len("task-") + 12
    assert load_text(tmp_path, BASE).task.name == first  # restarted supervisor: same task, same container
    assert load_text(tmp_path, BASE, "other.ini").task.name != first
    (tmp_path / "link.ini").symlink_to(tmp_path / "task.ini")
    assert cfg.load(str(tmp_path / "link.ini")).task.name == first


def test_advertise_defaults_to_the_host_or_this_machines_name_for_a_wildcard(tmp_path):
    assert load_text(tmp_path, BASE + "[endpoint]\nhost = 127.0.0.2\n").endpoint.advertise == "127.0.0.2"
    assert load_text(tmp_path, BASE + "[endpoint]\nhost = 0.0.0.0\n").endpoint.advertise == socket.getfqdn()
    assert load_text(tmp_path, BASE + "[endpoint]\nhost = ::\n").endpoint.advertise == socket.getfqdn()


def test_every_key_is_documented_and_has_a_long_flag():
    reference = cfg.describe()
    for section, cls in cfg.SECTIONS.items():
        for spec in dataclasses.fields(cls):
            assert f"  {spec.name} " in reference and spec.metadata["doc"]
            assert cli.long_flag(section, spec.name).startswith("--")


# -- the command lines ---------------------------------------------------------------------------

LEGACY_MISTAKES = [
    (["--port", "abc"], "--port: 'abc' is not a whole number: use a whole number from 0 to 65535"),
    (["--interval", "-1"], "--interval: -1 is out of range"),
    (["--etcd", "nohost:"], "--etcd: 'nohost:' has no valid port"),
    (["--etcd", "h:0"], "--etcd: 'h:0' has no valid port"),
    (["--etcd", ""], "--etcd: no hosts"),
    (["--etcd-ttl", "1"], "--etcd-ttl: 1 is out of range"),
    (["--service", "Bad_Name"], "--service: 'Bad_Name' is not a valid service name"),
    (["--name", "../x"], "--name: '../x' is not a valid task name"),
    (["--etcd-namespace", "/a/../b"], "--etcd-namespace: '/a/../b' is not a namespace"),
    (["--memory", "12x"], "--memory: '12x' is not a size"),
    (["--stop-signal", "SIGNOPE"], "--stop-signal: 'SIGNOPE' is not a signal"),
    (["--environment", "NOVALUE"], "--environment: 'NOVALUE' is not KEY=VALUE"),
    (["--etcd-required", "maybe"], "--etcd-required: 'maybe' is not a boolean"),
    (["--etcd-password", "s3cr3t"], "--etcd-username: a password needs a username"),
    (["--etcd-protocol", "https", "--etcd-cert", "/etc/hostname"], "--etcd-key: cert and key go together"),
    (["--etcd-ca-cert", "/etc/hostname"], "--etcd-protocol: certificates need protocol = https"),
    (["--bogus"], "unrecognized arguments: --bogus (see --help)"),
    (["--servce", "web"], "unrecognized arguments: --servce; did you mean --service?"),
    (["--serv", "web"], "unrecognized arguments: --serv"),  # no abbreviations: a prefix is not a flag
    (["--etcd-passwrd=s3cr3t"], "unrecognized arguments: --etcd-passwrd; did you mean --etcd-password?"),
    (["--etcd-passwrd", "s3cr3t"], "unrecognized arguments: --etcd-passwrd; did you mean --etcd-password?"),
    (["--port"], "expected one argument"),
]


def run_cli(entry, argv: List[str], capsys) -> Tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        entry(argv)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize("flags, message", LEGACY_MISTAKES, ids=[" ".join(f) for f, _ in LEGACY_MISTAKES])
def test_a_flag_mistake_is_one_line_on_stderr_and_exit_2(capsys, flags, message):
    code, out, err = run_cli(cli.legacy_main, ["horizon-busybox:latest", "sleep 1", *flags], capsys)
    assert code == cli.EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and message in err, err
    assert "s3cr3t" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["Bad Image", "sleep 1"], "IMAGE: 'Bad Image' is not an image reference"),
        (["busybox", "sleep 'unbalanced"], "COMMAND: cannot split"),
        (["busybox", "  "], "COMMAND: must not be empty"),
        (["busybox"], "the following arguments are required: command"),
    ],
)
def test_legacy_positionals_are_named_in_capitals(capsys, argv, message):
    code, out, err = run_cli(cli.legacy_main, argv, capsys)
    assert code == cli.EXIT_USAGE and len(err.splitlines()) == 1 and message in err, err


def test_an_unknown_flag_of_the_ini_form_gets_a_suggestion(capsys):
    code, out, err = run_cli(cli.main, ["--chek", "task.ini"], capsys)
    assert code == cli.EXIT_USAGE and err.splitlines() == [
        "python -m supervisor: error: unrecognized arguments: --chek; did you mean --check? (see --help)"
    ]


def test_check_on_a_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "task.ini"
    path.write_text(BASE + "[endpoint]\nport = abc\n")
    code, out, err = run_cli(cli.main, ["--check", str(path)], capsys)
    assert code == cli.EXIT_USAGE and out == ""
    assert err == f"horizon: error: {path}: [endpoint] port: 'abc' is not a whole number: use a whole number from 0 to 65535\n"


def test_check_on_a_good_file_prints_what_would_run(tmp_path, capsys):
    path = tmp_path / "task.ini"
    path.write_text(BASE + "service = web\n")
    code, out, err = run_cli(cli.main, ["--check", str(path)], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"{path}: ok: service web, task task-") and "image horizon-busybox:latest" in out


def test_the_password_is_never_printed_by_check(tmp_path, capsys):
    path = tmp_path / "task.ini"
    path.write_text(BASE + "[etcd]\nusername = root\npassword = s3cr3t-value\n")
    code, out, err = run_cli(cli.main, ["--check", str(path)], capsys)
    assert code == 0 and "s3cr3t-value" not in out + err
