"""The PostgreSQL warehouse's native partitioning (``partitions``): a load swaps in a table
of its own for its partition. Real loader, real PostgreSQL 15 (the tests' server)."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import date

import psycopg
import pytest

from category_pipeline import partitions
from category_pipeline.loader import _partition_values, load_partition
from category_pipeline.schema import WAREHOUSE_TABLES
from category_pipeline.warehouse import WarehouseTimeout, create_table_sql
from tests.test_loader import _normalized, _stage_orders, _staged_rows

pytestmark = pytest.mark.postgres

DAY = date(2026, 4, 1)
ORDERS = WAREHOUSE_TABLES["orders"]


def _partition(category="home", day=DAY) -> dict:
    return {"category": category, "order_date": day.isoformat()}


def _relations(warehouse) -> dict[str, str]:
    """Every table and index of the warehouse's public schema: name -> relkind."""
    with psycopg.connect(warehouse.target) as connection:
        return dict(connection.execute(
            "SELECT relname, relkind FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace "
            "WHERE nspname = 'public' ORDER BY relname").fetchall())


def _tree(warehouse, root: str) -> list[tuple[str, str]]:
    """(partition, its bound) of every table under ``root``, leaves included."""
    with psycopg.connect(warehouse.target) as connection:
        return connection.execute(
            "SELECT relid::regclass::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_partition_tree(%s) t "
            "JOIN pg_class c ON c.oid = t.relid WHERE t.level > 0 ORDER BY t.level, 1", [root]).fetchall()


def _leaf(category: str, day: date = DAY) -> str:
    return partitions.leaf_name(ORDERS, _partition_values(ORDERS, _partition(category, day)))


def test_each_category_and_day_is_a_partition_of_its_own(tmp_path, postgres_warehouse):
    for category, day in [("home", DAY), ("home", date(2026, 4, 2)), ("toys", DAY)]:
        load_partition(postgres_warehouse, {"orders": _stage_orders(tmp_path, category, day, 500)},
                       _partition(category, day))
    tree = dict(_tree(postgres_warehouse, "orders"))
    assert tree[_leaf("home")] == "FOR VALUES FROM ('2026-04-01') TO ('2026-04-02')"
    assert tree[_leaf("home", date(2026, 4, 2))] == "FOR VALUES FROM ('2026-04-02') TO ('2026-04-03')"
    assert tree[_leaf("toys")] == "FOR VALUES FROM ('2026-04-01') TO ('2026-04-02')"
    assert sorted(bound for bound in tree.values() if bound.startswith("FOR VALUES IN")) == [
        "FOR VALUES IN ('home')", "FOR VALUES IN ('toys')"]
    assert len(tree) == 5
    with psycopg.connect(postgres_warehouse.target) as connection:
        plan = "\n".join(row[0] for row in connection.execute(
            "EXPLAIN SELECT count(*) FROM orders WHERE category = 'home' AND order_date = '2026-04-01'"))
    assert _leaf("home") in plan and _leaf("toys") not in plan  # pruned to the one leaf


def test_a_reload_swaps_the_leaf_and_leaves_nothing_behind(tmp_path, postgres_warehouse):
    first = _stage_orders(tmp_path, "home", DAY, 2_000, 1.0, name="first")
    second = _stage_orders(tmp_path, "home", DAY, 700, 3.0, name="second")
    load_partition(postgres_warehouse, {"orders": first}, _partition())
    before = _relations(postgres_warehouse)
    assert load_partition(postgres_warehouse, {"orders": second}, _partition()) == {
        "orders": {"loaded": 700, "replaced": 2_000}}
    assert _relations(postgres_warehouse) == before  # the same names: no staging table or index left over
    assert _normalized(postgres_warehouse, "orders") == _staged_rows(second, "orders")
    with psycopg.connect(postgres_warehouse.target) as connection:
        pkey = connection.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'", [_leaf("home")]
        ).fetchone()[0]
    assert pkey == f"{_leaf('home')}_pkey"


def test_awkward_category_values_get_distinct_safe_partitions(tmp_path, postgres_warehouse):
    """Names are made identifier-safe, so two values may read the same: the hash of the exact
    value keeps them apart. Quotes and non-ASCII go into the bounds as literals."""
    awkward = ["Home & Garden's", "home_garden_s", "Küche " * 20]
    for category in awkward:
        load_partition(postgres_warehouse, {"orders": _stage_orders(tmp_path, category, DAY, 50)},
                       _partition(category))
    leaves = [_leaf(category) for category in awkward]
    assert len(set(leaves)) == 3 and all(len(name) <= 48 for name in leaves)
    with psycopg.connect(postgres_warehouse.target) as connection:
        counts = dict(connection.execute("SELECT category, count(*) FROM orders GROUP BY category").fetchall())
    assert counts == {category: 50 for category in awkward}


def test_tables_made_before_partitioning_keep_loading_by_delete_and_copy(tmp_path, postgres_warehouse):
    """A warehouse from before native partitioning has plain tables: they keep working."""
    with psycopg.connect(postgres_warehouse.target, autocommit=True) as connection:
        connection.execute(create_table_sql("postgres", ORDERS))
    load_partition(postgres_warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 300)}, _partition())
    again = _stage_orders(tmp_path, "home", DAY, 100, 2.0)
    assert load_partition(postgres_warehouse, {"orders": again}, _partition()) == {
        "orders": {"loaded": 100, "replaced": 300}}
    assert _normalized(postgres_warehouse, "orders") == _staged_rows(again, "orders")
    assert _relations(postgres_warehouse)["orders"] == "r"
    assert not _tree(postgres_warehouse, "orders")


def test_a_waiting_swap_does_not_stall_other_readers(tmp_path, postgres_warehouse):
    """A long report on the category holds its subtree: the reload's swap waits for it in
    short slices, so a second reader of the category still gets through meanwhile (a plain
    queued ACCESS EXCLUSIVE request would hold it until the report ends); at lock_timeout the
    reload gives up, naming the partition, and the warehouse is as it was."""
    load_partition(postgres_warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 300)}, _partition())
    warehouse = dataclasses.replace(postgres_warehouse, lock_timeout=6)
    new = _stage_orders(tmp_path, "home", DAY, 100, 2.0)
    outcome: dict[str, BaseException | dict] = {}

    def reload() -> None:
        try:
            outcome["result"] = load_partition(warehouse, {"orders": new}, _partition())
        except BaseException as exc:  # asserted below
            outcome["error"] = exc

    with psycopg.connect(postgres_warehouse.target) as report:
        report.execute("SELECT count(*) FROM orders WHERE category = 'home'")  # its transaction stays open
        loading = threading.Thread(target=reload, daemon=True)
        loading.start()
        with psycopg.connect(postgres_warehouse.target, autocommit=True) as monitor:
            while loading.is_alive() and not monitor.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%DETACH PARTITION%'"
            ).fetchone():
                time.sleep(0.01)
        assert loading.is_alive(), f"the reload did not wait for the report: {outcome}"
        with psycopg.connect(postgres_warehouse.target, autocommit=True) as reader:
            reader.execute("SET statement_timeout = '5s'")  # fails the test rather than hang it
            assert reader.execute("SELECT count(*) FROM orders WHERE category = 'home'").fetchone()[0] == 300
        assert loading.is_alive(), "the reload must still be waiting for the report"
        loading.join(timeout=60)
        report.rollback()
    error = outcome.get("error")
    assert isinstance(error, WarehouseTimeout), outcome
    assert "waiting 6 s (lock_timeout) for the lock of partition category=home, order_date=2026-04-01 " \
           "of table orders (to swap in the new rows)" in str(error)
    with psycopg.connect(postgres_warehouse.target) as connection:
        assert connection.execute("SELECT count(*), sum(amount) > 0 FROM orders").fetchone() == (300, True)
    assert load_partition(warehouse, {"orders": new}, _partition()) == {"orders": {"loaded": 100, "replaced": 300}}


@pytest.mark.parametrize("day", [date(1, 1, 1), date(9999, 12, 31)], ids=["first date", "last date"])
def test_the_first_and_last_dates_get_partitions(tmp_path, postgres_warehouse, day):
    """Python's last date has no next day: its leaf is bounded by MAXVALUE instead."""
    for price in (1.0, 2.0):  # a load, then a reload
        uri = _stage_orders(tmp_path, "home", day, 20, price)
        result = load_partition(postgres_warehouse, {"orders": uri}, _partition("home", day))
    assert result == {"orders": {"loaded": 20, "replaced": 20}}
    assert _normalized(postgres_warehouse, "orders") == _staged_rows(uri, "orders")


def test_a_null_partition_value_is_refused_naming_it(tmp_path, postgres_warehouse):
    from category_pipeline.loader import LoadError

    with pytest.raises(LoadError, match=r"partition value category=None: a partition needs a value"):
        load_partition(postgres_warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 10)},
                       {"category": None, "order_date": DAY.isoformat()})
    assert "orders" not in _relations(postgres_warehouse)


def test_a_view_in_place_of_a_table_is_refused_naming_it(tmp_path, postgres_warehouse):
    from category_pipeline.loader import LoadError

    with psycopg.connect(postgres_warehouse.target, autocommit=True) as connection:
        connection.execute("CREATE VIEW orders AS SELECT 1 AS one")
    with pytest.raises(LoadError, match=r"orders in the warehouse is not a table \(pg_class.relkind 'v'"):
        load_partition(postgres_warehouse, {"orders": _stage_orders(tmp_path, "home", DAY, 10)}, _partition())
