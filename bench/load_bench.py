"""Load one partition of clean orders into a real PostgreSQL: the loader (binary COPY into a
table of its own, primary key built after, swapped in as the partition) against what a user
would otherwise write: ADBC's ``adbc_ingest`` (Arrow-native bulk ingest) into the table, and a
row-by-row baseline (psycopg ``executemany`` of an INSERT).

    python bench/load_bench.py [--rows 1000000] [--repeat 3]

Every path gets the same table (``warehouse.create_table_sql``: primary key included; the
loader makes it partitioned), the same transaction semantics (one transaction that replaces
the partition) and the same Parquet file, and must leave identical table contents. Each
measurement gets a fresh database of one throwaway server (tests/support/postgres.py); the
order alternates a/b/c/a/b/c to spread noise. A second scenario reloads an already loaded
partition (replacing all of its rows). Last, where the time goes: the COPY engines alone
(the loader's pg_copy.py vs ADBC's, into a table without index), the primary key's build,
and the previous design (DELETE + COPY into one plain table), whose reload was the problem.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sqlite3
import tempfile
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "bench")]

import adbc_driver_postgresql.dbapi as adbc  # noqa: E402
import adbc_driver_sqlite.dbapi as adbc_sqlite  # noqa: E402
import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import common  # noqa: E402
from category_pipeline import loader, pg_copy, process, synthetic  # noqa: E402
from category_pipeline.schema import CATALOG, RAW_ORDERS, WAREHOUSE_TABLES  # noqa: E402
from category_pipeline.storage import dataset_uri, read_batches, write_dataset  # noqa: E402
from category_pipeline.warehouse import Warehouse, column_definitions, create_table_sql  # noqa: E402
from tests.support.postgres import TemporaryPostgres, wait_until_accepting  # noqa: E402

CATEGORY = "electronics"
DAY = date(2026, 4, 1)
PARTITION = {"category": CATEGORY, "order_date": DAY.isoformat()}
PRODUCTS = 500
DATA = common.RESULTS / "data"
GOAL = 10.0  # bulk vs row-by-row
ADBC_WITHIN = 1.10  # replace pg_copy.py if ADBC takes at most 10% longer
RELOAD_GOAL = 1.5  # a reload at most 1.5x a new partition's load
TABLE = WAREHOUSE_TABLES["orders"]
SETTINGS = ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers", "max_wal_size"]


# --- the data -------------------------------------------------------------------------------


def clean_orders(rows: int) -> str:
    """A clean_orders.parquet of exactly ``rows`` rows of one partition, made the way the DAG
    makes it (synthetic raw orders -> process.validate); reused when already there."""
    root, scope = str(DATA), f"load-{rows}"
    clean = dataset_uri(root, scope, DAY, "clean_orders")
    if Path(clean).exists() and pq.read_metadata(clean).num_rows == rows:
        return clean
    started = time.perf_counter()
    raw = dataset_uri(root, scope, DAY, "raw_orders")
    catalog = dataset_uri(root, scope, DAY, "catalog")
    write_dataset(catalog, CATALOG, synthetic.catalog(CATEGORY, PRODUCTS).to_batches())
    # No broken rows: every generated row is clean, so the partition has exactly `rows` rows.
    write_dataset(raw, RAW_ORDERS, synthetic.generate_orders(CATEGORY, DAY, rows, PRODUCTS, bad_row_ratio=0.0))
    result = process.validate(raw, catalog, CATEGORY, DAY, clean, dataset_uri(root, scope, DAY, "quarantine"))
    if result["clean_rows"] != rows:
        raise SystemExit(f"expected {rows} clean rows, validate kept {result['clean_rows']}")
    print(f"made {clean} ({rows:,} rows) in {time.perf_counter() - started:.1f}s", flush=True)
    return clean


def expected_of(uri: str) -> dict:
    table = pq.read_table(uri, columns=["order_id", "amount"])
    return {
        "rows": table.num_rows,
        "distinct_order_id": pc.count_distinct(table.column("order_id")).as_py(),
        "sum_amount": pc.sum(table.column("amount")).as_py(),
    }


# --- the ways to load -----------------------------------------------------------------------


def load_bulk(warehouse: Warehouse, uri: str) -> None:
    """(a) exactly what the DAG's load task does."""
    result = loader.load_partition(warehouse, {"orders": uri}, dict(PARTITION))
    if not result["orders"]["loaded"]:
        raise RuntimeError("bulk load loaded nothing")


def load_row_by_row(warehouse: Warehouse, uri: str) -> None:
    """(b) a typical operator: one transaction, delete the partition, then INSERT every row
    with psycopg's plain ``executemany`` (which psycopg 3 already pipelines)."""
    names = TABLE.schema.names
    insert = f"INSERT INTO {TABLE.name} ({', '.join(names)}) VALUES ({', '.join('%s' for _ in names)})"
    with psycopg.connect(warehouse.target, autocommit=False) as connection:
        connection.execute(create_table_sql("postgres", TABLE))
        connection.execute(f"DELETE FROM {TABLE.name} WHERE category = %s AND order_date = %s", [CATEGORY, DAY])
        with connection.cursor() as cursor:
            for batch in read_batches(uri, columns=names):
                cursor.executemany(insert, list(zip(*(column.to_pylist() for column in batch.columns))))
        connection.commit()


def _reader(uri: str, batch_rows: int = loader.COPY_BATCH_ROWS) -> pa.RecordBatchReader:
    values = loader._partition_values(TABLE, PARTITION)
    return pa.RecordBatchReader.from_batches(TABLE.schema, loader._checked_batches(TABLE, uri, values, batch_rows))


def load_adbc(warehouse: Warehouse, uri: str) -> None:
    """(c) what a user would write with ADBC: one transaction, delete the partition, then
    ``adbc_ingest`` the Parquet file's batches (checked like the loader's) into the table."""
    with adbc.connect(warehouse.target) as connection, connection.cursor() as cursor:
        cursor.execute(create_table_sql("postgres", TABLE))
        cursor.execute(f"DELETE FROM {TABLE.name} WHERE category = '{CATEGORY}' AND order_date = '{DAY}'")
        cursor.adbc_ingest(TABLE.name, _reader(uri), mode="append")
        connection.commit()


def sqlite_loader(path: Path, uri: str) -> None:
    """The laptop warehouse: the loader on SQLite (checked batches, executemany INSERTs)."""
    load_bulk(Warehouse("sqlite", str(path)), uri)


def sqlite_adbc(path: Path, uri: str) -> None:
    """The same with adbc_driver_sqlite: delete the partition, ``adbc_ingest``, one transaction."""
    with adbc_sqlite.connect(str(path)) as connection, connection.cursor() as cursor:
        cursor.execute(create_table_sql("sqlite", TABLE))
        cursor.execute(f"DELETE FROM {TABLE.name} WHERE category = '{CATEGORY}' AND order_date = '{DAY}'")
        cursor.adbc_ingest(TABLE.name, _reader(uri), mode="append")
        connection.commit()


def sqlite_contents(path: Path) -> tuple[dict, str]:
    """Rows, distinct keys and sum of amounts, and how one timestamp reads back as text."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows, distinct, amount = connection.execute(
            f"SELECT count(*), count(DISTINCT order_id), sum(amount) FROM {TABLE.name}").fetchone()
        stamp = connection.execute(f"SELECT ordered_at FROM {TABLE.name} ORDER BY order_id LIMIT 1").fetchone()[0]
    return {"rows": rows, "distinct_order_id": distinct, "sum_amount": amount}, stamp


def plain_table(warehouse: Warehouse) -> None:
    """The table as the loader made it before native partitioning: one plain table."""
    with psycopg.connect(warehouse.target, autocommit=True) as connection:
        connection.execute(create_table_sql("postgres", TABLE))


def engine_copy(warehouse: Warehouse, uri: str) -> None:
    """The loader's COPY engine alone: pg_copy.py's binary COPY into a table without index."""
    with psycopg.connect(warehouse.target, autocommit=False) as connection:
        connection.execute(f"CREATE TABLE staged ({column_definitions('postgres', TABLE)})")
        values = loader._partition_values(TABLE, PARTITION)
        loader._copy_postgres(connection, dataclasses.replace(TABLE, name="staged"),
                              loader._checked_batches(TABLE, uri, values, loader.COPY_BATCH_ROWS))
        connection.commit()


def engine_adbc(warehouse: Warehouse, uri: str) -> None:
    """ADBC's COPY engine alone: ``adbc_ingest`` into the same table without index."""
    with adbc.connect(warehouse.target) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE staged ({column_definitions('postgres', TABLE)})")
        cursor.adbc_ingest("staged", _reader(uri), mode="append")
        connection.commit()


def primary_key_build(warehouse: Warehouse) -> float:
    """The loader's primary-key build after the copy, on a table holding the partition."""
    with psycopg.connect(warehouse.target, autocommit=False) as connection:
        started = time.perf_counter()
        connection.execute(f"ALTER TABLE staged ADD PRIMARY KEY ({', '.join(TABLE.primary_key)})")
        seconds = time.perf_counter() - started
        connection.rollback()
    return seconds


def encode_only(uri: str) -> None:
    """The loader's client side alone: read Parquet, check the partition, encode."""
    values = loader._partition_values(TABLE, PARTITION)
    for batch in loader._checked_batches(TABLE, uri, values, loader.COPY_BATCH_ROWS):
        pg_copy.encode_rows(batch)


# --- the server -----------------------------------------------------------------------------


class Server:
    def __init__(self) -> None:
        self.pg = TemporaryPostgres()
        self.dsn = self.pg.start()
        wait_until_accepting(self.dsn)
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        self.count = 0

    def show(self, name: str) -> str:
        return self.admin.execute(f"SHOW {name}").fetchone()[0]

    def fresh(self) -> Warehouse:
        self.count += 1
        self.admin.execute(f"CREATE DATABASE bench_{self.count}")
        self.checkpoint()
        return Warehouse("postgres", self.dsn.rsplit("/", 1)[0] + f"/bench_{self.count}")

    def checkpoint(self) -> None:
        # Every measurement starts from the same state: no dirty pages of the previous one,
        # neither in PostgreSQL's buffers nor in the kernel's page cache (whose writeback
        # would otherwise compete with the next measurement).
        self.admin.execute("CHECKPOINT")
        os.sync()

    def drop(self, warehouse: Warehouse) -> None:
        self.admin.execute(f"DROP DATABASE {warehouse.target.rsplit('/', 1)[1]}")

    def stop(self) -> None:
        self.admin.close()
        self.pg.stop()


def contents(warehouse: Warehouse, table: str = TABLE.name) -> dict:
    """Checksum of the whole table: row count, distinct keys, exact sum of amounts and an
    order-independent hash of every row's full text."""
    with psycopg.connect(warehouse.target) as connection:
        rows, distinct, amount, row_hash = connection.execute(
            f"SELECT count(*), count(DISTINCT order_id), sum(amount::numeric),"
            f" sum(hashtextextended(t::text, 0)::numeric) FROM {table} t"
        ).fetchone()
    return {"rows": rows, "distinct_order_id": distinct, "sum_amount": amount, "row_hash": row_hash}


def check(name: str, got: dict, reference: dict | None, expected: dict) -> dict:
    """Fail loudly unless the table holds exactly the Parquet file's rows, as every other run left it."""
    problems = [
        f"{key}: {got[key]} in the table, {expected[key]} in the Parquet file"
        for key in ("rows", "distinct_order_id")
        if got[key] != expected[key]
    ]
    if abs(float(got["sum_amount"]) - expected["sum_amount"]) > 1e-6 * max(1.0, abs(expected["sum_amount"])):
        problems.append(f"sum(amount): {got['sum_amount']} in the table, {expected['sum_amount']} in the Parquet file")
    if reference is not None and got != reference:
        problems.append(f"table differs from the first load's: {got} != {reference}")
    if problems:
        raise SystemExit(f"FAIL: {name} left wrong table contents:\n  " + "\n  ".join(problems))
    return got


def timed(action, *args) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


# --- the benchmark --------------------------------------------------------------------------


def adbc_verdict(user_ratio: float, engine_ratio: float) -> str:
    """The issue's rule: replace pg_copy.py with ADBC if ADBC is within 10% of the loader."""
    as_called = (f"ADBC's `adbc_ingest` as a user would call it (into the table, primary key included) takes "
                 f"{user_ratio:.2f}x the loader's time ({user_ratio - 1:+.0%})")
    engine = f"COPY engine against COPY engine (no index), {engine_ratio:.2f}x ({engine_ratio - 1:+.0%})"
    if user_ratio <= ADBC_WITHIN:
        return f"goal met, replace pg_copy.py: {as_called}; {engine}"
    if engine_ratio <= ADBC_WITHIN:
        return (f"goal partly met: {as_called}, so the loader stays ahead of it; {engine}: within 10% in this "
                "run (never faster; 1.05x to 1.11x over this issue's runs), yet pg_copy.py stays. The copy must "
                "share the swap's transaction, so the whole loader would move to ADBC's DB-API, and its "
                "PostgreSQL driver refuses ROLLBACK TO SAVEPOINT after an error ('the connection is in an error "
                "state; first rollback'), which the swap's sliced lock wait relies on; it also runs every query "
                "that returns rows as `COPY (query) TO STDOUT` (SHOW fails). ADBC stays bench-only")
    return f"goal missed for ADBC, pg_copy.py stays: {as_called}; {engine}, more than 10% slower"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows, repeat = args.rows, args.repeat

    uri = clean_orders(rows)
    expected = expected_of(uri)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {}
    reference = None

    def note(name: str, round_: int, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)
        print(f"round {round_ + 1}: {name:14} {seconds:8.2f}s", flush=True)

    def measure(name: str, round_: int, load, prepare=None, table: str = TABLE.name, after=None) -> None:
        """One load into a fresh database, checked; ``prepare`` runs untimed before it,
        ``after`` (untimed too) on the loaded database."""
        nonlocal reference
        warehouse = server.fresh()
        if prepare:
            prepare(warehouse)
            server.checkpoint()
        seconds = timed(load, warehouse, uri)
        reference = check(name, contents(warehouse, table), reference, expected)
        note(name, round_, seconds)
        if after:
            after(warehouse, round_)
        server.drop(warehouse)

    server = Server()
    try:
        settings = {name: server.show(name) for name in ["server_version", *SETTINGS]}
        # Warm-up, untimed: the page cache holds the Parquet file, the server has its WAL files,
        # Python has its imports and Arrow its kernels, for every path alike.
        for warm_up in (load_bulk, load_adbc):
            warehouse = server.fresh()
            warm_up(warehouse, uri)
            server.drop(warehouse)
        for round_ in range(repeat):  # a/b/c/a/b/c
            measure("bulk", round_, load_bulk)
            measure("adbc", round_, load_adbc)
            measure("row", round_, load_row_by_row)
        for round_ in range(repeat):
            measure("reload", round_, load_bulk, prepare=lambda warehouse: load_bulk(warehouse, uri))
            measure("adbc reload", round_, load_adbc, prepare=lambda warehouse: load_adbc(warehouse, uri))
        # Where the time goes.
        for round_ in range(repeat):
            measure("engine copy", round_, engine_copy, table="staged",
                    after=lambda warehouse, r: note("pk build", r, primary_key_build(warehouse)))
            measure("engine adbc", round_, engine_adbc, table="staged")
            note("encode", round_, timed(encode_only, uri))
            measure("plain", round_, load_bulk, prepare=plain_table)
            measure("plain reload", round_, load_bulk,
                    prepare=lambda warehouse: (plain_table(warehouse), load_bulk(warehouse, uri)))
    finally:
        server.stop()
    # The laptop warehouse, SQLite: the loader's INSERTs vs adbc_driver_sqlite.
    stamps = {}
    for round_ in range(repeat):
        for name, load in (("sqlite", sqlite_loader), ("sqlite adbc", sqlite_adbc)):
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "warehouse.db"
                seconds = timed(load, path, uri)
                got, stamps[name] = sqlite_contents(path)
            check(name, {**got, "row_hash": None}, None, expected)
            note(name, round_, seconds)

    load_after = os.getloadavg()[0]
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["row"] / median["bulk"]
    adbc_ratio = median["adbc"] / median["bulk"]
    engine_ratio = median["engine adbc"] / median["engine copy"]
    reload_ratio = median["reload"] / median["bulk"]

    def line(label: str, name: str, versus: str = "") -> list:
        runs = ", ".join(f"{value:.2f}" for value in times[name])
        return [label, median[name], runs, rows / median[name], versus]

    def vs_bulk(name: str) -> str:
        return f"{median[name] / median['bulk']:.2f}x (a)'s time"

    headers = ["load of one partition", "median s", f"runs s ({repeat}, a/b/c/a/b/c)", "rows/s", "vs (a)"]
    results = common.table(headers, [
        line("(a) the loader: `loader.load_partition` (binary COPY, PK after, partition swap), new partition",
             "bulk", "1.00x"),
        line("(c) ADBC: `adbc_ingest` into the table (PK included) after a DELETE, new partition", "adbc",
             vs_bulk("adbc")),
        line("(b) row-by-row: `executemany` INSERT, new partition", "row", f"{ratio:.1f}x slower"),
        line(f"(a) reload: replace the partition's {rows:,} existing rows", "reload", vs_bulk("reload")),
        line(f"(c) ADBC reload: DELETE the {rows:,} rows + `adbc_ingest`, one transaction", "adbc reload",
             vs_bulk("adbc reload")),
    ])
    profile = common.table(["where the time goes", "median s", f"runs s ({repeat})", "rows/s", ""], [
        line("COPY engine, the loader's: pg_copy.py binary COPY into a table without index", "engine copy",
             f"{median['engine copy'] / median['bulk']:.0%} of (a)"),
        line("COPY engine, ADBC's: `adbc_ingest` into the same table without index", "engine adbc",
             f"{engine_ratio:.2f}x the loader's engine"),
        line("the loader's client side alone: read Parquet, check partition, encode", "encode",
             "overlaps the server's work"),
        line("the primary key's build after the copy (one sort)", "pk build",
             f"{median['pk build'] / median['bulk']:.0%} of (a)"),
        line("previous design: DELETE + COPY into one plain table, new partition", "plain", vs_bulk("plain")),
        line("previous design: reload", "plain reload",
             f"{median['plain reload'] / median['plain']:.1f}x its new partition"),
    ])
    sqlite_ratio = median["sqlite"] / median["sqlite adbc"]
    laptop = common.table(["the laptop warehouse (SQLite), new partition", "median s", f"runs s ({repeat})", "rows/s",
                           "ordered_at reads back as"], [
        line("the loader: checked batches, `executemany` INSERTs", "sqlite") [:4] + [f"`{stamps['sqlite']}`"],
        line("adbc_driver_sqlite: `adbc_ingest`", "sqlite adbc")[:4] + [f"`{stamps['sqlite adbc']}`"],
    ])
    verdicts = [
        (f"goal met: bulk is {ratio:.1f}x faster than row-by-row (goal >= {GOAL:.0f}x)" if ratio >= GOAL else
         f"goal missed: bulk is only {ratio:.1f}x faster than row-by-row (goal >= {GOAL:.0f}x)"),
        (f"goal met: a reload takes {reload_ratio:.2f}x a new partition's load (goal <= {RELOAD_GOAL}x; "
         f"it took {median['plain reload'] / median['plain']:.1f}x with the previous DELETE + COPY)"
         if reload_ratio <= RELOAD_GOAL else
         f"goal missed: a reload takes {reload_ratio:.2f}x a new partition's load (goal <= {RELOAD_GOAL}x)"),
        adbc_verdict(adbc_ratio, engine_ratio),
    ]
    setup = common.table(["", ""], [
        ["rows", f"{rows:,} clean orders of one partition ({CATEGORY}, {DAY}) from synthetic.generate_orders "
                 f"+ process.validate; {Path(uri).stat().st_size / 2**20:.0f} MiB Parquet (zstd), sorted by order_id"],
        ["table", f"`{TABLE.name}`: {len(TABLE.schema)} columns, PRIMARY KEY ({', '.join(TABLE.primary_key)}); "
                  "(a) makes it partitioned by category then day; (b), (c) load the plain table of "
                  "warehouse.create_table_sql"],
        ["ADBC", f"adbc-driver-postgresql {common.version('adbc-driver-postgresql')} (bench only), Parquet "
                 f"batches of {loader.COPY_BATCH_ROWS:,} rows, checked like the loader's, as one RecordBatchReader"],
        ["server", f"throwaway PostgreSQL {settings.pop('server_version')} (tests/support/postgres.py) on this "
                   "machine, loopback TCP; a fresh database, a CHECKPOINT and a sync before every measurement"],
        ["server settings", "initdb defaults except **fsync=off** (the throwaway server's setting: nothing is "
                            "flushed to disk, so every path is CPU-bound; a durable server adds WAL flushes): "
                            + ", ".join(f"{k}={v}" for k, v in settings.items())],
        ["timing", "time.perf_counter around the load call (connect, read Parquet, load, commit), in-process, "
                   f"after one untimed warm-up load per engine; {repeat} runs each, alternating; median"],
        ["check", "after every load: count(*), count(DISTINCT order_id), sum(amount::numeric) and a sum of "
                  "hashes of every row's text, identical for all loads and matching the Parquet file"],
        *[[key, value] for key, value in common.machine().items()],
        ["load average (1 min)", f"{load_before:.2f} before the benchmark, {load_after:.2f} after it "
                                 "(a shared machine: other work competes for its cores)"],
    ])
    body = "\n\n".join([
        f"Goals (from the issues): loading a partition in bulk is at least {GOAL:.0f}x faster than row-by-row "
        f"INSERTs; a reload of a partition takes at most {RELOAD_GOAL}x a new one's load; ADBC replaces "
        f"pg_copy.py if it is within {ADBC_WITHIN - 1:.0%} of it, or faster.",
        setup,
        results,
        "\n".join(f"**Verdict: {verdict}.**  " for verdict in verdicts),
        "Where the time goes (same server, same checks):",
        profile,
        "The laptop warehouse, considered for one API over both warehouses (the issue's suggestion): "
        f"adbc_driver_sqlite {common.version('adbc-driver-sqlite')} loads the same partition {sqlite_ratio:.1f}x "
        "faster than the loader's INSERTs (rows, keys and amounts checked equal):",
        laptop,
        "Not adopted: it writes timestamps as ISO text without the zone (above), so a SQLite warehouse would "
        "hold two formats that neither compare nor sort together; a laptop day is 2,000 to 20,000 rows, "
        "loaded in milliseconds either way; and with pg_copy.py staying, one API would not serve both "
        "warehouses anyway.",
        "Why the reload was slow, and what changed: replacing a partition by DELETE and INSERTs of the same "
        "keys in one transaction makes every new primary-key entry land next to the entry of the row the "
        "same transaction just deleted, which is not yet dead for anyone else: PostgreSQL then tries "
        "bottom-up deletion and deduplication on every full index page before splitting it (the ADBC "
        "reload above pays it too: it is the schema, not the client). The warehouse tables are now "
        "partitioned natively, one leaf table per category and day (`src/category_pipeline/partitions.py`): "
        "a load copies into a new table, builds its primary key in one sort, and swaps it in for the leaf. "
        "The swap locks the category's subtree for milliseconds, in short slices so that a waiting swap "
        "never queues readers behind it (tests/test_load_partitions.py).",
    ])
    print(results + "\n\n" + profile + "\n\n" + "\n".join(verdicts), flush=True)
    common.report("load", "Load into PostgreSQL: the loader vs ADBC vs row-by-row INSERT", body)


if __name__ == "__main__":
    main()
