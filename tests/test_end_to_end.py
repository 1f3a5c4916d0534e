"""End to end on the real Airflow (``dag.test()``, SQLite metadata DB), against both
warehouses users have: SQLite (the laptop) and a real PostgreSQL (the cluster). A category
DAG and the advanced pipeline run, land rows, and pass only metadata by XCom; a broken
warehouse fails the run at once.

Retries are switched off on the DAGs under test: the shipped `retries: 2` x 5 minutes would
make a broken load take ten minutes to fail."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
import pytest
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

from category_pipeline.config import load_categories
from category_pipeline.k8s import WAREHOUSE_CONN_ID
from tests.conftest import DAGS, dag_bag_without_retries

DAY = date(2026, 11, 20)
LOGICAL_DATE = datetime(2026, 11, 20, tzinfo=timezone.utc)
CATEGORIES = {c.name: c for c in load_categories(DAGS / "categories.yaml").categories}
CONN_ENV = f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"


@pytest.fixture(scope="module")
def dags(airflow_db):
    return dag_bag_without_retries().dags


class SqliteWarehouse:
    def __init__(self, path):
        self.path = path
        self.conn_env = json.dumps({"conn_type": "sqlite", "host": str(path)})

    def rows(self, sql: str, *params):
        with sqlite3.connect(self.path) as connection:
            return connection.execute(sql, params).fetchall()


class PostgresWarehouse:
    def __init__(self, uri: str):
        self.uri = uri
        self.conn_env = uri

    def rows(self, sql: str, *params):
        import psycopg

        with psycopg.connect(self.uri) as connection:
            return connection.execute(sql.replace("?", "%s"), params).fetchall()


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request, tmp_path, monkeypatch):
    """The warehouse the load tasks use, through the same connection variable as in a pod."""
    if request.param == "sqlite":
        target = SqliteWarehouse(tmp_path / "warehouse.db")
    else:
        target = PostgresWarehouse(request.getfixturevalue("new_postgres_database")("e2e"))
    monkeypatch.setenv(CONN_ENV, target.conn_env)
    return target


def _xcoms(dag_run) -> dict[tuple[str, str], object]:
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}


def test_category_dag_runs_end_to_end_and_reruns_idempotently(dags, warehouse):
    dag = dags["category_fashion"]
    first = dag.test(logical_date=LOGICAL_DATE)
    assert first.state == "success"
    xcoms = _xcoms(first)

    validated = xcoms[("process.validate", "return_value")]
    clean = pq.read_table(validated["clean_uri"])
    quarantine = pq.read_table(validated["quarantine_uri"])
    source = CATEGORIES["fashion"].source
    assert clean.num_rows + quarantine.num_rows == source.rows_per_day
    assert validated["quarantined_rows"] == quarantine.num_rows > 0
    assert sum(validated["quarantine_reasons"].values()) == quarantine.num_rows

    count = "SELECT COUNT(*) FROM orders WHERE category = ? AND order_date = ?"
    ((loaded,),) = warehouse.rows(count, "fashion", DAY)
    assert loaded == clean.num_rows
    ((metric_orders,),) = warehouse.rows(
        "SELECT SUM(orders) FROM category_daily_metrics WHERE category = ? AND order_date = ?", "fashion", DAY
    )
    assert metric_orders == clean.num_rows
    assert xcoms[("load", "return_value")]["orders"] == {"loaded": clean.num_rows, "replaced": 0}

    # XComs carry URIs and counts, never the data: every value is small.
    for key, value in xcoms.items():
        assert len(json.dumps(value, default=str)) < 2_000, key

    second = dag.test(logical_date=LOGICAL_DATE)
    assert second.state == "success"
    assert warehouse.rows(count, "fashion", DAY)[0][0] == loaded
    assert _xcoms(second)[("load", "return_value")]["orders"] == {"loaded": loaded, "replaced": loaded}


def test_advanced_pipeline_summarises_every_category(dags, warehouse):
    """The summary reads what the categories loaded for the day (no raw orders again): every
    category's loaded orders plus its quarantined rows make its day's rows."""
    dag = dags["advanced_data_pipeline"]
    assert set(dag.task_group.children["processing_tasks"].children) == {
        "processing_tasks.extract",
        "processing_tasks.transform",
    }
    for category in CATEGORIES:
        assert dags[f"category_{category}"].test(logical_date=LOGICAL_DATE).state == "success"
    run = dag.test(logical_date=LOGICAL_DATE)
    assert run.state == "success"
    rows = warehouse.rows(
        "SELECT category, orders, quarantined FROM daily_sales_summary WHERE order_date = ? ORDER BY category", DAY
    )
    assert [r[0] for r in rows] == sorted(CATEGORIES)
    for category, orders, quarantined in rows:
        assert orders + quarantined == CATEGORIES[category].source.rows_per_day
        assert quarantined > 0


def test_a_broken_warehouse_fails_the_run_at_once(dags, warehouse, monkeypatch, tmp_path):
    """The load cannot reach its warehouse: the run fails on the first try, in seconds."""
    if isinstance(warehouse, SqliteWarehouse):
        broken = json.dumps({"conn_type": "sqlite", "host": str(tmp_path)})  # a folder, not a database file
    else:
        broken = warehouse.uri.rsplit("/", 1)[0] + "/no_such_database"
    monkeypatch.setenv(CONN_ENV, broken)
    started = time.monotonic()
    run = dags["category_home"].test(logical_date=LOGICAL_DATE)
    elapsed = time.monotonic() - started
    assert run.state == "failed"
    with create_session() as session:
        load = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="load").one()
        assert load.state == "failed"
        assert load.try_number == 1
    assert elapsed < 120, f"a failed load took {elapsed:.0f} s to fail the run"
