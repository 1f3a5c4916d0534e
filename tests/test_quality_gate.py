"""The quality gate and failing fast, on the real Airflow (``dag.test()``) and the SQLite
warehouse: a day outside its gate fails validate on the first try and loads nothing (the
partition stays as it was), a manual run can switch the gate off, a deterministic error is
not retried, and a transient one is."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timezone

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

from category_pipeline import quality
from category_pipeline.config import Quality
from tests.conftest import DAGS
from tests.support.ports import free_port

DAY = date(2026, 11, 20)
LOGICAL_DATE = datetime(2026, 11, 20, tzinfo=timezone.utc)
SHIPPED = yaml.safe_load((DAGS / "categories.yaml").read_text())


# -- the rule -----------------------------------------------------------------------------


def test_a_day_within_its_gate_passes():
    quality.check("home", DAY, 1000, 50, Quality())


@pytest.mark.parametrize(
    "rows, quarantined, settings, message",
    [
        (0, 0, {}, "quality gate of home for 2026-11-20: 0 rows, fewer than quality.min_rows = 1; "
                   "nothing was loaded (the warehouse keeps the day as it was)"),
        (999, 0, {"min_rows": 1000}, "quality gate of home for 2026-11-20: 999 rows, fewer than quality.min_rows = "
                                     "1,000; nothing was loaded (the warehouse keeps the day as it was)"),
        (1000, 51, {}, "quality gate of home for 2026-11-20: 51 of 1,000 rows quarantined (5.10%), more than "
                       "quality.max_bad_row_ratio = 5.00%; nothing was loaded (the warehouse keeps the day as it was)"),
        (10, 10, {"max_bad_row_ratio": 0.5}, "quality gate of home for 2026-11-20: 10 of 10 rows quarantined "
                                             "(100.00%), more than quality.max_bad_row_ratio = 50.00%; nothing was "
                                             "loaded (the warehouse keeps the day as it was)"),
    ],
)
def test_a_day_outside_its_gate_is_refused_naming_the_figure_and_its_limit(rows, quarantined, settings, message):
    with pytest.raises(quality.QualityGateError) as raised:
        quality.check("home", DAY, rows, quarantined, Quality(**settings))
    assert str(raised.value) == message


# -- in a DAG run ---------------------------------------------------------------------------


def _bag(tmp_path, monkeypatch, **source) -> dict:
    """The DAGs of one category, home, with ``source`` over small synthetic defaults."""
    defaults = {**SHIPPED["defaults"], "retries": 2, "retry_delay_minutes": 0.02}
    entry = {"name": "home", "source": {"kind": "synthetic", "rows_per_day": 400, "products": 5, **source}}
    path = tmp_path / f"categories-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump({"defaults": defaults, "categories": [entry]}))
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture
def warehouse(airflow_db, tmp_path, monkeypatch):
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_DEFAULT", json.dumps({"conn_type": "sqlite", "host": str(path)}))

    def rows() -> list[tuple]:
        with sqlite3.connect(path) as connection:
            return connection.execute(
                "SELECT order_id, amount FROM orders WHERE category = 'home' AND order_date = ? ORDER BY order_id",
                [DAY.isoformat()],
            ).fetchall()

    return rows


def _task(run, task_id: str) -> TaskInstance:
    with create_session() as session:
        return session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).one()


def test_a_day_outside_its_gate_fails_validate_at_once_and_keeps_the_partition(tmp_path, monkeypatch, warehouse):
    good = _bag(tmp_path, monkeypatch, bad_row_ratio=0.02)["category_home"].test(logical_date=LOGICAL_DATE)
    assert good.state == "success"
    before = warehouse()
    assert before

    # The same day again, now mostly bad rows (25% > 5%): the gate refuses it.
    bad = _bag(tmp_path, monkeypatch, bad_row_ratio=0.25)["category_home"].test(logical_date=LOGICAL_DATE)
    assert bad.state == "failed"
    validate = _task(bad, "process.validate")
    assert validate.state == "failed"
    assert validate.try_number == 1, "a quality gate failure must not be retried"
    assert _task(bad, "load").state == "upstream_failed"
    assert warehouse() == before


def test_an_empty_day_is_not_loaded(tmp_path, monkeypatch, warehouse):
    run = _bag(tmp_path, monkeypatch, rows_per_day=0)["category_home"].test(logical_date=LOGICAL_DATE)
    assert run.state == "failed"
    assert _task(run, "process.validate").try_number == 1
    assert _task(run, "load").state == "upstream_failed"


def test_a_manual_run_can_switch_the_gate_off(tmp_path, monkeypatch, warehouse):
    dags = _bag(tmp_path, monkeypatch, bad_row_ratio=0.25)
    run = dags["category_home"].test(logical_date=LOGICAL_DATE, run_conf={"enforce_quality_gate": False})
    assert run.state == "success"
    assert 0 < len(warehouse()) < 400


def test_a_transient_warehouse_error_is_retried(tmp_path, monkeypatch, warehouse):
    """Nothing listens on the port: connection refused, a transient error, so the load is
    tried 1 + retries times (the retry delay is about a second here)."""
    dags = _bag(tmp_path, monkeypatch)
    dag = dags["category_home"]
    dag.get_task("load").retries = 1
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_DEFAULT", f"postgresql://u:p@127.0.0.1:{free_port()}/warehouse")
    run = dag.test(logical_date=LOGICAL_DATE)
    assert run.state == "failed"
    assert _task(run, "load").try_number == 2
