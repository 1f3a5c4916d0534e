"""Load staged datasets into warehouse tables, one partition at a time.

A load is
- idempotent: the partition (e.g. category + order date) is deleted and re-inserted, so a
  rerun replaces it instead of duplicating it;
- atomic: every table of one call is replaced in a single transaction, so a failure or a
  kill mid-load leaves the warehouse exactly as it was;
- bulk: PostgreSQL gets a binary COPY, encoded from Arrow with vectorised kernels and
  streamed batch by batch from Parquet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline.pg_copy import COPY_HEADER, COPY_TRAILER, encode_rows
from category_pipeline.schema import WAREHOUSE_TABLES, WarehouseTable
from category_pipeline.storage import BATCH_ROWS, read_batches, read_schema
from category_pipeline.warehouse import Warehouse, create_table_sql

log = logging.getLogger(__name__)

# Rows per batch streamed into COPY: small enough that encoding the next batch overlaps the
# server's work on the previous one, large enough that the per-batch overhead stays small.
COPY_BATCH_ROWS = 32 * 1024


class LoadError(ValueError):
    """A staged dataset cannot go into its table as asked (wrong table, columns or partition)."""


def load_partition(
    warehouse: Warehouse, datasets: Mapping[str, str], partition: Mapping[str, str | date]
) -> dict[str, dict[str, int]]:
    """Replace ``partition`` of every table in ``datasets`` (table -> dataset URI).

    Returns, per table, the rows loaded and the rows they replaced.
    """
    tables = [_table(name) for name in datasets]
    for table in tables:
        _check_partition_columns(table, partition)
        _check_schema(table, datasets[table.name])

    connection = warehouse.connect()
    try:
        _begin(warehouse, connection)
        result = {}
        for table in tables:
            values = _partition_values(table, partition)
            connection.execute(create_table_sql(warehouse.dialect, table))
            _lock_partition(warehouse, connection, table, values)
            replaced = _delete_partition(warehouse, connection, table, values)
            if warehouse.dialect == "postgres":
                batches = _checked_batches(table, datasets[table.name], values, COPY_BATCH_ROWS)
                loaded = _copy_postgres(connection, table, batches)
            else:
                batches = _checked_batches(table, datasets[table.name], values)
                loaded = _insert_sqlite(connection, table, batches)
            result[table.name] = {"loaded": loaded, "replaced": replaced}
            log.info("%s: %d rows replaced %d in partition %s", table.name, loaded, replaced, values)
        _commit(warehouse, connection)
        return result
    except BaseException:
        _rollback(warehouse, connection)
        raise
    finally:
        connection.close()


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


def _lock_partition(warehouse: Warehouse, connection, table: WarehouseTable, values) -> None:
    # Two concurrent loads of one partition queue up instead of interleaving; SQLite's
    # BEGIN IMMEDIATE already serialises all writers.
    if warehouse.dialect == "postgres":
        key = f"{table.name}:" + "/".join(str(v.as_py()) for v in values.values())
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
        connection.execute("BEGIN IMMEDIATE")
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
