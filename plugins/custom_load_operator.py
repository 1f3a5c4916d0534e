"""CustomLoadOperator: load staged datasets into the warehouse, one partition per run.

Thin over ``category_pipeline.loader``: the operator resolves the Airflow Connection and
the templated arguments; idempotency (a rerun replaces the partition) and atomicity (all
tables in one transaction) live in the loader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow.sdk import BaseHook, BaseOperator, Context


class CustomLoadOperator(BaseOperator):
    """Replace ``partition`` of each table in ``datasets`` (table name -> staged dataset URI).

    :param datasets: table name -> URI of the staged Parquet dataset (templated; XComArgs allowed)
    :param partition: partition column -> value, e.g. ``{"category": "home", "order_date": "{{ ds }}"}``
    :param warehouse_conn_id: Airflow Connection of the warehouse (postgres or sqlite)
    :return: per table, rows loaded and rows replaced (a small dict, pushed as XCom)
    """

    template_fields: Sequence[str] = ("datasets", "partition")
    ui_color = "#d9f0e3"

    def __init__(
        self,
        *,
        datasets: Mapping[str, str],
        partition: Mapping[str, str],
        warehouse_conn_id: str = "warehouse_default",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.datasets = datasets
        self.partition = partition
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Context) -> dict[str, dict[str, int]]:
        # Imported here, not at the top: DAG files import this module, and parsing them
        # should not load pyarrow.
        from category_pipeline.failures import fail_fast
        from category_pipeline.loader import load_partition
        from category_pipeline.warehouse import Warehouse

        connection = BaseHook.get_connection(self.warehouse_conn_id)
        # A dataset that does not fit its table fails at once; a lost connection or a timeout
        # is left to the task's retries.
        with fail_fast():
            warehouse = Warehouse.from_airflow_connection(self.warehouse_conn_id, connection)
            self.log.info("Loading %s into %r, partition %s", dict(self.datasets), warehouse, dict(self.partition))
            return load_partition(warehouse, dict(self.datasets), dict(self.partition))
