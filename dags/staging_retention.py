"""staging_retention: once a day, staged datasets older than $PIPELINE_STAGING_RETENTION_DAYS
(default 7) are removed from the staging area (local folder, shared volume or object store),
with the temporary files of writers that died and, on S3, their incomplete multipart uploads.
On an S3 bucket with the lifecycle rule (object_store.lifecycle_configuration) this is a
second line; on a volume or a store without lifecycle rules it is the only one."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="staging_retention",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["maintenance"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    doc_md=__doc__,
)
def staging_retention():
    @task(execution_timeout=timedelta(minutes=30))
    def prune() -> dict:
        import logging

        from category_pipeline.storage import prune_staging, retention_days, staging_root

        root, days = staging_root(), retention_days()
        pruned = prune_staging(root, days)
        logging.getLogger(__name__).info("staging retention: %s older than %d days: %s", root, days, pruned.counts())
        return pruned.counts()

    prune()


staging_retention()
