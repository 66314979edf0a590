"""Shared fixtures: real mosquitto and influxd processes, and the sample registry.

Services are session-scoped and isolated per test by a unique topic root, client id and
database; tests that restart or kill a service start their own instance. Fixtures only: the
helpers tests call live in tests/support/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.tools.devservices import Influxd, Mosquitto, Postgres
from sensors.registry import Registry, load_registry
from tests.support.alarmstores import StoreTarget, target_for
from tests.support.ids import unique_db_name
from tests.support.paths import SAMPLE_REGISTRY


@pytest.fixture(autouse=True)
def _no_parkwatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's PARKWATCH_* variables must not leak into test settings."""
    for key in list(os.environ):
        if key.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.remove()


@pytest.fixture
def pg_dsn(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL, for one test."""
    return postgres.create_database(unique_db_name(request.node.name))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def alarm_backend(request: pytest.FixtureRequest) -> str:
    """Each alarm-store test runs on both backends (PostgreSQL: the session's cluster)."""
    return str(request.param)


@pytest.fixture
def alarm_target(alarm_backend: str, tmp_path: Path, request: pytest.FixtureRequest
                 ) -> StoreTarget:
    """The test's alarm database on ``alarm_backend`` (PostgreSQL: a fresh database)."""
    dsn = request.getfixturevalue("pg_dsn") if alarm_backend == "postgres" else None
    return target_for(alarm_backend, tmp_path, dsn)


@pytest.fixture(scope="session")
def sample_registry() -> Registry:
    return load_registry(SAMPLE_REGISTRY)
