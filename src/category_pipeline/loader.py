"""Load staged datasets into warehouse tables, one partition at a time.

A load is
- idempotent: the partition (e.g. category + order date) is replaced, so a rerun replaces
  it instead of duplicating it. On PostgreSQL a partition is a table of its own (native
  partitioning, see ``partitions``): the new rows go into a new table that is swapped in
  for the old one. On SQLite (and in PostgreSQL tables made before partitioning) its rows
  are deleted and the new ones inserted;
- atomic: every table of one call is replaced in a single transaction, so a failure or a
  kill mid-load leaves the warehouse exactly as it was (on PostgreSQL, a first load creates
  the missing tables and partition levels in a short transaction of their own: a failed
  first load may leave them, empty);
- safe under concurrency: loads of one partition queue up (a lock per table and
  partition), and concurrent first loads into an empty warehouse create each table once
  (PostgreSQL: an advisory lock around CREATE TABLE; SQLite: one writer at a time);
- bounded: every wait on the warehouse has a timeout (see ``Warehouse``); a lock wait that
  runs out says which table and partition it waited for;
- bulk: PostgreSQL gets a binary COPY, encoded from Arrow with vectorised kernels and
  streamed batch by batch from Parquet, into a table without index; its primary key is
  built after the copy, in one sort.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline import metrics
from category_pipeline.pg_copy import COPY_HEADER, COPY_TRAILER, encode_rows
from category_pipeline.schema import WAREHOUSE_TABLES, WarehouseTable
from category_pipeline.storage import BATCH_ROWS, read_batches, read_schema
from category_pipeline.warehouse import (
    Warehouse,
    WarehouseTimeout,
    column_definitions,
    create_table_sql,
    milliseconds,
    sqlite_locked,
)

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
_UNIQUE_VIOLATION = "23505"


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
        swapped = set()
        if warehouse.dialect == "postgres":
            swapped = _prepare_tables_postgres(warehouse, connection, tables, values)
        _begin(warehouse, connection)
        result, staged = {}, {}
        for table in tables:
            with _explained_waits(warehouse, table, values[table.name]):
                if warehouse.dialect == "sqlite":  # inside BEGIN IMMEDIATE: one writer at a time
                    connection.execute(create_table_sql(warehouse.dialect, table))
                _lock_partition(warehouse, connection, table, values[table.name])
                if table.name in swapped:
                    staged[table.name] = _stage_postgres(connection, table, datasets[table.name], values[table.name])
                    loaded, replaced = staged[table.name].loaded, staged[table.name].replaced
                else:
                    replaced = _delete_partition(warehouse, connection, table, values[table.name])
                    loaded = _bulk_insert(warehouse, connection, table, datasets[table.name], values[table.name])
            result[table.name] = {"loaded": loaded, "replaced": replaced}
            log.info(
                "%s: %d rows loaded, %d replaced, partition %s",
                table.name, loaded, replaced, describe_partition(values[table.name]),
            )
        # Every swap at the end, in table order: the parents' locks are held for the
        # milliseconds before commit, never across another table's copy.
        for table in tables:
            if table.name in staged:
                with _explained_waits(warehouse, table, values[table.name]):
                    _swap_postgres(warehouse, connection, table, values[table.name], staged[table.name])
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


def _prepare_tables_postgres(
    warehouse: Warehouse, connection, tables: list[WarehouseTable], values: Mapping[str, Mapping[str, pa.Scalar]]
) -> set[str]:
    """Create what the load needs and does not exist yet: the tables (partitioned, see
    ``partitions``) and the partitioned levels above the leaf (e.g. the category's), in a
    short transaction of their own. Returns the tables loaded by a swap: all but tables
    created before partitioning (plain tables), which keep DELETE + COPY.

    Two concurrent CREATE TABLE IF NOT EXISTS of one name both pass the existence check and
    one fails on the catalog's unique index (pg_type_typname_nsp_index): creation is
    serialised by a transaction-level advisory lock on a fixed key, under which the checks
    see what the load that held the lock before committed. Committed at once so the lock is
    held for milliseconds, not for a whole load; loads whose tables and levels exist (all
    but a category's or a day's first) do not take it at all."""
    from category_pipeline import partitions

    try:
        kinds = {table.name: _relkind(connection, table.name) for table in tables}
        for name, kind in kinds.items():
            if kind not in (None, "p", "r"):
                raise LoadError(f"{name} in the warehouse is not a table (pg_class.relkind {kind!r}, e.g. a view)")
        missing = []  # (table, depth) of each level to create, root first
        for table in tables:
            if kinds[table.name] == "r":
                continue
            for depth, level in enumerate(partitions.levels(table, values[table.name])):
                if (kinds[table.name] if depth == 0 else _relkind(connection, level.name)) is None:
                    missing.append((table, depth))
        if missing:
            _take_create_tables_lock(warehouse, connection, [table for table, _ in missing])
            for table, depth in missing:
                _create_level(connection, table, values[table.name], depth)
        connection.commit()
    except BaseException:
        _rollback(warehouse, connection)
        raise
    return {table.name for table in tables if kinds[table.name] != "r"}


def _relkind(connection, name: str) -> str | None:
    """``p`` partitioned table, ``r`` plain table, None: no such relation."""
    row = connection.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [name]).fetchone()
    return row[0] if row else None


def _take_create_tables_lock(warehouse: Warehouse, connection, tables: list[WarehouseTable]) -> None:
    try:
        _advisory_xact_lock(connection, CREATE_TABLES_LOCK)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise WarehouseTimeout(
                f"{', '.join(sorted({t.name for t in tables}))}: gave up after waiting "
                f"{warehouse.lock_timeout:g} s (lock_timeout) for the table-creation lock, "
                f"held by another load creating tables in {warehouse.address}"
            ) from exc
        raise


def _create_level(connection, table: WarehouseTable, values: Mapping[str, pa.Scalar], depth: int) -> None:
    """Create level ``depth`` of the table's partition tree unless the load that held the
    creation lock before created it: the table itself (0), or a partitioned child of the
    level above, created standalone and attached (ATTACH takes a weaker lock on the parent
    than CREATE TABLE ... PARTITION OF, so readers of the table never wait for it)."""
    from psycopg import sql

    from category_pipeline import partitions

    tree = partitions.levels(table, values)
    level = tree[depth]
    if _relkind(connection, level.name) is not None:
        return
    if depth == 0:
        connection.execute(sql.SQL("{} {}").format(
            sql.SQL(create_table_sql("postgres", table)), partitions.partition_clause(table)))
        return
    parent = tree[depth - 1].name
    connection.execute(sql.SQL("CREATE TABLE {} ({}) {}").format(
        sql.Identifier(level.name), sql.SQL(column_definitions("postgres", table)),
        partitions.partition_clause(table, depth)))
    connection.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(
        sql.Identifier(parent), sql.Identifier(level.name), partitions.bounds(table, values, depth)))


@dataclasses.dataclass(frozen=True)
class _Staged:
    """A partition's new rows, copied into a table of their own, waiting for the swap."""

    table: str
    loaded: int
    replaced: int  # rows of the leaf it replaces
    replaces_leaf: bool  # a leaf (maybe empty) exists: the swap detaches and drops it


def _stage_postgres(connection, table: WarehouseTable, uri: str, values: Mapping[str, pa.Scalar]) -> _Staged:
    """Copy the dataset into a new table beside the leaf, with its primary key and bounds
    built after the copy. The leaf cannot change meanwhile: the load holds its partition's
    lock until commit."""
    from psycopg import sql

    from category_pipeline import partitions

    leaf = partitions.leaf_name(table, values)
    staging = f"{leaf}_{secrets.token_hex(4)}"
    connection.execute(sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(staging), sql.SQL(column_definitions("postgres", table))))
    batches = _checked_batches(table, uri, values, COPY_BATCH_ROWS)
    loaded = _copy_postgres(connection, dataclasses.replace(table, name=staging), batches)
    with _duplicate_keys_named(table, uri):
        connection.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier(staging), sql.Identifier(f"{staging}_pk"),
            sql.SQL(", ").join(map(sql.Identifier, table.primary_key))))
    connection.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT partition_bounds {}").format(
        sql.Identifier(staging), partitions.check_constraint(table, values)))
    if _relkind(connection, leaf) is None:
        return _Staged(staging, loaded, replaced=0, replaces_leaf=False)
    replaced = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(leaf))).fetchone()[0]
    return _Staged(staging, loaded, replaced, replaces_leaf=True)


def _swap_postgres(
    warehouse: Warehouse, connection, table: WarehouseTable, values: Mapping[str, pa.Scalar], staged: _Staged
) -> None:
    """Put the staged table in place of the leaf: detach and drop the old leaf (if any),
    rename the new one to the leaf's name and attach it to the leaf's parent.

    The parent's lock is asked for in slices of ``SWAP_SLICE`` seconds with a step back in
    between (a savepoint), until the load's lock_timeout: while an ACCESS EXCLUSIVE request
    waits, every new query of the parent queues behind it, so a long report on the
    category must not stall all others for minutes."""
    from psycopg import sql

    from category_pipeline import partitions

    leaf, staging = partitions.leaf_name(table, values), staged.table
    parent = partitions.levels(table, values)[-1].name
    steps = []
    if staged.replaces_leaf:
        steps += [
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(leaf)),
            sql.SQL("DROP TABLE {}").format(sql.Identifier(leaf)),
        ]
    steps += [
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(leaf)),
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(f"{staging}_pk"), sql.Identifier(f"{leaf}_pkey")),
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(
            sql.Identifier(parent), sql.Identifier(leaf), partitions.bounds(table, values, len(table.partition_by))),
    ]
    deadline = time.monotonic() + warehouse.lock_timeout if warehouse.lock_timeout else math.inf
    while True:
        wait = min(partitions.SWAP_SLICE, max(deadline - time.monotonic(), 0.001))
        connection.execute("SAVEPOINT swap")
        connection.execute(f"SET LOCAL lock_timeout = {milliseconds(wait)}")
        try:
            for step in steps:
                connection.execute(step)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            connection.execute("ROLLBACK TO SAVEPOINT swap")
            if time.monotonic() >= deadline:
                raise WarehouseTimeout(
                    f"{table.name}: gave up after waiting {warehouse.lock_timeout:g} s (lock_timeout) for the lock "
                    f"of partition {describe_partition(values)} of table {table.name} (to swap in the new rows): "
                    f"another transaction on {parent} (a load, a query or an uncommitted change) still holds it"
                ) from exc
            time.sleep(random.uniform(0.02, 0.1))  # then ask again, after the queue behind us moved on
            continue
        connection.execute("RELEASE SAVEPOINT swap")
        connection.execute(f"SET LOCAL lock_timeout = {milliseconds(warehouse.lock_timeout)}")
        return


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
        if raw is None:  # no row can be in it (a key column), and a NULL bound is no partition
            raise LoadError(f"partition value {name}=None: a partition needs a value for every column")
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


def _bulk_insert(warehouse: Warehouse, connection, table: WarehouseTable, uri: str, values) -> int:
    """Into a plain table: PostgreSQL's binary COPY, or SQLite's INSERTs."""
    with _duplicate_keys_named(table, uri):
        if warehouse.dialect == "postgres":
            return _copy_postgres(connection, table, _checked_batches(table, uri, values, COPY_BATCH_ROWS))
        return _insert_sqlite(connection, table, _checked_batches(table, uri, values))


@contextmanager
def _duplicate_keys_named(table: WarehouseTable, uri: str):
    """A primary key twice in the dataset is bad data: a ``LoadError`` naming the dataset,
    the table and the key (not a retry)."""
    try:
        yield
    except Exception as exc:
        duplicated = getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION or (
            isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)
        )
        if not duplicated:
            raise
        detail = getattr(getattr(exc, "diag", None), "message_detail", None) or str(exc)
        raise LoadError(
            f"dataset {uri} holds two rows with one primary key ({', '.join(table.primary_key)}) "
            f"of table {table.name}: {detail}"
        ) from exc


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
