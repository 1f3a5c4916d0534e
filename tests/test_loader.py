"""Loading staged datasets into the warehouse: complete, idempotent, atomic; on SQLite and
on a real PostgreSQL (the ``warehouse`` fixture runs each test on both)."""

from __future__ import annotations

import functools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from category_pipeline import loader, synthetic
from category_pipeline.loader import LoadError, load_partition
from category_pipeline.schema import CLEAN_ORDERS, DAILY_SUMMARY, PRODUCT_METRICS, WAREHOUSE_TABLES
from category_pipeline.storage import BATCH_ROWS, read_batches, write_dataset

DAY = date(2026, 4, 1)
NEXT_DAY = DAY + timedelta(days=1)


def _partition(category="home", day=DAY) -> dict:
    return {"category": category, "order_date": day.isoformat()}


def _clean_batches(category: str, day: date, rows: int, price_factor: float = 1.0, batch_rows: int = 500_000):
    """Valid clean orders of one partition (from the synthetic generator, good rows only)."""
    for raw in synthetic.generate_orders(category, day, rows, 50, bad_row_ratio=0.0, batch_rows=batch_rows):
        n = raw.num_rows
        price = pc.round(pc.multiply(raw.column("unit_price"), price_factor), 2)
        amount = pc.round(pc.multiply(pc.cast(raw.column("quantity"), pa.float64()), price), 2)
        columns = {
            **{name: raw.column(name) for name in raw.schema.names},
            "category": pa.repeat(pa.scalar(category), n),
            "order_date": pa.repeat(pa.scalar(day, pa.date32()), n),
            "unit_price": price,
            "amount": amount,
        }
        yield pa.RecordBatch.from_arrays([columns[name] for name in CLEAN_ORDERS.names], schema=CLEAN_ORDERS)


def _stage(tmp_path, name: str, batches, schema=CLEAN_ORDERS) -> str:
    uri = str(tmp_path / f"{name}.parquet")
    write_dataset(uri, schema, batches)
    return uri


def _stage_orders(tmp_path, category="home", day=DAY, rows=2_000, price_factor=1.0, name=None) -> str:
    name = name or f"orders_{category}_{day}_{rows}_{price_factor}"
    return _stage(tmp_path, name, _clean_batches(category, day, rows, price_factor))


def _rows(uri: str) -> int:
    return pq.read_metadata(uri).num_rows


def _contents(warehouse, table: str):
    """Every row of ``table`` in primary-key order, or None if the table does not exist."""
    order = ", ".join(WAREHOUSE_TABLES[table].primary_key)
    connection = warehouse.connect()
    try:
        return [tuple(row) for row in connection.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()]
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return None
    finally:
        connection.close()


def _normalized(warehouse, table: str) -> list[dict]:
    """Rows as dicts of Python values comparable with Arrow's to_pylist()."""
    names = WAREHOUSE_TABLES[table].schema.names
    rows = [dict(zip(names, row)) for row in _contents(warehouse, table) or []]
    if warehouse.dialect == "sqlite":  # dates and timestamps are ISO text there
        for row in rows:
            if row.get("order_date") is not None:
                row["order_date"] = date.fromisoformat(row["order_date"])
            if row.get("ordered_at") is not None:
                row["ordered_at"] = datetime.fromisoformat(row["ordered_at"])
    return rows


def _staged_rows(uri: str, table: str) -> list[dict]:
    key = WAREHOUSE_TABLES[table].primary_key
    return sorted(pq.read_table(uri).to_pylist(), key=lambda row: tuple(str(row[k]) for k in key))


# --- loading ---------------------------------------------------------------------------


def test_load_inserts_every_staged_row(tmp_path, warehouse):
    uri = _stage_orders(tmp_path, rows=5_000)
    result = load_partition(warehouse, {"orders": uri}, _partition())
    assert result == {"orders": {"loaded": _rows(uri), "replaced": 0}}
    assert len(_contents(warehouse, "orders")) == _rows(uri)


def test_loaded_values_round_trip(tmp_path, warehouse):
    uri = _stage_orders(tmp_path, rows=2_000)
    load_partition(warehouse, {"orders": uri}, _partition())
    assert _normalized(warehouse, "orders") == _staged_rows(uri, "orders")


def test_null_empty_and_awkward_strings_round_trip(tmp_path, warehouse):
    customers = [None, "", "a,b", 'say "hi"', "line\nbreak", "ünïcødé", "\\N", " padded ", "NULL"]
    batch = next(_clean_batches("home", DAY, len(customers)))
    batch = batch.set_column(batch.schema.get_field_index("customer_id"), "customer_id", pa.array(customers, pa.string()))
    uri = _stage(tmp_path, "awkward", [batch])
    load_partition(warehouse, {"orders": uri}, _partition())
    loaded = {row["order_id"]: row["customer_id"] for row in _normalized(warehouse, "orders")}
    assert loaded == dict(zip(batch.column("order_id").to_pylist(), customers))


@pytest.mark.postgres
def test_nulls_special_floats_and_extreme_timestamps_round_trip(tmp_path, postgres_warehouse):
    """PostgreSQL gets a binary COPY (pg_copy.py): every type's NULL, NaN, infinities, -0.0,
    timestamps before 1970 and far ahead must come back exactly. (Not SQLite: it stores NaN
    as NULL.)"""
    warehouse = postgres_warehouse
    from datetime import timezone

    utc = timezone.utc
    stamps = [datetime(1, 1, 1, tzinfo=utc), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=utc),
              datetime(2000, 1, 1, tzinfo=utc), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc), None]
    floats = [float("nan"), float("inf"), float("-inf"), -0.0, None]
    quantities = [-(2**31), 2**31 - 1, 0, None, 7]
    batch = next(_clean_batches("home", DAY, len(stamps)))
    for name, values in (("ordered_at", stamps), ("unit_price", floats), ("amount", floats[::-1]),
                         ("quantity", quantities), ("customer_id", [None, "x", None, "", None])):
        index = batch.schema.get_field_index(name)
        batch = batch.set_column(index, name, pa.array(values, batch.schema.field(name).type))
    uri = _stage(tmp_path, "extremes", [batch])
    load_partition(warehouse, {"orders": uri}, _partition())

    def comparable(value):  # NaN != NaN, and -0.0 == 0.0: compare their representations
        return repr(value) if isinstance(value, float) else value

    loaded = sorted(_normalized(warehouse, "orders"), key=lambda row: row["order_id"])
    staged = sorted(batch.to_pylist(), key=lambda row: row["order_id"])
    assert [{k: comparable(v) for k, v in row.items()} for row in loaded] == \
        [{k: comparable(v) for k, v in row.items()} for row in staged]


def test_partition_given_as_date_object(tmp_path, warehouse):
    uri = _stage_orders(tmp_path, rows=100)
    result = load_partition(warehouse, {"orders": uri}, {"category": "home", "order_date": DAY})
    assert result["orders"]["loaded"] == 100


def test_orders_and_metrics_load_in_one_call(tmp_path, warehouse):
    orders = _stage_orders(tmp_path, rows=1_000)
    metrics = _stage(tmp_path, "metrics", _metrics_batches("home", DAY, 7), PRODUCT_METRICS)
    result = load_partition(warehouse, {"orders": orders, "category_daily_metrics": metrics}, _partition())
    assert result == {
        "orders": {"loaded": 1_000, "replaced": 0},
        "category_daily_metrics": {"loaded": 7, "replaced": 0},
    }
    assert _normalized(warehouse, "category_daily_metrics") == _staged_rows(metrics, "category_daily_metrics")


def _metrics_batches(category: str, day: date, products: int, units: int = 3):
    rows = [
        {
            "category": category,
            "order_date": day,
            "product_id": f"P{i:03d}",
            "orders": i + 1,
            "units": units * (i + 1),
            "revenue": 10.25 * (i + 1),
        }
        for i in range(products)
    ]
    return [pa.RecordBatch.from_pylist(rows, PRODUCT_METRICS)]


# --- idempotency -----------------------------------------------------------------------


def test_loading_twice_replaces_instead_of_doubling(tmp_path, warehouse):
    uri = _stage_orders(tmp_path, rows=3_000)
    load_partition(warehouse, {"orders": uri}, _partition())
    first = _contents(warehouse, "orders")
    result = load_partition(warehouse, {"orders": uri}, _partition())
    assert result == {"orders": {"loaded": _rows(uri), "replaced": _rows(uri)}}
    assert _contents(warehouse, "orders") == first


def test_reload_with_other_data_replaces_the_whole_partition(tmp_path, warehouse):
    old = _stage_orders(tmp_path, rows=3_000)
    new = _stage_orders(tmp_path, rows=1_000, price_factor=2.0)
    load_partition(warehouse, {"orders": old}, _partition())
    result = load_partition(warehouse, {"orders": new}, _partition())
    assert result == {"orders": {"loaded": 1_000, "replaced": 3_000}}
    assert _normalized(warehouse, "orders") == _staged_rows(new, "orders")


def test_reload_leaves_other_partitions_untouched(tmp_path, warehouse):
    load_partition(warehouse, {"orders": _stage_orders(tmp_path, "fashion", DAY, 700)}, _partition("fashion", DAY))
    load_partition(warehouse, {"orders": _stage_orders(tmp_path, "home", NEXT_DAY, 800)}, _partition("home", NEXT_DAY))
    load_partition(warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 900)}, _partition())
    others = [row for row in _contents(warehouse, "orders") if row[0] != "home" or str(row[1]) != str(DAY)]
    assert len(others) == 1_500

    result = load_partition(warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 400, 3.0)}, _partition())
    assert result["orders"]["replaced"] == 900
    after = _contents(warehouse, "orders")
    assert [row for row in after if row[0] != "home" or str(row[1]) != str(DAY)] == others
    assert len(after) == 1_500 + 400


def test_summary_partition_is_the_day_across_categories(tmp_path, warehouse):
    def summary(day, categories, orders):
        rows = [
            {"order_date": day, "category": c, "orders": orders, "units": 2 * orders, "revenue": 1.5, "quarantined": 1}
            for c in categories
        ]
        return [pa.RecordBatch.from_pylist(rows, DAILY_SUMMARY)]

    neighbour = _stage(tmp_path, "s0", summary(NEXT_DAY, ["home"], 9), DAILY_SUMMARY)
    load_partition(warehouse, {"daily_sales_summary": neighbour}, {"order_date": NEXT_DAY.isoformat()})
    first = _stage(tmp_path, "s1", summary(DAY, ["home", "fashion", "toys"], 5), DAILY_SUMMARY)
    second = _stage(tmp_path, "s2", summary(DAY, ["home", "fashion"], 6), DAILY_SUMMARY)
    load_partition(warehouse, {"daily_sales_summary": first}, {"order_date": DAY.isoformat()})
    result = load_partition(warehouse, {"daily_sales_summary": second}, {"order_date": DAY.isoformat()})
    assert result == {"daily_sales_summary": {"loaded": 2, "replaced": 3}}
    rows = _normalized(warehouse, "daily_sales_summary")
    assert sorted((r["order_date"], r["category"], r["orders"]) for r in rows) == [
        (DAY, "fashion", 6),
        (DAY, "home", 6),
        (NEXT_DAY, "home", 9),
    ]


# --- atomicity -------------------------------------------------------------------------


def _warehouse_with_history(tmp_path, warehouse) -> None:
    """A previous version of the partition under test, and a neighbouring partition."""
    load_partition(warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 1_500, 0.5)}, _partition())
    load_partition(warehouse, {"orders": _stage_orders(tmp_path, "fashion", DAY, 500)}, _partition("fashion"))
    load_partition(
        warehouse,
        {"category_daily_metrics": _stage(tmp_path, "old_metrics", _metrics_batches("home", DAY, 5, units=1), PRODUCT_METRICS)},
        _partition(),
    )


@functools.cache
def _more_than_one_batch() -> pa.Table:
    return pa.Table.from_batches(list(_clean_batches("home", DAY, BATCH_ROWS + 5_000)), CLEAN_ORDERS)


def _dataset_with_bad_last_rows(tmp_path, name: str, spoil, big: bool = True) -> str:
    """Valid orders whose last three rows are changed by ``spoil``. ``big``: more rows
    than the loader reads in one batch, so that the bad rows arrive in the last batch."""
    table = _more_than_one_batch() if big else pa.Table.from_batches(list(_clean_batches("home", DAY, 50)))
    rows = table.num_rows
    head, tail = table.slice(0, rows - 3), table.slice(rows - 3).to_pylist()
    tail = pa.Table.from_pylist([spoil(row, table) for row in tail], CLEAN_ORDERS)
    uri = _stage(tmp_path, name, head.to_batches() + tail.to_batches())
    if big:
        assert len(list(read_batches(uri))) > 1
    return uri


def _assert_failed_load_changes_nothing(warehouse, datasets, expected_error) -> None:
    before = {table: _contents(warehouse, table) for table in WAREHOUSE_TABLES}
    with pytest.raises(expected_error):
        load_partition(warehouse, datasets, _partition())
    assert {table: _contents(warehouse, table) for table in WAREHOUSE_TABLES} == before


def test_duplicate_key_in_last_batch_leaves_table_as_before(tmp_path, warehouse):
    _warehouse_with_history(tmp_path, warehouse)

    def duplicate_first_order(row, table):
        return dict(row, order_id=table.column("order_id")[0].as_py())

    uri = _dataset_with_bad_last_rows(tmp_path, "dup", duplicate_first_order)
    _assert_failed_load_changes_nothing(warehouse, {"orders": uri}, LoadError)
    with pytest.raises(LoadError, match=rf"dataset {re.escape(uri)} holds two rows with one primary key "
                                        r"\(category, order_date, order_id\) of table orders: ") as failure:
        load_partition(warehouse, {"orders": uri}, _partition())
    if warehouse.dialect == "postgres":  # SQLite does not say which key
        assert "(home, 2026-04-01, home-20260401-00000001) is duplicated" in str(failure.value)


@pytest.mark.parametrize(
    "change,big",
    [({"order_date": NEXT_DAY}, True), ({"category": "fashion"}, False), ({"category": None}, False)],
    ids=["other day in last batch", "other category", "null category"],
)
def test_row_outside_partition_leaves_table_as_before(tmp_path, warehouse, change, big):
    _warehouse_with_history(tmp_path, warehouse)
    uri = _dataset_with_bad_last_rows(tmp_path, "stray", lambda row, table: dict(row, **change), big)
    _assert_failed_load_changes_nothing(warehouse, {"orders": uri}, LoadError)


def test_row_outside_partition_is_named_in_the_error(tmp_path, warehouse):
    batch = next(_clean_batches("home", DAY, 10))
    rows = batch.to_pylist()
    rows[-1]["order_date"] = NEXT_DAY
    uri = _stage(tmp_path, "stray", [pa.RecordBatch.from_pylist(rows, CLEAN_ORDERS)])
    with pytest.raises(LoadError, match=re.escape(f"order_date={NEXT_DAY!r} outside the partition")):
        load_partition(warehouse, {"orders": uri}, _partition())


def test_failure_in_second_table_leaves_first_table_unchanged(tmp_path, warehouse):
    _warehouse_with_history(tmp_path, warehouse)
    orders = _stage_orders(tmp_path, "home", DAY, 2_000, 4.0)
    bad_metrics = _metrics_batches("home", DAY, 5)
    rows = bad_metrics[0].to_pylist()
    rows[-1]["order_date"] = NEXT_DAY
    metrics = _stage(tmp_path, "bad_metrics", [pa.RecordBatch.from_pylist(rows, PRODUCT_METRICS)], PRODUCT_METRICS)
    _assert_failed_load_changes_nothing(warehouse, {"orders": orders, "category_daily_metrics": metrics}, LoadError)


def test_failed_load_into_empty_warehouse_leaves_no_rows(tmp_path, warehouse):
    uri = _dataset_with_bad_last_rows(tmp_path, "stray", lambda row, table: dict(row, category="toys"), big=False)
    with pytest.raises(LoadError):
        load_partition(warehouse, {"orders": uri}, _partition())
    assert not _contents(warehouse, "orders")  # no table, or an empty one


KILLED_LOAD = textwrap.dedent(
    """
    import sys
    from category_pipeline.loader import load_partition
    from category_pipeline.warehouse import Warehouse

    target, uri, category, day = sys.argv[1:]
    load_partition(Warehouse.from_uri(target), {"orders": uri}, {"category": category, "order_date": day})
    """
)


def _not_stuck(started: float) -> None:
    # A guard against hanging the suite, not a performance check.
    if time.monotonic() - started > 120:
        pytest.fail("gave up waiting (120 s)")


@pytest.mark.postgres
def test_load_killed_mid_copy_leaves_table_as_before(tmp_path, postgres_warehouse):
    warehouse = postgres_warehouse
    _warehouse_with_history(tmp_path, warehouse)
    before = {table: _contents(warehouse, table) for table in WAREHOUSE_TABLES}
    big = _stage(tmp_path, "big", _clean_batches("home", DAY, 2_000_000, 1.5, batch_rows=1_000_000))
    total = _rows(big)

    started = time.monotonic()
    load = subprocess.Popen([sys.executable, "-c", KILLED_LOAD, warehouse.target, big, "home", DAY.isoformat()])
    try:
        with psycopg.connect(warehouse.target, autocommit=True) as monitor:
            progress = None
            while progress is None:
                assert load.poll() is None, "the load ended before it was seen copying"
                _not_stuck(started)
                progress = monitor.execute(
                    "SELECT pid, tuples_processed FROM pg_stat_progress_copy "
                    "WHERE datname = current_database() AND command = 'COPY FROM' AND tuples_processed > 0"
                ).fetchone()
                time.sleep(0.005)
            os.kill(load.pid, signal.SIGKILL)
            load.wait()
            backend, copied = progress
            assert 0 < copied < total  # killed in the middle of the COPY
            # The server notices the dead client and rolls back; wait until its backend is gone.
            while monitor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]).fetchone():
                _not_stuck(started)
                time.sleep(0.02)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == -signal.SIGKILL

    assert {table: _contents(warehouse, table) for table in WAREHOUSE_TABLES} == before
    home_before = sum(1 for row in before["orders"] if row[0] == "home")
    again = _stage_orders(tmp_path, "home", DAY, 1_000, 2.0)
    result = load_partition(warehouse, {"orders": again}, _partition())
    assert result == {"orders": {"loaded": 1_000, "replaced": home_before}}


# --- concurrency -----------------------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_loads_of_one_partition_queue_up(tmp_path, postgres_warehouse, monkeypatch):
    """Two concurrent loads of one partition (two threads, two connections, real PostgreSQL,
    real loader) run one after the other: both succeed and the partition ends up holding
    exactly the second load's rows, never a mix of the two. Guards ``_lock_partition``.

    The wrap of ``_copy_postgres`` only controls timing: the first load pauses inside its
    transaction, after its COPY, until the second load is seen blocked on a lock (or has
    ended), so the two transactions surely overlap where they would conflict."""
    warehouse = postgres_warehouse
    _warehouse_with_history(tmp_path, warehouse)  # tables exist; 1,500 older rows in the partition
    first_uri = _stage_orders(tmp_path, "home", DAY, 3_000, 1.0, name="first")
    # Order ids overlap the first load's (same generator), amounts differ: a mix would show.
    second_uri = _stage_orders(tmp_path, "home", DAY, 1_000, 2.0, name="second")

    first_copied, release_first = threading.Event(), threading.Event()
    real_copy = loader._copy_postgres

    def copy_then_pause_in_first_load(connection, table, batches):
        rows = real_copy(connection, table, batches)
        if threading.current_thread().name == "first-load":
            first_copied.set()
            release_first.wait(timeout=60)
        return rows

    monkeypatch.setattr(loader, "_copy_postgres", copy_then_pause_in_first_load)

    results, errors = {}, {}

    def run(name, uri):
        try:
            results[name] = load_partition(warehouse, {"orders": uri}, _partition())
        except BaseException as exc:  # reported by the asserts below
            errors[name] = exc

    first = threading.Thread(target=run, args=("first", first_uri), name="first-load", daemon=True)
    second = threading.Thread(target=run, args=("second", second_uri), name="second-load", daemon=True)
    started = time.monotonic()
    try:
        first.start()
        assert first_copied.wait(timeout=30), f"the first load never reached its COPY: {errors}"
        second.start()
        # Wait until the second load's backend is blocked on a lock held by the paused first
        # load (or the second load has ended, which it must not do while the first is paused).
        with psycopg.connect(warehouse.target, autocommit=True) as monitor:
            while second.is_alive() and time.monotonic() - started < 30:
                waiting = monitor.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting:
                    break
                time.sleep(0.01)
        second_ended_while_first_paused = not second.is_alive()
    finally:
        release_first.set()
        first.join(timeout=60)
        second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive(), "a load did not finish"

    assert errors == {}
    assert not second_ended_while_first_paused, "the second load did not wait for the first"
    assert results["first"] == {"orders": {"loaded": 3_000, "replaced": 1_500}}
    assert results["second"] == {"orders": {"loaded": 1_000, "replaced": 3_000}}
    home = [row for row in _normalized(warehouse, "orders") if row["category"] == "home"]
    assert home == _staged_rows(second_uri, "orders")


# --- refused loads ---------------------------------------------------------------------


def test_unknown_table_is_refused_by_name(tmp_path, warehouse):
    with pytest.raises(LoadError, match="no_such_table"):
        load_partition(warehouse, {"no_such_table": _stage_orders(tmp_path, rows=10)}, _partition())


@pytest.mark.parametrize(
    "table,partition",
    [
        ("orders", {"order_date": DAY.isoformat()}),
        ("orders", {"category": "home", "order_date": DAY.isoformat(), "region": "eu"}),
        ("orders", {"category": "home", "day": DAY.isoformat()}),
        ("daily_sales_summary", {"category": "home", "order_date": DAY.isoformat()}),
    ],
    ids=["missing key", "extra key", "wrong key", "summary with category"],
)
def test_partition_keys_not_matching_the_table_are_refused(tmp_path, warehouse, table, partition):
    with pytest.raises(LoadError, match=table):
        load_partition(warehouse, {table: _stage_orders(tmp_path, rows=10)}, partition)
    assert _contents(warehouse, table) is None


def test_dataset_missing_a_column_is_refused_naming_it(tmp_path, warehouse):
    table = pa.Table.from_batches(list(_clean_batches("home", DAY, 10))).drop_columns(["amount"])
    uri = _stage(tmp_path, "no_amount", table.to_batches(), table.schema)
    with pytest.raises(LoadError, match="'amount'"):
        load_partition(warehouse, {"orders": uri}, _partition())
    assert _contents(warehouse, "orders") is None


@pytest.mark.parametrize(
    "column,type_",
    [("quantity", pa.int64()), ("order_date", pa.string()), ("ordered_at", pa.timestamp("ms", tz="UTC"))],
)
def test_dataset_column_of_wrong_type_is_refused_naming_it(tmp_path, warehouse, column, type_):
    table = pa.Table.from_batches(list(_clean_batches("home", DAY, 10)))
    index = table.schema.get_field_index(column)
    table = table.set_column(index, column, table.column(column).cast(type_, safe=False))
    uri = _stage(tmp_path, "wrong_type", table.to_batches(), table.schema)
    with pytest.raises(LoadError, match=f"'{column}'"):
        load_partition(warehouse, {"orders": uri}, _partition())
    assert _contents(warehouse, "orders") is None


@pytest.mark.parametrize("value", ["2026-02-30", "yesterday", "", "01/04/2026"])
def test_partition_value_that_is_not_a_date_is_refused(tmp_path, warehouse, value):
    load_partition(warehouse, {"orders": _stage_orders(tmp_path, rows=300)}, _partition())
    before = _contents(warehouse, "orders")
    with pytest.raises(LoadError, match="order_date"):
        load_partition(warehouse, {"orders": _stage_orders(tmp_path, rows=10)}, {"category": "home", "order_date": value})
    assert _contents(warehouse, "orders") == before
