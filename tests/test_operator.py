"""CustomLoadOperator with the warehouse connection given as Airflow users give it: an
AIRFLOW_CONN_<CONN_ID> environment variable holding a JSON connection."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from urllib.parse import quote, urlsplit

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException
from custom_load_operator import CustomLoadOperator

from category_pipeline import synthetic
from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS
from category_pipeline.storage import write_dataset
from category_pipeline.warehouse import Warehouse, WarehouseConfigError

DAY = date(2026, 5, 6)
CONN_ID = "wh_under_test"
ENV = "AIRFLOW_CONN_WH_UNDER_TEST"


def _stage_orders(tmp_path, rows: int = 1_500, category: str = "home") -> str:
    raw = pa.Table.from_batches(list(synthetic.generate_orders(category, DAY, rows, 12, bad_row_ratio=0.0)))
    amount = [round(q * p, 2) for q, p in zip(raw.column("quantity").to_pylist(), raw.column("unit_price").to_pylist())]
    table = pa.table(
        {
            "category": pa.array([category] * rows),
            "order_date": pa.array([DAY] * rows, pa.date32()),
            **{name: raw.column(name) for name in raw.schema.names},
            "amount": pa.array(amount, pa.float64()),
        }
    ).select(CLEAN_ORDERS.names).cast(CLEAN_ORDERS)
    uri = str(tmp_path / f"orders_{category}.parquet")
    write_dataset(uri, CLEAN_ORDERS, table.to_batches())
    return uri


def _stage_metrics(tmp_path, products: int = 4, category: str = "home") -> str:
    rows = [
        {"category": category, "order_date": DAY, "product_id": f"P{i}", "orders": 1, "units": 2, "revenue": 3.5}
        for i in range(products)
    ]
    uri = str(tmp_path / f"metrics_{category}.parquet")
    write_dataset(uri, PRODUCT_METRICS, [pa.RecordBatch.from_pylist(rows, PRODUCT_METRICS)])
    return uri


def _operator(datasets, category="home", **kwargs) -> CustomLoadOperator:
    return CustomLoadOperator(
        task_id="load",
        datasets=datasets,
        partition={"category": category, "order_date": DAY.isoformat()},
        warehouse_conn_id=CONN_ID,
        **kwargs,
    )


def _postgres_connection(warehouse: Warehouse, **extra) -> dict:
    parts = urlsplit(warehouse.target)
    return {
        "conn_type": "postgres",
        "host": parts.hostname,
        "port": parts.port,
        "login": parts.username,
        "schema": parts.path.lstrip("/"),
        **extra,
    }


def _count(warehouse: Warehouse, table: str, category: str = "home") -> int:
    connection = warehouse.connect()
    try:
        marker = "%s" if warehouse.dialect == "postgres" else "?"
        query = f"SELECT count(*) FROM {table} WHERE category = {marker}"
        return connection.execute(query, [category]).fetchone()[0]
    finally:
        connection.close()


def test_execute_loads_into_sqlite_connection_from_env(tmp_path, monkeypatch):
    database = tmp_path / "warehouse.db"
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "sqlite", "host": str(database)}))
    orders, metrics = _stage_orders(tmp_path), _stage_metrics(tmp_path)
    result = _operator({"orders": orders, "category_daily_metrics": metrics}).execute(context={})
    assert result == {
        "orders": {"loaded": pq.read_metadata(orders).num_rows, "replaced": 0},
        "category_daily_metrics": {"loaded": 4, "replaced": 0},
    }
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone()[0] == pq.read_metadata(orders).num_rows
        assert connection.execute("SELECT count(*) FROM category_daily_metrics").fetchone()[0] == 4


def test_rerun_replaces_the_partition(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}))
    orders = _stage_orders(tmp_path, rows=800)
    _operator({"orders": orders}).execute(context={})
    result = _operator({"orders": orders}).execute(context={})
    assert result == {"orders": {"loaded": 800, "replaced": 800}}
    assert _count(Warehouse("sqlite", str(tmp_path / "warehouse.db")), "orders") == 800


@pytest.mark.postgres
def test_execute_loads_into_postgres_connection_from_env(tmp_path, monkeypatch, postgres_warehouse):
    monkeypatch.setenv(ENV, json.dumps(_postgres_connection(postgres_warehouse)))
    orders = _stage_orders(tmp_path, rows=2_000)
    result = _operator({"orders": orders}).execute(context={})
    assert result == {"orders": {"loaded": 2_000, "replaced": 0}}
    assert _count(postgres_warehouse, "orders") == 2_000


@pytest.mark.postgres
def test_postgres_password_with_uri_characters_is_passed_intact(tmp_path, monkeypatch, postgres_warehouse, postgres_dsn):
    """A password with URI characters must not break the host, port, user or database
    (the test server trusts loopback, so it is the parsing that is checked)."""
    password = "p@ss:w/rd?#%"
    user = f"loader_{postgres_warehouse.target.rsplit('_', 1)[-1]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
    try:
        connection = _postgres_connection(postgres_warehouse, login=user, password=password)
        monkeypatch.setenv(ENV, json.dumps(connection))
        result = _operator({"orders": _stage_orders(tmp_path, rows=300)}).execute(context={})
        assert result == {"orders": {"loaded": 300, "replaced": 0}}
        assert _count(postgres_warehouse, "orders") == 300
        with psycopg.connect(postgres_warehouse.target) as check:  # it connected as that user
            assert check.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'").fetchone() == (user,)
    finally:
        with psycopg.connect(postgres_warehouse.target, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {user} CASCADE")
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {user}")


@pytest.mark.parametrize("conn_type", ["mysql", "http", None])
def test_unsupported_connection_type_is_refused_naming_the_connection(tmp_path, monkeypatch, conn_type):
    monkeypatch.setenv(ENV, json.dumps({"conn_type": conn_type, "host": "db.example", "password": "secret-pw"}))
    # A config error: the task fails at once (no retries), with the config error as its cause.
    with pytest.raises(AirflowFailException, match=CONN_ID) as raised:
        _operator({"orders": _stage_orders(tmp_path, rows=10)}).execute(context={})
    assert isinstance(raised.value.__cause__, WarehouseConfigError)
    assert "secret-pw" not in str(raised.value)


def test_postgres_connection_without_host_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "postgres", "login": "u", "schema": "db"}))
    with pytest.raises(AirflowFailException, match=CONN_ID) as raised:
        _operator({"orders": _stage_orders(tmp_path, rows=10)}).execute(context={})
    assert isinstance(raised.value.__cause__, WarehouseConfigError)


def test_datasets_and_partition_are_templated():
    assert {"datasets", "partition"} <= set(CustomLoadOperator.template_fields)


def test_partition_template_renders_the_logical_date(tmp_path):
    operator = CustomLoadOperator(
        task_id="load",
        datasets={"orders": "{{ params.root }}/{{ ds }}/clean_orders.parquet"},
        partition={"category": "home", "order_date": "{{ ds }}"},
    )
    operator.render_template_fields({"ds": DAY.isoformat(), "params": {"root": str(tmp_path)}})
    assert operator.partition == {"category": "home", "order_date": DAY.isoformat()}
    assert operator.datasets == {"orders": f"{tmp_path}/{DAY.isoformat()}/clean_orders.parquet"}


PASSWORDS = ["s3cr3t-pass", "p@ss:w/rd", "100%sure", "with space", "ünïcødé-pw"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_warehouse_repr_from_connection_hides_the_password(password):
    warehouse = Warehouse.from_connection(CONN_ID, "postgres", host="db", port=5432, login="u", password=password, schema="wh")
    for text in (repr(warehouse), str(warehouse), f"{warehouse!r}"):
        assert password not in text
        assert quote(password, safe="") not in text
        assert "db:5432/wh" in text  # still says where it points


@pytest.mark.parametrize("password", ["s3cr3t-pass", "hunter2hunter2"])
def test_warehouse_repr_from_uri_hides_the_password(password):
    warehouse = Warehouse.from_uri(f"postgresql://u:{password}@db:5432/wh")
    assert password not in repr(warehouse)
    assert "db:5432/wh" in repr(warehouse)
