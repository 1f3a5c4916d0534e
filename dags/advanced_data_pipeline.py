"""Airflow DAG: the cross-category daily sales summary.

start -> processing_tasks (extract -> transform, passing URIs and counts by XCom)
      -> load (CustomLoadOperator) -> end
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import TaskGroup, dag, task
from custom_load_operator import CustomLoadOperator

from category_pipeline import summary
from category_pipeline.config import CategoryFileError, categories_file, load_categories
from category_pipeline.k8s import WAREHOUSE_CONN_ID, load_pod_override
from category_pipeline.schedule import daily_timetable
from category_pipeline.storage import staging_root

try:
    CATEGORIES = load_categories(categories_file(Path(__file__).parent)).categories
except CategoryFileError:
    # An unusable file is reported by category_config_check.py; this DAG stays in the UI
    # (its runs summarise nothing and fail, saying so) instead of vanishing with it.
    CATEGORIES = ()


@dag(
    # Each run summarises its logical date: a scheduled one, the last complete day (schedule.py).
    schedule=daily_timetable("@daily"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["summary"],
    default_args={"owner": "data-platform", "retries": 2},
)
def advanced_data_pipeline():
    start = EmptyOperator(task_id="start")

    with TaskGroup("processing_tasks") as processing_tasks:

        @task
        def extract(ds: str | None = None) -> list[dict]:
            """Land every category's raw orders; only their URIs and row counts go to XCom."""
            return summary.extract_all(list(CATEGORIES), date.fromisoformat(ds), staging_root())

        @task(multiple_outputs=True)
        def transform(extracted: list[dict], ds: str | None = None) -> dict:
            """One summary row per category, from the URIs that extract pushed."""
            return summary.summarize(extracted, date.fromisoformat(ds), staging_root())

        summarized = transform(extract())

    load = CustomLoadOperator(
        task_id="load",
        datasets={"daily_sales_summary": summarized["summary_uri"]},
        partition={"order_date": "{{ ds }}"},
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        # On Kubernetes, the one task of this DAG that gets the warehouse credential.
        executor_config={"pod_override": load_pod_override()},
    )
    end = EmptyOperator(task_id="end")
    start >> processing_tasks >> load >> end


advanced_data_pipeline()
