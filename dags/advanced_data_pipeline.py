"""### advanced_data_pipeline: the cross-category daily sales summary

**What it reads**: only what the category DAGs have loaded, never raw orders. For its day D:
per category, orders, units and revenue summed from the warehouse table `category_daily_metrics`
(order_date = D), and the quarantined row count from the category's staged quarantine dataset
(`<staging>/<category>/D/quarantine.parquet`; left empty once staging retention removed it).

**What it writes**: the partition order_date = D of the warehouse table `daily_sales_summary`,
one row per category that has loaded D (order_date, category, orders, units, revenue,
quarantined). The load replaces the partition: a rerun, or a later run for the same day,
never duplicates.

**When it runs**: it follows the data. Each category's load publishes its asset
`category_<name>_loaded` with the loaded order date (event extra `order_date`, and partition key
D). This DAG is scheduled on *any* of those assets, partition-aware
(`PartitionedAssetTimetable`): every category load of day D makes one run for D, whose
**partition key** is D (shown in the UI). Loads of D share a run only until the scheduler
creates it (its next loop, about a second): a later load of D makes a new run, queued behind
the running one, even if that one has not started yet. With many categories that is up to one
run per category and day (see BENCHMARKS.md, "Cost of a category run on Kubernetes").
So:
- the first category loaded for D gives a summary of D at once (with the categories loaded so far;
  the task log of `processing_tasks.transform` names those not loaded yet);
- every later category of D, also one loaded late or re-loaded (a rerun, a backfill), triggers a
  new run that replaces D's summary: the last run of D always reflects everything loaded for D.
Runs execute one at a time (`max_active_runs=1`), in the order they were created.

Why not "all categories in" (AssetAll): one category that fails for days would hold every
day's summary back, and a rerun of one category would need all the others to load again before
anything is re-summarised. A partial summary that is replaced as categories arrive is what the
on-call engineer can see and reason about.

**Manual runs**: "Trigger" with the conf `{"order_date": "YYYY-MM-DD"}`, or with a logical date
(the laptop's `make run` runs it after the categories with the logical date of the day).
Precedence: partition key, then conf `order_date`, then logical date.

**Tasks**: `start` -> `processing_tasks.extract` (reads the loaded totals; stages them, XCom: their URI
and the category names) -> `processing_tasks.transform` (builds the summary dataset; XCom: its URI
and counts) -> `load` (CustomLoadOperator, replaces the partition) -> `end`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Asset, AssetAny, PartitionedAssetTimetable, TaskGroup, dag, task
from custom_load_operator import CustomLoadOperator

from category_pipeline.config import Alerts, CategoryFileError, categories_file, load_categories
from category_pipeline.dag_factory import category_asset
from category_pipeline.k8s import WAREHOUSE_CONN_ID, load_pod_override
from category_pipeline.notifications import failure_callbacks

try:
    _CONFIG = load_categories(categories_file(Path(__file__).parent))
    CATEGORIES, ALERTS = _CONFIG.categories, _CONFIG.alerts
except CategoryFileError:
    # An unusable file is reported by category_config_check.py; this DAG stays in the UI
    # (its runs summarise nothing and fail, saying so) instead of vanishing with it.
    CATEGORIES, ALERTS = (), Alerts()
CATEGORY_NAMES = [c.name for c in CATEGORIES]
SUMMARY_ASSET = Asset(name="daily_sales_summary", uri="x-warehouse://daily_sales_summary", group="summary")

# Any category load of day D -> a run for D (partition key D, the default identity mapping).
# With no category there is nothing to follow: manual runs only.
SCHEDULE = (PartitionedAssetTimetable(assets=AssetAny(*(category_asset(n) for n in CATEGORY_NAMES)))
            if CATEGORY_NAMES else None)


@dag(
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    # One at a time: two runs of one day (a late category) must not replace its partition concurrently.
    max_active_runs=1,
    tags=["summary"],
    default_args={"owner": "data-platform", "retries": 2, "on_failure_callback": failure_callbacks(ALERTS)},
    doc_md=__doc__,
)
def advanced_data_pipeline():
    start = EmptyOperator(task_id="start")

    with TaskGroup("processing_tasks") as processing_tasks:

        # Reads the warehouse: on Kubernetes it runs in a load pod, the summary's other task with the
        # warehouse connection (a read; the write is the load's).
        @task(executor_config={"pod_override": load_pod_override()})
        def extract(dag_run=None, ds: str | None = None) -> dict:
            """The day's loaded totals per category, staged; only their URI and the names go to XCom."""
            from airflow.sdk import BaseHook

            from category_pipeline import summary
            from category_pipeline.storage import staging_root
            from category_pipeline.warehouse import Warehouse

            day = summary.summary_day(getattr(dag_run, "partition_key", None), dag_run.conf if dag_run else None, ds)
            warehouse = Warehouse.from_airflow_connection(WAREHOUSE_CONN_ID, BaseHook.get_connection(WAREHOUSE_CONN_ID))
            return {"order_date": day.isoformat(), **summary.extract_loaded(warehouse, day, staging_root())}

        @task(multiple_outputs=True)
        def transform(extracted: dict) -> dict:
            """One summary row per loaded category, from the URI that extract pushed."""
            from datetime import date

            from category_pipeline import summary
            from category_pipeline.storage import staging_root

            day = date.fromisoformat(extracted["order_date"])
            return {"order_date": extracted["order_date"],
                    **summary.summarize(extracted, day, staging_root(), CATEGORY_NAMES)}

        summarized = transform(extract())

    load = CustomLoadOperator(
        task_id="load",
        datasets={"daily_sales_summary": summarized["summary_uri"]},
        partition={"order_date": summarized["order_date"]},
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        outlets=[SUMMARY_ASSET],
        # On Kubernetes, a load pod: the warehouse credential.
        executor_config={"pod_override": load_pod_override()},
    )
    end = EmptyOperator(task_id="end")
    start >> processing_tasks >> load >> end


advanced_data_pipeline()
