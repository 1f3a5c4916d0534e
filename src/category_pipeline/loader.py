"""Load staged datasets into warehouse tables, one partition at a time.

A load is
- idempotent: the partition (e.g. category + order date) is deleted and re-inserted, so a
  rerun replaces it instead of duplicating it;
- atomic: every table of one call is replaced in a single transaction, so a failure or a
  kill mid-load leaves the warehouse exactly as it was (on PostgreSQL, a first load creates
  the missing tables in a short transaction of their own: a failed first load may leave
  them, empty);
- safe under concurrency: loads of one partition queue up (a lock per table and
  partition), and concurrent first loads into an empty warehouse create each table once
  (PostgreSQL: an advisory lock around CREATE TABLE; SQLite: one writer at a time);
- bounded: every wait on the warehouse has a timeout (see ``Warehouse``); a lock wait that
  runs out says which table and partition it waited for;
- bulk: PostgreSQL gets a binary COPY, encoded from Arrow with vectorised kernels and
  streamed batch by batch from Parquet.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline import metrics
from category_pipeline.pg_copy import COPY_HEADER, COPY_TRAILER, encode_rows
from category_pipeline.schema import WAREHOUSE_TABLES, WarehouseTable
from category_pipeline.storage import BATCH_ROWS, read_batches, read_schema
from category_pipeline.warehouse import Warehouse, WarehouseTimeout, create_table_sql, sqlite_locked

log = logging.getLogger(__name__)

# Rows per batch streamed into COPY: small enough that encoding the next batch overlaps the
# server's work on the previous one, large enough that the per-batch overhead stays small.
COPY_BATCH_ROWS = 32 * 1024

# The key of the transaction-level advisory lock that serialises CREATE TABLE on PostgreSQL
# (two concurrent CREATE TABLE IF NOT EXISTS of one name collide in the catalog).
CREATE_TABLES_LOCK = "category_pipeline:create_tables"

# SQLSTATEs of PostgreSQL's bounded waits.
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout
_QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request)


class LoadError(ValueError):
    """A staged dataset cannot go into its table as asked (wrong table, columns or partition)."""


def load_partition(
    warehouse: Warehouse, datasets: Mapping[str, str], partition: Mapping[str, str | date]
) -> dict[str, dict[str, int]]:
    """Replace ``partition`` of every table in ``datasets`` (table -> dataset URI).

    Returns, per table, the rows loaded and the rows they replaced. A category's load (a
    partition with a ``category``) is timed, and its ``orders`` rows counted, as metrics.
    """
    category = partition.get("category")
    if category is None:
        return _load_partition(warehouse, datasets, partition)
    with metrics.step_timer(str(category), "load"):
        result = _load_partition(warehouse, datasets, partition)
    if "orders" in result:
        metrics.rows_loaded(str(category), result["orders"]["loaded"])
    return result


def _load_partition(
    warehouse: Warehouse, datasets: Mapping[str, str], partition: Mapping[str, str | date]
) -> dict[str, dict[str, int]]:
    tables = [_table(name) for name in datasets]
    for table in tables:
        _check_partition_columns(table, partition)
        _check_schema(table, datasets[table.name])
    values = {table.name: _partition_values(table, partition) for table in tables}
    # One order for all loads: two loads of several tables take their partition locks in the
    # same order, so they cannot deadlock.
    tables.sort(key=lambda table: table.name)

    connection = warehouse.connect()
    try:
        if warehouse.dialect == "postgres":
            _create_missing_tables_postgres(warehouse, connection, tables)
        _begin(warehouse, connection)
        result = {}
        for table in tables:
            with _explained_waits(warehouse, table, values[table.name]):
                if warehouse.dialect == "sqlite":  # inside BEGIN IMMEDIATE: one writer at a time
                    connection.execute(create_table_sql(warehouse.dialect, table))
                _lock_partition(warehouse, connection, table, values[table.name])
                replaced = _delete_partition(warehouse, connection, table, values[table.name])
                if warehouse.dialect == "postgres":
                    batches = _checked_batches(table, datasets[table.name], values[table.name], COPY_BATCH_ROWS)
                    loaded = _copy_postgres(connection, table, batches)
                else:
                    batches = _checked_batches(table, datasets[table.name], values[table.name])
                    loaded = _insert_sqlite(connection, table, batches)
            result[table.name] = {"loaded": loaded, "replaced": replaced}
            log.info(
                "%s: %d rows loaded, %d replaced, partition %s",
                table.name, loaded, replaced, describe_partition(values[table.name]),
            )
        _commit(warehouse, connection)
        return {name: result[name] for name in datasets}
    except BaseException:
        _rollback(warehouse, connection)
        raise
    finally:
        connection.close()


def describe_partition(values: Mapping[str, pa.Scalar]) -> str:
    """``category=fashion, order_date=2026-11-25``: plain values, not Arrow scalars."""
    return ", ".join(f"{name}={value.as_py()}" for name, value in values.items())


def _create_missing_tables_postgres(warehouse: Warehouse, connection, tables: list[WarehouseTable]) -> None:
    """Create the tables that do not exist yet, in a short transaction of their own.

    Two concurrent CREATE TABLE IF NOT EXISTS of one name both pass the existence check and
    one fails on the catalog's unique index (pg_type_typname_nsp_index): creation is
    serialised by a transaction-level advisory lock on a fixed key, under which IF NOT
    EXISTS sees a table committed by the load that held the lock before. Committed at once
    so the lock is held for milliseconds, not for a whole first load; loads into existing
    tables (all but the first) do not take it at all."""
    missing = [
        table for table in tables
        if connection.execute("SELECT to_regclass(%s)", [table.name]).fetchone()[0] is None
    ]
    try:
        if missing:
            try:
                _advisory_xact_lock(connection, CREATE_TABLES_LOCK)
            except Exception as exc:
                if getattr(exc, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                    raise WarehouseTimeout(
                        f"{', '.join(t.name for t in missing)}: gave up after waiting "
                        f"{warehouse.lock_timeout:g} s (lock_timeout) for the table-creation lock, "
                        f"held by another load creating tables in {warehouse.address}"
                    ) from exc
                raise
            for table in missing:
                connection.execute(create_table_sql(warehouse.dialect, table))
        connection.commit()
    except BaseException:
        _rollback(warehouse, connection)
        raise


@contextmanager
def _explained_waits(warehouse: Warehouse, table: WarehouseTable, values: Mapping[str, pa.Scalar]):
    """Turn a timed-out wait into a ``WarehouseTimeout`` naming the table and partition."""
    try:
        yield
    except WarehouseTimeout:
        raise
    except Exception as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        where = f"partition {describe_partition(values)} of table {table.name}"
        if sqlstate == _LOCK_NOT_AVAILABLE:
            raise WarehouseTimeout(
                f"{table.name}: gave up after waiting {warehouse.lock_timeout:g} s (lock_timeout) for the lock "
                f"of {where}: another load of this partition, or another transaction on its rows, "
                f"still holds it"
            ) from exc
        if sqlstate == _QUERY_CANCELED and "statement timeout" in str(exc):
            raise WarehouseTimeout(
                f"{table.name}: a statement loading {where} ran longer than "
                f"{warehouse.statement_timeout:g} s (statement_timeout)"
            ) from exc
        raise


def _table(name: str) -> WarehouseTable:
    try:
        return WAREHOUSE_TABLES[name]
    except KeyError:
        raise LoadError(f"unknown warehouse table {name!r}; known tables: {sorted(WAREHOUSE_TABLES)}") from None


def _check_partition_columns(table: WarehouseTable, partition: Mapping[str, object]) -> None:
    if set(partition) != set(table.partition_by):
        raise LoadError(
            f"table {table.name} is partitioned by {list(table.partition_by)}, "
            f"but the load names partition {sorted(partition)}"
        )


def _check_schema(table: WarehouseTable, uri: str) -> None:
    staged = read_schema(uri)
    for field in table.schema:
        if field.name not in staged.names:
            raise LoadError(f"dataset {uri} lacks column {field.name!r} of table {table.name}")
        if staged.field(field.name).type != field.type:
            raise LoadError(
                f"dataset {uri} column {field.name!r} is {staged.field(field.name).type}, "
                f"table {table.name} needs {field.type}"
            )


def _partition_values(table: WarehouseTable, partition: Mapping[str, object]) -> dict[str, pa.Scalar]:
    values = {}
    for name in table.partition_by:
        field = table.schema.field(name)
        raw = partition[name]
        try:
            if field.type == pa.date32():
                # Only a date or an ISO string: Arrow would also take an int as days since 1970.
                if not isinstance(raw, (str, date)):
                    raise TypeError(f"expected an ISO date, got {type(raw).__name__}")
                raw = date.fromisoformat(raw) if isinstance(raw, str) else raw
            values[name] = pa.scalar(raw, field.type)
        except (ValueError, TypeError, pa.ArrowInvalid) as exc:
            raise LoadError(f"partition value {name}={raw!r} is not a valid {field.type}") from exc
    return values


def _checked_batches(
    table: WarehouseTable, uri: str, values: dict[str, pa.Scalar], batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The dataset's batches, refusing any row outside the partition being replaced
    (loading it would silently overwrite or duplicate another partition)."""
    for batch in read_batches(uri, batch_rows=batch_rows, columns=table.schema.names):
        for name, value in values.items():
            outside = pc.invert(pc.fill_null(pc.equal(batch.column(name), value), False))
            if pc.any(outside).as_py():
                stray = batch.column(name).filter(outside)[0]
                raise LoadError(
                    f"dataset {uri} has a row with {name}={stray.as_py()!r} outside the partition "
                    f"{name}={value.as_py()!r} of table {table.name}"
                )
        yield batch


def _where(dialect: str, values: dict[str, pa.Scalar]) -> tuple[str, list]:
    marker = "%s" if dialect == "postgres" else "?"
    clause = " AND ".join(f"{name} = {marker}" for name in values)
    params = [value.as_py() if dialect == "postgres" else str(value.as_py()) for value in values.values()]
    return clause, params


def partition_lock_key(table: WarehouseTable, values: Mapping[str, pa.Scalar]) -> str:
    """The text whose hash keys the advisory lock of one partition of one table."""
    return f"{table.name}:" + "/".join(str(v.as_py()) for v in values.values())


def _lock_partition(warehouse: Warehouse, connection, table: WarehouseTable, values) -> None:
    # Two concurrent loads of one partition queue up instead of interleaving; SQLite's
    # BEGIN IMMEDIATE already serialises all writers.
    if warehouse.dialect == "postgres":
        _advisory_xact_lock(connection, partition_lock_key(table, values))


def _advisory_xact_lock(connection, key: str) -> None:
    """PostgreSQL's lock on the text ``key``, held until the transaction ends."""
    connection.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def _delete_partition(warehouse: Warehouse, connection, table: WarehouseTable, values) -> int:
    clause, params = _where(warehouse.dialect, values)
    cursor = connection.execute(f"DELETE FROM {table.name} WHERE {clause}", params)
    return max(cursor.rowcount, 0)


def _copy_postgres(connection, table: WarehouseTable, batches: Iterator[pa.RecordBatch]) -> int:
    rows = 0
    # Arrow strings are UTF-8 whatever the server's default client encoding; SET LOCAL ends
    # with the transaction.
    connection.execute("SET LOCAL client_encoding TO 'UTF8'")
    statement = f"COPY {table.name} ({', '.join(table.schema.names)}) FROM STDIN (FORMAT binary)"
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write(COPY_HEADER)
        for batch in batches:
            if batch.num_rows:
                copy.write(encode_rows(batch))
                rows += batch.num_rows
        copy.write(COPY_TRAILER)
    return rows


def _insert_sqlite(connection, table: WarehouseTable, batches: Iterator[pa.RecordBatch]) -> int:
    rows = 0
    placeholders = ", ".join("?" for _ in table.schema)
    statement = f"INSERT INTO {table.name} ({', '.join(table.schema.names)}) VALUES ({placeholders})"
    for batch in batches:
        columns = [
            (pc.cast(column, pa.string()) if pa.types.is_temporal(column.type) else column).to_pylist()
            for column in batch.columns
        ]
        connection.executemany(statement, zip(*columns))
        rows += batch.num_rows
    return rows


def _begin(warehouse: Warehouse, connection) -> None:
    if warehouse.dialect == "sqlite":
        # The write lock up front (waiting up to the busy timeout), before any DDL or read:
        # a deferred transaction that upgrades later could fail at once with "locked".
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not sqlite_locked(exc):
                raise
            raise WarehouseTimeout(
                f"gave up after waiting {warehouse.lock_timeout:g} s (lock_timeout) for the write lock of "
                f"the SQLite warehouse {warehouse.address}: another load still holds it"
            ) from exc
    # psycopg opens the transaction implicitly with the first statement.


def _commit(warehouse: Warehouse, connection) -> None:
    if warehouse.dialect == "sqlite":
        connection.execute("COMMIT")
    else:
        connection.commit()


def _rollback(warehouse: Warehouse, connection) -> None:
    try:
        if warehouse.dialect == "sqlite":
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        else:
            connection.rollback()
    except Exception:  # the connection may already be gone; the server rolls back then
        log.warning("rollback failed; the database discards the open transaction", exc_info=True)
