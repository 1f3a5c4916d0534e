"""Bounded waits on the warehouse, and what the load log says.

- A warehouse that accepts TCP and never answers fails the load within connect_timeout,
  with a transient error (a TimeoutError, not a data error: Airflow retries it).
- A load queued behind a stuck load of its partition gives up at lock_timeout, naming the
  table and partition; a statement that runs too long ends at statement_timeout.
- The warehouse is unchanged after each such failure.
- The log says per table the rows loaded and replaced and the partition in plain words,
  and never a password.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import sqlite3
import threading
import time
from datetime import date
from types import SimpleNamespace

import psycopg
import pyarrow as pa
import pytest

from category_pipeline import loader
from category_pipeline.loader import LoadError, load_partition
from category_pipeline.schema import CLEAN_ORDERS, WAREHOUSE_TABLES
from category_pipeline.storage import write_dataset
from category_pipeline.warehouse import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    Warehouse,
    WarehouseConfigError,
    WarehouseTimeout,
)

DAY = date(2026, 4, 1)
PARTITION = {"category": "home", "order_date": DAY.isoformat()}
PASSWORD = "s3cr3t-Pa55word"


def _stage(tmp_path, rows: int, name: str = "orders", price: float = 1.0) -> str:
    table = pa.Table.from_pylist(
        [
            {"category": "home", "order_date": DAY, "order_id": f"O{i:05d}", "ordered_at": None,
             "customer_id": f"C{i}", "product_id": f"P{i % 5}", "quantity": 1, "unit_price": price, "amount": price}
            for i in range(rows)
        ],
        CLEAN_ORDERS,
    )
    uri = str(tmp_path / f"{name}.parquet")
    write_dataset(uri, CLEAN_ORDERS, table.to_batches())
    return uri


def _contents(warehouse, table: str = "orders"):
    connection = warehouse.connect()
    try:
        return sorted(tuple(row) for row in connection.execute(f"SELECT * FROM {table}").fetchall())
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return None
    finally:
        connection.close()


def _everything(warehouse):
    return {table: _contents(warehouse, table) for table in WAREHOUSE_TABLES}


def _with_password(target: str) -> str:
    scheme, rest = target.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


# --- configuration -----------------------------------------------------------------------


def test_defaults():
    warehouse = Warehouse.from_connection("wh", "postgres", host="db", port=5432, login="u", password="p", schema="wh")
    assert (warehouse.connect_timeout, warehouse.lock_timeout, warehouse.statement_timeout) == (
        DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT) == (10, 300, 1800)


@pytest.mark.parametrize(
    "extra",
    [
        {"connect_timeout": 3, "lock_timeout": 60, "statement_timeout": 600},
        {"connect_timeout": "3", "lock_timeout": "1min", "statement_timeout": "10min"},
        '{"connect_timeout": 3, "lock_timeout": "60s", "statement_timeout": "600000ms"}',
    ],
    ids=["numbers", "strings with units", "JSON text"],
)
def test_timeouts_come_from_the_connection_extras(extra):
    connection = SimpleNamespace(conn_type="postgres", host="db", port=5432, login="u", password="p", schema="wh",
                                 extra=extra if isinstance(extra, str) else None,
                                 extra_dejson=extra if isinstance(extra, dict) else {})
    warehouse = Warehouse.from_airflow_connection("wh", connection)
    assert (warehouse.connect_timeout, warehouse.lock_timeout, warehouse.statement_timeout) == (3, 60, 600)
    assert warehouse.target == "postgresql://u:p@db:5432/wh"


def test_timeouts_in_a_uri_query_are_taken_out_of_the_target():
    warehouse = Warehouse.from_uri("postgresql://u:p@db/wh?sslmode=require&lock_timeout=2&connect_timeout=3")
    assert (warehouse.connect_timeout, warehouse.lock_timeout) == (3, 2)
    assert warehouse.target == "postgresql://u:p@db/wh?sslmode=require"


@pytest.mark.parametrize("value", ["soon", -1, "5 days", True, [5]])
def test_a_bad_timeout_is_refused_naming_it(value):
    with pytest.raises(WarehouseConfigError, match="lock_timeout"):
        Warehouse.from_connection("wh", "sqlite", host="/tmp/x.db", extra={"lock_timeout": value})


@pytest.mark.postgres
def test_postgres_sessions_get_the_lock_and_statement_timeouts(postgres_warehouse):
    warehouse = dataclasses.replace(postgres_warehouse, lock_timeout=7, statement_timeout=0.25)
    connection = warehouse.connect()
    try:
        assert connection.execute("SHOW lock_timeout").fetchone()[0] == "7s"
        assert connection.execute("SHOW statement_timeout").fetchone()[0] == "250ms"
        connection.rollback()  # still set after a rollback: session settings
        assert connection.execute("SHOW lock_timeout").fetchone()[0] == "7s"
        assert not connection.autocommit
    finally:
        connection.close()


# --- a warehouse that never answers --------------------------------------------------------


class SilentServer:
    """Accepts TCP connections on loopback and never says a word."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(client)

    def close(self) -> None:
        self.listener.close()
        for client in self.accepted:
            client.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize("configured_by", ["connection extras", "uri"])
def test_silent_warehouse_fails_the_load_within_connect_timeout(tmp_path, silent_server, caplog, configured_by):
    uri = _stage(tmp_path, 10)
    if configured_by == "uri":
        warehouse = Warehouse.from_uri(
            f"postgresql://loader:{PASSWORD}@127.0.0.1:{silent_server.port}/warehouse?connect_timeout=2")
    else:
        connection = SimpleNamespace(conn_type="postgres", host="127.0.0.1", port=silent_server.port, login="loader",
                                     password=PASSWORD, schema="warehouse", extra_dejson={"connect_timeout": 2})
        warehouse = Warehouse.from_airflow_connection("warehouse_default", connection)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(WarehouseTimeout) as failure:
        load_partition(warehouse, {"orders": uri}, PARTITION)
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 6, f"gave up after {elapsed:.1f} s, not about 2 s"
    assert silent_server.accepted, "the load never reached the server"
    message = str(failure.value)
    assert f"127.0.0.1:{silent_server.port}" in message and "connect_timeout=2 s" in message, message
    # Transient, so Airflow retries: a TimeoutError, never a data error.
    assert isinstance(failure.value, TimeoutError)
    assert not isinstance(failure.value, (LoadError, ValueError))
    assert PASSWORD not in message and PASSWORD not in caplog.text


# --- a load queued behind a stuck one -----------------------------------------------------


def _hold_partition_lock(blocker) -> None:
    """What a stuck load of the partition holds: its advisory lock."""
    values = loader._partition_values(WAREHOUSE_TABLES["orders"], PARTITION)
    key = loader.partition_lock_key(WAREHOUSE_TABLES["orders"], values)
    blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def _hold_partition_rows(blocker) -> None:
    """An uncommitted transaction (not a load) on the partition's rows."""
    blocker.execute("UPDATE orders SET amount = amount + 1 WHERE category = 'home' AND order_date = %s", [DAY])


@pytest.mark.postgres
@pytest.mark.parametrize("hold", [_hold_partition_lock, _hold_partition_rows], ids=["stuck load", "uncommitted rows"])
def test_load_behind_a_stuck_one_gives_up_at_lock_timeout(tmp_path, postgres_warehouse, hold):
    load_partition(postgres_warehouse, {"orders": _stage(tmp_path, 300, "old")}, PARTITION)
    before = _everything(postgres_warehouse)
    warehouse = dataclasses.replace(postgres_warehouse, lock_timeout=1)
    new = _stage(tmp_path, 100, "new", price=2.0)
    with psycopg.connect(postgres_warehouse.target) as blocker:
        hold(blocker)
        started = time.monotonic()
        with pytest.raises(WarehouseTimeout) as failure:
            load_partition(warehouse, {"orders": new}, PARTITION)
        elapsed = time.monotonic() - started
        blocker.rollback()
    assert 0.9 < elapsed < 10, f"gave up after {elapsed:.1f} s, not about 1 s"
    message = str(failure.value)
    assert "waiting 1 s (lock_timeout) for the lock of partition category=home, order_date=2026-04-01 " \
           "of table orders" in message, message
    assert isinstance(failure.value, TimeoutError) and not isinstance(failure.value, ValueError)
    assert _everything(postgres_warehouse) == before
    # Once the other transaction is gone, the retry goes through.
    assert load_partition(warehouse, {"orders": new}, PARTITION) == {"orders": {"loaded": 100, "replaced": 300}}


@pytest.mark.postgres
def test_statement_running_past_statement_timeout_ends_the_load(tmp_path, postgres_warehouse):
    load_partition(postgres_warehouse, {"orders": _stage(tmp_path, 300, "old")}, PARTITION)
    before = _everything(postgres_warehouse)
    # No lock_timeout: the blocked statement runs until statement_timeout ends it.
    warehouse = dataclasses.replace(postgres_warehouse, lock_timeout=0, statement_timeout=1)
    with psycopg.connect(postgres_warehouse.target) as blocker:
        _hold_partition_lock(blocker)
        with pytest.raises(WarehouseTimeout, match=r"orders: a statement loading partition category=home, "
                                                   r"order_date=2026-04-01 of table orders ran longer than 1 s"):
            load_partition(warehouse, {"orders": _stage(tmp_path, 100, "new")}, PARTITION)
        blocker.rollback()
    assert _everything(postgres_warehouse) == before


def test_sqlite_load_behind_a_writer_gives_up_at_lock_timeout(tmp_path, sqlite_warehouse):
    load_partition(sqlite_warehouse, {"orders": _stage(tmp_path, 300, "old")}, PARTITION)
    before = _everything(sqlite_warehouse)
    warehouse = dataclasses.replace(sqlite_warehouse, lock_timeout=0.5)
    writer = sqlite3.connect(sqlite_warehouse.target, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(WarehouseTimeout, match=r"waiting 0.5 s \(lock_timeout\) for the write lock"):
            load_partition(warehouse, {"orders": _stage(tmp_path, 100, "new")}, PARTITION)
        assert time.monotonic() - started < 10
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert _everything(sqlite_warehouse) == before


# --- the load log --------------------------------------------------------------------------


def test_load_log_says_rows_and_partition_in_plain_words(tmp_path, warehouse, caplog):
    caplog.set_level(logging.INFO, logger="category_pipeline.loader")
    load_partition(warehouse, {"orders": _stage(tmp_path, 300, "old")}, PARTITION)
    load_partition(warehouse, {"orders": _stage(tmp_path, 120, "new")}, {"category": "home", "order_date": DAY})
    lines = [record.getMessage() for record in caplog.records if record.name == "category_pipeline.loader"]
    assert lines == [
        "orders: 300 rows loaded, 0 replaced, partition category=home, order_date=2026-04-01",
        "orders: 120 rows loaded, 300 replaced, partition category=home, order_date=2026-04-01",
    ]


@pytest.mark.postgres
def test_load_log_holds_no_password(tmp_path, postgres_warehouse, caplog):
    # The throwaway server trusts loopback: the password is accepted and unused.
    warehouse = dataclasses.replace(postgres_warehouse, target=_with_password(postgres_warehouse.target))
    caplog.set_level(logging.DEBUG)
    load_partition(warehouse, {"orders": _stage(tmp_path, 50)}, PARTITION)
    assert "orders: 50 rows loaded" in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(warehouse) and PASSWORD not in warehouse.address
