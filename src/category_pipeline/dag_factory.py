"""Build the DAG of one product category: start -> extract -> process -> load -> end.

Process (validate, compute_metrics) and load carry a pod override, so that under the
KubernetesExecutor they run as pods sized for the category; under the local executor
the same tasks just run.

The load publishes the category's Asset (``category_asset``) for the day it loaded: the
event's extra names the order date, and its partition key is that date, which is how
``advanced_data_pipeline`` follows the loads.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, TaskGroup, task

from category_pipeline.config import Category
from category_pipeline.failures import fail_fast
from category_pipeline.k8s import WAREHOUSE_CONN_ID, pod_override
from category_pipeline.schedule import daily_timetable
from category_pipeline.notifications import failure_callbacks

# The data steps (pyarrow) are imported inside the tasks: parsing the DAGs never needs them.

log = logging.getLogger(__name__)
GATE_CONF_KEY = "enforce_quality_gate"


def _source_text(category: Category) -> str:
    source = category.source
    if source.kind == "files":
        return f"files {source.uri}"
    return f"synthetic source ({source.rows_per_day:,} rows a day, {source.products} products)"


def category_asset(name: str) -> Asset:
    """The Asset a category's load updates: its partitions of ``orders`` and
    ``category_daily_metrics``. One event per loaded day, partition key = the order date."""
    # An "x-" scheme: Airflow does not normalise it. Any other scheme makes it load every
    # provider's asset handlers (the Amazon one imports boto3): 0.13 s more per DAG file
    # parse, in the DAG processor and in every task pod.
    return Asset(name=f"category_{name}_loaded", uri=f"x-warehouse://category_daily_metrics/{name}",
                 group="category_loads")


def _when_text(category: Category) -> str:
    if category.schedule is None:
        return "manual runs only (`schedule: null`)"
    return f"`{category.schedule}` (UTC)"


def _resources_text(category: Category) -> str:
    lines = []
    for step in ("process", "load"):
        r = getattr(category.resources, step)
        lines.append(f"- {step}: requests cpu {r.requests.cpu}, memory {r.requests.memory}; "
                     f"limits cpu {r.limits.cpu}, memory {r.limits.memory}")
    return "\n".join(lines)


def category_doc_md(category: Category) -> str:
    """What the on-call engineer needs on the DAG's page: the effective config, the flow, the tables."""
    name, quality, timeouts = category.name, category.quality, category.execution_timeout_minutes
    source = category.source
    if source.kind == "files":
        source_text = f"**files** source: orders `{source.uri}`, catalog `{source.catalog_uri}`"
    else:
        source_text = (f"**synthetic** source: {source.rows_per_day:,} rows a day, {source.products} products, "
                       f"{source.bad_row_ratio:.0%} bad rows generated")
    asset = category_asset(name)
    return f"""### Category `{name}`{f": {category.description}" if category.description else ""}

Generated from the `{name}` entry of `categories.yaml` (merged with its `defaults`); owner `{category.owner}`.

**Schedule**: {_when_text(category)}. Each run processes one order date, its **logical date**: a
scheduled run the last complete day before its run time (its data interval; the run at
2026-11-27 processes 2026-11-26), a manual run the date it is given.
Retries: {category.retries}, {category.retry_delay_minutes:g} min apart.

**Source**: {source_text}.

**Data flow**: `extract` lands the day's raw orders (and catalog) in staging ->
`process.validate` splits them into clean orders and a quarantine (with the reason per row) ->
`process.compute_metrics` sums the clean orders per product -> `load` replaces the day's partition
(category `{name}`, order date) of the warehouse tables `orders` and `category_daily_metrics`, in one
transaction; a rerun replaces, never duplicates. Staged datasets: `<staging>/{name}/<date>/`
(`raw_orders`, `catalog`, `clean_orders`, `quarantine`, `metrics`).

**Quality gate**: validate fails, and nothing is loaded, when the day has fewer than
{quality.min_rows:,} rows (`min_rows`) or more than {quality.max_bad_row_ratio:.0%} of them quarantined
(`max_bad_row_ratio` {quality.max_bad_row_ratio:g}). A manual run with the conf `{{"{GATE_CONF_KEY}": false}}`
loads such a day anyway.

**Resources** (KubernetesExecutor pods):
{_resources_text(category)}

Timeouts: extract {timeouts.extract:g} min, process {timeouts.process:g} min per task, load {timeouts.load:g} min.

**Downstream**: a successful load publishes the asset `{asset.name}` (`{asset.uri}`) with the order date
(extra `order_date`, partition key); `advanced_data_pipeline` then re-summarises that day.
"""


def build_category_dag(category: Category, load_operator: type) -> DAG:
    """``load_operator`` is the plugin's CustomLoadOperator (passed in: plugins are not a package)."""
    name = category.name
    timeouts = category.execution_timeout_minutes
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
            # Per task, in the task's own process, after its last try (categories.yaml `alerts`).
            "on_failure_callback": failure_callbacks(category),
        },
        doc_md=category_doc_md(category),
    ) as dag:
        process_pod = {"pod_override": pod_override(category, "process")}

        @task(execution_timeout=timedelta(minutes=timeouts.extract))
        def extract(ds: str | None = None) -> dict:
            from category_pipeline.extract import extract as extract_orders
            from category_pipeline.storage import staging_root

            with fail_fast():
                landed = extract_orders(category, date.fromisoformat(ds), staging_root())
            log.info("extract: %s rows of %s for %s landed from the %s at %s",
                     f"{landed['rows']:,}", name, ds, _source_text(category), landed["raw_uri"])
            return landed

        @task(multiple_outputs=True, executor_config=process_pod, execution_timeout=timedelta(minutes=timeouts.process))
        def validate(extracted: dict, ds: str | None = None, dag_run=None) -> dict:
            from category_pipeline import quality
            from category_pipeline.process import validate as validate_orders
            from category_pipeline.storage import dataset_uri, staging_root

            day = date.fromisoformat(ds)
            root = staging_root()
            with fail_fast():
                result = validate_orders(
                    extracted["raw_uri"],
                    extracted["catalog_uri"],
                    name,
                    day,
                    clean_uri=dataset_uri(root, name, day, "clean_orders"),
                    quarantine_uri=dataset_uri(root, name, day, "quarantine"),
                )
                rows = result["clean_rows"] + result["quarantined_rows"]
                # A run's conf, not a DAG Param: a Param costs ~1 ms per DAG at every parse
                # (its JSON schema is checked, and copied into every task), at 1000 categories ~1 s.
                conf = (dag_run.conf if dag_run is not None else None) or {}
                if conf.get(GATE_CONF_KEY, True) is not False:
                    quality.check(name, day, rows, result["quarantined_rows"], category.quality)
                else:
                    log.warning("quality gate of %s for %s switched off by the run's conf (%s: false)", name, ds, GATE_CONF_KEY)
            return result

        @task(multiple_outputs=True, executor_config=process_pod, execution_timeout=timedelta(minutes=timeouts.process))
        def compute_metrics(clean_uri: str, ds: str | None = None) -> dict:
            from category_pipeline.process import compute_metrics as metrics_of
            from category_pipeline.storage import dataset_uri, staging_root

            with fail_fast():
                metrics = metrics_of(clean_uri, dataset_uri(staging_root(), name, ds, "metrics"))
            log.info("compute_metrics: %s products of %s for %s, at %s",
                     f"{metrics['rows']:,}", name, ds, metrics["metrics_uri"])
            return metrics

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
            outlets=[category_asset(name)],
            asset_partition_key="{{ ds }}",
            executor_config={"pod_override": pod_override(category, "load")},
            execution_timeout=timedelta(minutes=timeouts.load),
        )
        end = EmptyOperator(task_id="end")
        start >> extracted
        load >> end
    return dag
