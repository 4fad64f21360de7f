"""Shared fixtures. Integration tests use the real Docker engine and real etcds: the ``services``
fixture starts them (idempotently) through scripts/services.sh, like the README's commands do. A test
that takes ``etcd_api`` (``supervised`` does) runs once per etcd API that ``--etcd-api`` chooses. The
helpers behind the fixtures are in tests/support, which the benchmarks use too."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from tests.support.services import services_up
from tests.support.supervisor import Supervisor


APIS = ("v2", "v3")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--etcd-api", choices=[*APIS, "both"], default="both",
                     help="the etcd API(s) that tests taking etcd_api (supervised ones) run on (default: both)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test taking etcd_api runs on each chosen API, unless it names its own with
    ``@pytest.mark.parametrize("etcd_api", [...], indirect=True)`` (a test of one API's behaviour)."""
    named = any(mark.args and mark.args[0] == "etcd_api" for mark in metafunc.definition.iter_markers("parametrize"))
    if "etcd_api" in metafunc.fixturenames and not named:
        chosen = metafunc.config.getoption("etcd_api")
        apis = list(APIS) if chosen == "both" else [chosen]
        metafunc.parametrize("etcd_api", apis, ids=apis, indirect=True)


@pytest.fixture
def etcd_api(request: pytest.FixtureRequest) -> str:
    """The etcd API the test runs on: "v2" (the shared etcd 3.4, --enable-v2) or "v3" (the shared etcd 3.5)."""
    api: str = request.param
    return api


@pytest.fixture(scope="session")
def services() -> None:
    services_up()


@pytest.fixture
def supervised(services: None, tmp_path: Path, request: pytest.FixtureRequest, etcd_api: str
               ) -> Iterator[Callable[..., Supervisor]]:
    """Factory of Supervisor runs on ``etcd_api``, in the test namespace, each in a new service unless one
    is named; every run's process group, containers and keys are removed afterwards, and its output shown
    on failure."""
    runs: List[Supervisor] = []

    def make(service: Optional[str] = None) -> Supervisor:
        service = service or f"t{uuid.uuid4().hex[:10]}"
        run = Supervisor(service, tmp_path / f"{service}-{uuid.uuid4().hex[:6]}.log", api=etcd_api)
        runs.append(run)
        return run

    yield make
    for run in runs:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- supervisor output ({run.service}) ---\n{run.output()}")
        run.cleanup()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
