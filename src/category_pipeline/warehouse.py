"""The warehouse: which database, how to reach it, and the DDL of its tables.

PostgreSQL is the warehouse of a deployed platform; SQLite is the laptop default. The
target is built from the fields of an Airflow Connection but imports nothing of Airflow.

Every wait on the warehouse is bounded (see ``Warehouse``): a warehouse that does not
answer, a lock that is never released or a statement that never ends fails the task with
``WarehouseTimeout`` (a ``TimeoutError``: transient, so Airflow's retries apply) instead of
hanging it.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pyarrow as pa

from category_pipeline.schema import WarehouseTable

POSTGRES_TYPES = {
    pa.string(): "text",
    pa.date32(): "date",
    pa.timestamp("us", tz="UTC"): "timestamptz",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.float64(): "double precision",
}
SQLITE_TYPES = {
    pa.string(): "TEXT",
    pa.date32(): "TEXT",  # ISO dates and timestamps sort and compare correctly as text
    pa.timestamp("us", tz="UTC"): "TEXT",
    pa.int32(): "INTEGER",
    pa.int64(): "INTEGER",
    pa.float64(): "REAL",
}


class WarehouseConfigError(ValueError):
    """The warehouse connection names an unsupported database or lacks a field."""


class WarehouseTimeout(TimeoutError):
    """A bounded wait on the warehouse ran out: no answer to connect, a lock not granted, a
    statement not finished. Transient (not a data error): a retry may well succeed."""


# Defaults, in seconds (0 = no limit). Overridden by the Airflow Connection's extras.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_LOCK_TIMEOUT = 300.0
DEFAULT_STATEMENT_TIMEOUT = 1800.0
TIMEOUT_SETTINGS = ("connect_timeout", "lock_timeout", "statement_timeout")


@dataclass(frozen=True)
class Warehouse:
    """Where the warehouse is, and how long any wait on it may last.

    Timeouts, in seconds (0 = no limit); set them in the Airflow Connection's extras, e.g.
    ``{"connect_timeout": 10, "lock_timeout": 300, "statement_timeout": 1800}`` (numbers of
    seconds, or strings with a unit: ``"500ms"``, ``"30s"``, ``"5min"``, ``"1h"``):

    - ``connect_timeout`` (default 10 s): how long PostgreSQL may take to accept a
      connection. A healthy server answers in milliseconds; 10 s leaves room for a slow
      network or a busy server, while a dead or hung host fails the task in seconds (without
      it, a server that accepts TCP and never answers hangs the task for good) so Airflow's
      retry takes over. libpq counts whole seconds, at least 2, per address tried.
    - ``lock_timeout`` (default 5 min): how long a load may wait for a lock, above all for
      another load of the same partition to finish (loads of one partition queue up) and for
      the table-creation lock of a first load. A partition load takes seconds to a minute or
      two, so 5 min covers a queue of several; a longer wait means a stuck session holds
      the lock, and failing says so. On SQLite, the busy timeout (the wait for the
      database's single write lock).
    - ``statement_timeout`` (default 30 min): how long one statement may run; the longest is
      the bulk COPY of one table's partition (about a minute for millions of rows), so 30 min
      is far above any sane load yet ends a runaway or wedged one. PostgreSQL only.
    """

    dialect: Literal["postgres", "sqlite"]
    # libpq URI for PostgreSQL, a file path for SQLite.
    target: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT

    def __repr__(self) -> str:  # never print a password into a task log
        return f"Warehouse({self.dialect}, {_redact(self.target)})"

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        conn_type: str | None,
        host: str | None = None,
        port: int | None = None,
        login: str | None = None,
        password: str | None = None,
        schema: str | None = None,
        extra: Mapping | str | None = None,
    ) -> Warehouse:
        """``extra``: the Connection's extras (a dict or its JSON); read are the timeouts
        ``connect_timeout``, ``lock_timeout``, ``statement_timeout`` (see the class)."""
        kind = (conn_type or "").lower()
        timeouts = _timeouts(conn_id, extra)
        if kind in ("postgres", "postgresql"):
            if not host:
                raise WarehouseConfigError(f"connection {conn_id!r}: PostgreSQL needs a host")
            credentials = quote(login or "", safe="") + (f":{quote(password, safe='')}" if password else "")
            netloc = (f"{credentials}@" if credentials else "") + host + (f":{port}" if port else "")
            return cls("postgres", f"postgresql://{netloc}/{quote(schema or '', safe='')}", **timeouts)
        if kind == "sqlite":
            path = host or schema
            if not path:
                raise WarehouseConfigError(f"connection {conn_id!r}: SQLite needs the database path as host")
            return cls("sqlite", path, **timeouts)
        raise WarehouseConfigError(
            f"connection {conn_id!r} has type {conn_type!r}; the warehouse must be 'postgres' or 'sqlite'"
        )

    @classmethod
    def from_airflow_connection(cls, conn_id: str, connection) -> Warehouse:
        """From an Airflow Connection object (any object with its attributes)."""
        return cls.from_connection(
            conn_id,
            connection.conn_type,
            host=connection.host,
            port=connection.port,
            login=connection.login,
            password=connection.password,
            schema=connection.schema,
            extra=_extras_of(connection),
        )

    @classmethod
    def from_uri(cls, uri: str) -> Warehouse:
        """postgresql://user:pw@host:port/db or sqlite:////absolute/path.db, optionally with
        the timeouts as query parameters (``?lock_timeout=60&statement_timeout=10min``)."""
        base, _, query_string = uri.partition("?")
        query = parse_qsl(query_string, keep_blank_values=True)
        timeouts = _timeouts(_redact(uri), {k: v for k, v in query if k in TIMEOUT_SETTINGS})
        if any(k in TIMEOUT_SETTINGS for k, _ in query):
            rest = [(k, v) for k, v in query if k not in TIMEOUT_SETTINGS]
            uri = base + (f"?{urlencode(rest)}" if rest else "")
        if uri.startswith("sqlite:///"):
            return cls("sqlite", uri.removeprefix("sqlite:///") or ":memory:", **timeouts)
        if uri.startswith(("postgresql://", "postgres://")):
            return cls("postgres", "postgresql://" + uri.split("://", 1)[1], **timeouts)
        raise WarehouseConfigError(f"unsupported warehouse URI scheme in {_redact(uri)!r}")

    @property
    def address(self) -> str:
        """Where the warehouse is, without credentials: host:port/database, or the file."""
        if self.dialect == "sqlite":
            return self.target
        parts = urlsplit(self.target)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"

    def connect(self):
        """A connection with every wait bounded (see the class). PostgreSQL: not in
        autocommit; the lock and statement timeouts hold for the whole session."""
        if self.dialect == "postgres":
            return self._connect_postgres()
        return self._connect_sqlite()

    def _connect_postgres(self):
        import psycopg  # imported here: the SQLite laptop path does not need libpq

        # libpq's rule: whole seconds, at least 2 (0: no limit).
        connect_timeout = max(2, math.ceil(self.connect_timeout)) if self.connect_timeout else 0
        try:
            connection = psycopg.connect(self.target, autocommit=True, connect_timeout=connect_timeout)
        except psycopg.errors.ConnectionTimeout as exc:
            # A TimeoutError, not a data error: Airflow retries the task.
            raise WarehouseTimeout(
                f"the PostgreSQL warehouse at {self.address} did not answer within "
                f"connect_timeout={connect_timeout} s"
            ) from exc
        try:
            # Session settings, outside any transaction so that no rollback undoes them.
            connection.execute(f"SET lock_timeout = {milliseconds(self.lock_timeout)}")
            connection.execute(f"SET statement_timeout = {milliseconds(self.statement_timeout)}")
            connection.autocommit = False
        except BaseException:
            connection.close()
            raise
        return connection

    def _connect_sqlite(self):
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        busy_timeout = self.lock_timeout or 365 * 86_400.0  # 0: no limit
        connection = sqlite3.connect(self.target, isolation_level=None, timeout=busy_timeout)
        try:
            _use_wal(connection, self.target, busy_timeout)
        except BaseException:
            connection.close()
            raise
        return connection


def sqlite_locked(exc: sqlite3.OperationalError) -> bool:
    """Is this SQLite's "database is locked"/"busy", i.e. another writer holds the lock?"""
    return "locked" in str(exc) or "busy" in str(exc)


def _use_wal(connection: sqlite3.Connection, path: str, timeout: float) -> None:
    """Switch the database to WAL (persistent: once per file). Switching takes the
    database's exclusive lock, and SQLite answers "database is locked" at once, without
    waiting the busy timeout, when another connection is opening the same new file: retry
    until ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if not sqlite_locked(exc):
                raise
        if time.monotonic() >= deadline:
            raise WarehouseTimeout(f"SQLite warehouse {path}: could not switch to WAL mode within {timeout:g} s (locked)")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|h)?\s*", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


def _seconds(conn_id: str, name: str, value) -> float:
    if isinstance(value, bool):
        value = None  # never a duration
    if isinstance(value, (int, float)) and value >= 0 and math.isfinite(value):
        return float(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise WarehouseConfigError(
            f"connection {conn_id!r}: {name} must be a number of seconds (0: no limit) "
            f"or a duration like '500ms', '30s', '5min', got {value!r}"
        )
    return float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]


def _timeouts(conn_id: str, extra: Mapping | str | None) -> dict[str, float]:
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except ValueError as exc:
            raise WarehouseConfigError(f"connection {conn_id!r}: extras are not valid JSON: {exc}") from None
    extra = extra or {}
    if not isinstance(extra, Mapping):
        raise WarehouseConfigError(f"connection {conn_id!r}: extras must be a JSON object")
    return {name: _seconds(conn_id, name, extra[name]) for name in TIMEOUT_SETTINGS if extra.get(name) is not None}


def _extras_of(connection) -> Mapping | str | None:
    try:
        extras = getattr(connection, "extra_dejson", None)  # an Airflow Connection
    except Exception:  # extra_dejson of malformed JSON: report it ourselves below
        extras = None
    return extras if isinstance(extras, Mapping) and extras else getattr(connection, "extra", None)


def milliseconds(seconds: float) -> int:
    """PostgreSQL's timeout settings count milliseconds; 0 means no limit. A positive
    value never rounds down to 0 (which would mean no limit)."""
    return max(1, round(seconds * 1000)) if seconds else 0


def column_definitions(dialect: str, table: WarehouseTable) -> str:
    """The columns of the table's DDL, the primary key's NOT NULL (a partition attached
    to a table must have its parent's NOT NULL constraints)."""
    types = POSTGRES_TYPES if dialect == "postgres" else SQLITE_TYPES
    return ", ".join(
        f"{field.name} {types[field.type]}" + (" NOT NULL" if field.name in table.primary_key else "")
        for field in table.schema
    )


def create_table_sql(dialect: str, table: WarehouseTable) -> str:
    """CREATE TABLE IF NOT EXISTS of a plain table, primary key included (on PostgreSQL the
    loader makes it partitioned, see ``partitions``)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table.name} ({column_definitions(dialect, table)}, "
        f"PRIMARY KEY ({', '.join(table.primary_key)}))"
    )


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password:
        uri = uri.replace(f":{parts.password}@", ":***@")
    return re.sub(r"(password=)[^&\s]*", r"\1***", uri)
