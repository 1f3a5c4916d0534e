"""The warehouse: which database, how to reach it, and the DDL of its tables.

PostgreSQL is the warehouse of a deployed platform; SQLite is the laptop default. The
target is built from the fields of an Airflow Connection but imports nothing of Airflow.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

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


@dataclass(frozen=True)
class Warehouse:
    dialect: Literal["postgres", "sqlite"]
    # libpq URI for PostgreSQL, a file path for SQLite.
    target: str

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
    ) -> Warehouse:
        kind = (conn_type or "").lower()
        if kind in ("postgres", "postgresql"):
            if not host:
                raise WarehouseConfigError(f"connection {conn_id!r}: PostgreSQL needs a host")
            credentials = quote(login or "", safe="") + (f":{quote(password, safe='')}" if password else "")
            netloc = (f"{credentials}@" if credentials else "") + host + (f":{port}" if port else "")
            return cls("postgres", f"postgresql://{netloc}/{quote(schema or '', safe='')}")
        if kind == "sqlite":
            path = host or schema
            if not path:
                raise WarehouseConfigError(f"connection {conn_id!r}: SQLite needs the database path as host")
            return cls("sqlite", path)
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
        )

    @classmethod
    def from_uri(cls, uri: str) -> Warehouse:
        """postgresql://user:pw@host:port/db or sqlite:////absolute/path.db"""
        if uri.startswith("sqlite:///"):
            return cls("sqlite", uri.removeprefix("sqlite:///") or ":memory:")
        if uri.startswith(("postgresql://", "postgres://")):
            return cls("postgres", "postgresql://" + uri.split("://", 1)[1])
        raise WarehouseConfigError(f"unsupported warehouse URI scheme in {_redact(uri)!r}")

    def connect(self):
        if self.dialect == "postgres":
            import psycopg  # imported here: the SQLite laptop path does not need libpq

            return psycopg.connect(self.target, autocommit=False)
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.target, isolation_level=None, timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection


def create_table_sql(dialect: str, table: WarehouseTable) -> str:
    types = POSTGRES_TYPES if dialect == "postgres" else SQLITE_TYPES
    columns = [f"{field.name} {types[field.type]}" for field in table.schema]
    columns.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)})"


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password:
        uri = uri.replace(f":{parts.password}@", ":***@")
    return re.sub(r"(password=)[^&\s]*", r"\1***", uri)
