"""Build the DAG of one product category: start -> extract -> process -> load -> end.

Process (validate, compute_metrics) and load carry a pod override, so that under the
KubernetesExecutor they run as pods sized for the category; under the local executor
the same tasks just run.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup, task

from category_pipeline.config import Category
from category_pipeline.k8s import WAREHOUSE_CONN_ID, pod_override
from category_pipeline.schedule import daily_timetable

# The data steps (pyarrow) are imported inside the tasks: parsing the DAGs never needs them.


def build_category_dag(category: Category, load_operator: type) -> DAG:
    """``load_operator`` is the plugin's CustomLoadOperator (passed in: plugins are not a package)."""
    name = category.name
    with DAG(
        dag_id=category.dag_id,
        description=category.description or f"Daily orders pipeline of the {name} category",
        # Each run processes its logical date: a scheduled one, the last complete day (schedule.py).
        schedule=daily_timetable(category.schedule),
        start_date=datetime.combine(category.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["category", name],
        default_args={
            "owner": category.owner,
            "retries": category.retries,
            "retry_delay": timedelta(minutes=category.retry_delay_minutes),
        },
        doc_md=(
            f"Generated from the `{name}` entry of `categories.yaml`.\n\n"
            "Each run processes one order date, its **logical date**: a scheduled run the last "
            "complete day before its run time (its data interval), a manual run the date it is "
            "given. The load replaces that date's partition of `orders` and `category_daily_metrics`."
        ),
    ) as dag:
        process_pod = {"pod_override": pod_override(category, "process")}

        @task
        def extract(ds: str | None = None) -> dict:
            from category_pipeline.extract import extract as extract_orders
            from category_pipeline.storage import staging_root

            return extract_orders(category, date.fromisoformat(ds), staging_root())

        @task(multiple_outputs=True, executor_config=process_pod)
        def validate(extracted: dict, ds: str | None = None) -> dict:
            from category_pipeline.process import validate as validate_orders
            from category_pipeline.storage import dataset_uri, staging_root

            day = date.fromisoformat(ds)
            root = staging_root()
            return validate_orders(
                extracted["raw_uri"],
                extracted["catalog_uri"],
                name,
                day,
                clean_uri=dataset_uri(root, name, day, "clean_orders"),
                quarantine_uri=dataset_uri(root, name, day, "quarantine"),
            )

        @task(multiple_outputs=True, executor_config=process_pod)
        def compute_metrics(clean_uri: str, ds: str | None = None) -> dict:
            from category_pipeline.process import compute_metrics as metrics_of
            from category_pipeline.storage import dataset_uri, staging_root

            return metrics_of(clean_uri, dataset_uri(staging_root(), name, ds, "metrics"))

        start = EmptyOperator(task_id="start")
        extracted = extract()
        with TaskGroup("process", tooltip="validate, quarantine, compute metrics"):
            validated = validate(extracted)
            metrics = compute_metrics(validated["clean_uri"])
        load = load_operator(
            task_id="load",
            datasets={"orders": validated["clean_uri"], "category_daily_metrics": metrics["metrics_uri"]},
            partition={"category": name, "order_date": "{{ ds }}"},
            warehouse_conn_id=WAREHOUSE_CONN_ID,
            executor_config={"pod_override": pod_override(category, "load")},
        )
        end = EmptyOperator(task_id="end")
        start >> extracted
        load >> end
    return dag
