"""The summary follows the data, in laptop mode (real Airflow, ``dag.test()``, SQLite metadata DB
and SQLite warehouse): a category load publishes its asset for the loaded day (extra
``order_date``, partition key = the day), which queues a run of advanced_data_pipeline for that
day; the summary of the day is built from the loaded metrics, is idempotent, and a category
loaded late re-triggers and updates it.

The scheduler is not running here: the test drives its two halves the laptop way. The queued
partition run (what the scheduler turns into a run with that partition key) is read from the
metadata DB; the scheduler's own step that creates the run from it is called once; the summary
itself runs with ``dag.test()`` for the day, as ``make run`` does."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timezone

import pytest
from airflow.dag_processing.dagbag import sync_bag_to_db
from airflow.models.asset import AssetEvent, AssetModel, AssetPartitionDagRun, PartitionedAssetKeyLog
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

from category_pipeline import summary
from category_pipeline.k8s import WAREHOUSE_CONN_ID
from tests.conftest import dag_bag_without_retries

DAY = date(2026, 11, 21)
LOGICAL_DATE = datetime(2026, 11, 21, tzinfo=timezone.utc)
SUMMARY = "advanced_data_pipeline"


@pytest.fixture(scope="module")
def dags(airflow_db):
    bag = dag_bag_without_retries()
    # What the DAG processor does: the summary's asset schedule is known to the metadata DB.
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    # New DAGs start paused, and a paused DAG is not queued by asset events: unpause the summary
    # (as `airflow dags unpause` / the UI's toggle would).
    from airflow.models.dag import DagModel

    with create_session() as session:
        session.get(DagModel, SUMMARY).is_paused = False
    return bag.dags


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv(f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv("PIPELINE_STAGING_URI", str(tmp_path / "staging"))

    def rows(sql: str, *params):
        with sqlite3.connect(path) as connection:
            return connection.execute(sql, params).fetchall()

    return rows


def _xcom(dag_run, task_id: str):
    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id,
                                                 task_id=task_id, key="return_value").one()
        return XComModel.deserialize_value(row)


def _events(category: str) -> list[AssetEvent]:
    """The category's asset events for DAY (the session's metadata database is shared: other
    test modules load other days of the same categories)."""
    with create_session() as session:
        asset = session.query(AssetModel).filter_by(name=f"category_{category}_loaded").one()
        events = (session.query(AssetEvent).filter_by(asset_id=asset.id, partition_key=DAY.isoformat())
                  .order_by(AssetEvent.id).all())
        session.expunge_all()
        return events


def _queued_summary_sources(day: date) -> set[str]:
    """Asset names whose events queued a summary run for ``day`` (the scheduler's input)."""
    with create_session() as session:
        logs = (session.query(PartitionedAssetKeyLog, AssetModel.name)
                .join(AssetModel, AssetModel.id == PartitionedAssetKeyLog.asset_id)
                .filter(PartitionedAssetKeyLog.target_dag_id == SUMMARY,
                        PartitionedAssetKeyLog.target_partition_key == day.isoformat()).all())
        return {name for _, name in logs}


def _summary(warehouse, day: date) -> dict[str, tuple]:
    rows = warehouse("SELECT category, orders, units, revenue, quarantined FROM daily_sales_summary "
                     "WHERE order_date = ? ORDER BY category", day.isoformat())
    return {row[0]: row[1:] for row in rows}


def _loaded_metrics(warehouse, category: str, day: date) -> tuple:
    ((orders, units, revenue),) = warehouse(
        "SELECT SUM(orders), SUM(units), SUM(revenue) FROM category_daily_metrics WHERE category = ? AND order_date = ?",
        category, day.isoformat())
    return orders, units, revenue


def test_category_loads_drive_the_summary_of_their_day(dags, warehouse):
    fashion = dags["category_fashion"].test(logical_date=LOGICAL_DATE)
    assert fashion.state == "success"

    # The load published the category's asset for the day it loaded.
    (event,) = _events("fashion")
    assert event.extra["order_date"] == DAY.isoformat()
    assert event.extra["category"] == "fashion"
    assert event.partition_key == DAY.isoformat()
    assert event.extra["rows_loaded"]["orders"] == _xcom(fashion, "load")["orders"]["loaded"] > 0
    # ... which queued a summary run for that day.
    assert _queued_summary_sources(DAY) == {"category_fashion_loaded"}

    # The scheduler's step turns it into a run whose partition key is the day.
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    with create_session() as session:
        created = SchedulerJobRunner(job=Job())._create_dagruns_for_partitioned_asset_dags(session)
        assert SUMMARY in created
        apdr = session.query(AssetPartitionDagRun).filter_by(target_dag_id=SUMMARY, partition_key=DAY.isoformat()).one()
        from airflow.models.dagrun import DagRun

        run = session.get(DagRun, apdr.created_dag_run_id)
        assert run.partition_key == DAY.isoformat()
        assert run.run_type == "asset_triggered"
        # The day the summary's tasks compute from such a run (no logical date, no conf).
        assert summary.summary_day(run.partition_key, run.conf, None) == DAY

    # The summary of the day, the laptop way: dag.test for the day, from the loaded metrics only.
    first = dags[SUMMARY].test(logical_date=LOGICAL_DATE)
    assert first.state == "success"
    validated = _xcom(fashion, "process.validate")
    orders, units, revenue = _loaded_metrics(warehouse, "fashion", DAY)
    assert _summary(warehouse, DAY) == {"fashion": (orders, units, pytest.approx(revenue), validated["quarantined_rows"])}
    assert orders == validated["clean_rows"]
    transformed = _xcom(first, "processing_tasks.transform")
    assert "fashion" not in transformed["not_loaded"] and "home" in transformed["not_loaded"]
    # No raw orders were landed by the summary: its staging holds its own two small datasets.
    extracted = _xcom(first, "processing_tasks.extract")
    assert extracted == {"order_date": DAY.isoformat(), "loaded_uri": extracted["loaded_uri"], "categories": ["fashion"]}

    # Idempotent: a rerun replaces the partition.
    again = dags[SUMMARY].test(logical_date=LOGICAL_DATE)
    assert again.state == "success"
    assert _xcom(again, "load")["daily_sales_summary"] == {"loaded": 1, "replaced": 1}
    assert list(_summary(warehouse, DAY)) == ["fashion"]

    # A late category: its load of the same day queues the summary of that day again ...
    home = dags["category_home"].test(logical_date=LOGICAL_DATE)
    assert home.state == "success"
    assert _events("home")[-1].partition_key == DAY.isoformat()
    assert "category_home_loaded" in _queued_summary_sources(DAY)
    with create_session() as session:
        pending = session.query(AssetPartitionDagRun).filter_by(
            target_dag_id=SUMMARY, partition_key=DAY.isoformat(), created_dag_run_id=None).count()
        assert pending == 1, "the late load must queue a new summary run of its day"

    # ... and that run, here started with the day in its conf (the manual trigger), updates it.
    late = dags[SUMMARY].test(logical_date=None, run_conf={"order_date": DAY.isoformat()})
    assert late.state == "success"
    result = _summary(warehouse, DAY)
    assert list(result) == ["fashion", "home"]
    assert result["home"][0] == _loaded_metrics(warehouse, "home", DAY)[0]
    assert _xcom(late, "load")["daily_sales_summary"] == {"loaded": 2, "replaced": 1}
    # The summary publishes its own asset for the day.
    with create_session() as session:
        asset = session.query(AssetModel).filter_by(name="daily_sales_summary").one()
        last = session.query(AssetEvent).filter_by(asset_id=asset.id).order_by(AssetEvent.id.desc()).first()
        assert last.extra["order_date"] == DAY.isoformat()


def test_a_day_no_category_has_loaded_fails_saying_so(dags, warehouse):
    run = dags[SUMMARY].test(logical_date=datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert run.state == "failed"


@pytest.mark.parametrize(
    "partition_key,conf,ds,expected",
    [
        ("2026-11-20", {"order_date": "2026-11-01"}, "2026-11-02", date(2026, 11, 20)),
        (None, {"order_date": "2026-11-01"}, "2026-11-02", date(2026, 11, 1)),
        (None, {}, "2026-11-02", date(2026, 11, 2)),
    ],
    ids=["partition-key", "conf", "logical-date"],
)
def test_the_day_of_a_summary_run(partition_key, conf, ds, expected):
    assert summary.summary_day(partition_key, conf, ds) == expected


def test_a_run_without_a_day_is_refused_with_the_fix():
    with pytest.raises(summary.NoSummaryDay, match='trigger it with the conf {"order_date": "YYYY-MM-DD"}'):
        summary.summary_day(None, None, None)
    with pytest.raises(summary.NoSummaryDay, match="conf 'order_date' 'yesterday' is not a date"):
        summary.summary_day(None, {"order_date": "yesterday"}, None)
