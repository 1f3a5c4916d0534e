"""CustomLoadOperator: load staged datasets into the warehouse, one partition per run.

Thin over ``category_pipeline.loader``: the operator resolves the Airflow Connection and
the templated arguments; idempotency (a rerun replaces the partition) and atomicity (all
tables in one transaction) live in the loader.

Each Asset in the task's ``outlets`` gets an event once the load has committed: its extra is
the loaded partition (e.g. ``{"category": "home", "order_date": "2026-11-20"}``) and the
rows loaded per table; with ``asset_partition_key`` the event also carries that partition key,
so a partition-aware consumer (advanced_data_pipeline) gets one run per loaded day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow.sdk import BaseHook, BaseOperator, Context


class CustomLoadOperator(BaseOperator):
    """Replace ``partition`` of each table in ``datasets`` (table name -> staged dataset URI).

    :param datasets: table name -> URI of the staged Parquet dataset (templated; XComArgs allowed)
    :param partition: partition column -> value, e.g. ``{"category": "home", "order_date": "{{ ds }}"}``
    :param warehouse_conn_id: Airflow Connection of the warehouse (postgres or sqlite)
    :param asset_partition_key: partition key of the outlet asset events (templated, e.g. ``"{{ ds }}"``)
    :return: per table, rows loaded and rows replaced (a small dict, pushed as XCom)
    """

    template_fields: Sequence[str] = ("datasets", "partition", "asset_partition_key")
    ui_color = "#d9f0e3"

    def __init__(
        self,
        *,
        datasets: Mapping[str, str],
        partition: Mapping[str, str],
        warehouse_conn_id: str = "warehouse_default",
        asset_partition_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.datasets = datasets
        self.partition = partition
        self.warehouse_conn_id = warehouse_conn_id
        self.asset_partition_key = asset_partition_key

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
            loaded = load_partition(warehouse, dict(self.datasets), dict(self.partition))
        self._announce(context, loaded)
        return loaded

    def _announce(self, context: Context, loaded: dict[str, dict[str, int]]) -> None:
        """The outlet asset events of this load: Airflow records them when the task succeeds."""
        from airflow.sdk import Asset

        extra = {**{k: str(v) for k, v in self.partition.items()},
                 "rows_loaded": {table: counts["loaded"] for table, counts in loaded.items()}}
        for outlet in self.outlets:
            if not isinstance(outlet, Asset):
                continue
            event = context["outlet_events"][outlet]
            event.extra = extra
            if self.asset_partition_key:
                event.add_partitions(self.asset_partition_key)
