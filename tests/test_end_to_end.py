"""End to end on the real Airflow (``dag.test()``, SQLite metadata DB and warehouse): a
category DAG and the advanced pipeline run, land rows, and pass only metadata by XCom."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

from category_pipeline.config import load_categories
from tests.conftest import DAGS

DAY = date(2026, 11, 20)
LOGICAL_DATE = datetime(2026, 11, 20, tzinfo=timezone.utc)
CATEGORIES = {c.name: c for c in load_categories(DAGS / "categories.yaml").categories}


@pytest.fixture(scope="module")
def dags(airflow_db):
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert bag.import_errors == {}
    return bag.dags


def _warehouse_rows(sql: str, *params):
    path = json.loads(os.environ["AIRFLOW_CONN_WAREHOUSE_DEFAULT"])["host"]
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, params).fetchall()


def _xcoms(dag_run) -> dict[tuple[str, str], object]:
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}


def test_category_dag_runs_end_to_end_and_reruns_idempotently(dags):
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

    (loaded,) = _warehouse_rows(
        "SELECT COUNT(*) FROM orders WHERE category = ? AND order_date = ?", "fashion", DAY.isoformat()
    )[0]
    assert loaded == clean.num_rows
    metric_orders = _warehouse_rows(
        "SELECT SUM(orders) FROM category_daily_metrics WHERE category = ? AND order_date = ?", "fashion", DAY.isoformat()
    )[0][0]
    assert metric_orders == clean.num_rows

    # XComs carry URIs and counts, never the data: every value is small.
    for key, value in xcoms.items():
        assert len(json.dumps(value, default=str)) < 2_000, key

    second = dag.test(logical_date=LOGICAL_DATE)
    assert second.state == "success"
    assert _warehouse_rows(
        "SELECT COUNT(*) FROM orders WHERE category = ? AND order_date = ?", "fashion", DAY.isoformat()
    )[0][0] == loaded


def test_advanced_pipeline_summarises_every_category(dags):
    dag = dags["advanced_data_pipeline"]
    assert set(dag.task_group.children["processing_tasks"].children) == {
        "processing_tasks.extract",
        "processing_tasks.transform",
    }
    run = dag.test(logical_date=LOGICAL_DATE)
    assert run.state == "success"
    rows = _warehouse_rows(
        "SELECT category, orders, quarantined FROM daily_sales_summary WHERE order_date = ? ORDER BY category",
        DAY.isoformat(),
    )
    assert [r[0] for r in rows] == sorted(CATEGORIES)
    for category, orders, quarantined in rows:
        assert orders + quarantined == CATEGORIES[category].source.rows_per_day
        assert quarantined > 0
