"""The private PostgreSQL the tests start: reachable, isolated per test, and survives a kill -9."""

from __future__ import annotations

import psycopg
import pytest

from gateway.tools.devservices import Postgres

pytestmark = pytest.mark.integration


def test_each_test_gets_its_own_empty_database(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE t (x int)")


def test_killed_cluster_restarts_with_its_committed_data(tmp_path_factory: pytest.TempPathFactory
                                                         ) -> None:
    server = Postgres(tmp_path_factory.mktemp("pg-kill"))
    server.start()
    try:
        dsn = server.create_database("durable")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
        server.kill()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
        server.start()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        server.remove()
