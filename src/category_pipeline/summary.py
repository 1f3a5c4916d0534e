"""The cross-category daily summary built by ``advanced_data_pipeline``, from what the
category DAGs have loaded: no raw order is read again.

- ``summary_day``: which order date a run summarises (the partition key of an asset-triggered
  run, else ``order_date`` in the run's conf, else its logical date);
- ``extract_loaded``: per category loaded for that day, its totals from the warehouse's
  ``category_daily_metrics`` and its quarantined row count from the staged quarantine dataset
  (the warehouse holds only clean rows); staged as one small dataset;
- ``summarize``: those rows as the ``daily_sales_summary`` partition of the day, naming the
  configured categories that have not loaded it (yet).

pyarrow is imported inside the functions: the DAG file imports this module at parse time.
"""

from __future__ import annotations

import logging
from datetime import date

from category_pipeline.warehouse import Warehouse

SCOPE = "daily_summary"
ORDER_DATE_CONF_KEY = "order_date"
log = logging.getLogger(__name__)

LOADED_TOTALS = """
SELECT category, SUM(orders) AS orders, SUM(units) AS units, SUM(revenue) AS revenue
FROM category_daily_metrics WHERE order_date = {p} GROUP BY category ORDER BY category
"""


class NothingToSummarize(RuntimeError):
    """No category has loaded the day: there is nothing to summarise."""


class NoSummaryDay(ValueError):
    """The run does not say which day to summarise."""


def summary_day(partition_key: str | None, conf: dict | None, ds: str | None) -> date:
    """The order date a summary run processes.

    - an asset-triggered run (a category load of day D): its partition key, D;
    - a manual run given ``{"order_date": "YYYY-MM-DD"}`` as conf: that date;
    - a manual run with a logical date (``make run``, the UI's date picker): that date.
    """
    for source, value in (("partition key", partition_key),
                          (f"conf {ORDER_DATE_CONF_KEY!r}", (conf or {}).get(ORDER_DATE_CONF_KEY)),
                          ("logical date", ds)):
        if value:
            try:
                return date.fromisoformat(str(value))
            except ValueError:
                raise NoSummaryDay(f"the run's {source} {value!r} is not a date (YYYY-MM-DD)") from None
    raise NoSummaryDay(
        "this run names no day to summarise: it has no partition key (asset-triggered runs have one), "
        f"no {ORDER_DATE_CONF_KEY!r} in its conf and no logical date; "
        f'trigger it with the conf {{"{ORDER_DATE_CONF_KEY}": "YYYY-MM-DD"}}'
    )


def loaded_totals(warehouse: Warehouse, day: date) -> list[dict]:
    """Per category that has loaded ``day``: orders, units, revenue of its clean rows."""
    placeholder, param = ("%s", day) if warehouse.dialect == "postgres" else ("?", day.isoformat())
    connection = warehouse.connect()
    try:
        if not _has_metrics_table(connection, warehouse.dialect):
            return []  # no category has ever loaded anything
        rows = connection.execute(LOADED_TOTALS.format(p=placeholder), [param]).fetchall()
    finally:
        connection.close()
    return [{"category": c, "orders": int(o), "units": int(u), "revenue": float(r)} for c, o, u, r in rows]


def _has_metrics_table(connection, dialect: str) -> bool:
    if dialect == "postgres":
        found = connection.execute("SELECT to_regclass('category_daily_metrics')").fetchone()[0]
    else:
        found = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'category_daily_metrics'"
        ).fetchone()
    return found is not None


def quarantined_rows(staging_root: str, category: str, day: date) -> int | None:
    """Rows the category quarantined on ``day`` (the staged quarantine's row count, read from
    its Parquet footer); None once staging retention has removed it."""
    from category_pipeline.storage import dataset_uri, read_metadata

    uri = dataset_uri(staging_root, category, day, "quarantine")
    try:
        return read_metadata(uri).num_rows
    except (FileNotFoundError, OSError, ValueError) as exc:
        log.warning("summary of %s: quarantine of %s not readable (%s): quarantined left empty", day, category, exc)
        return None


def extract_loaded(warehouse: Warehouse, day: date, staging_root: str) -> dict:
    """Stage the day's loaded totals per category; only the URI and the names go to XCom."""
    import pyarrow as pa

    from category_pipeline.schema import DAILY_SUMMARY
    from category_pipeline.storage import dataset_uri, write_dataset

    rows = [{"order_date": day, **totals, "quarantined": quarantined_rows(staging_root, totals["category"], day)}
            for totals in loaded_totals(warehouse, day)]
    uri = dataset_uri(staging_root, SCOPE, day, "loaded_metrics")
    write_dataset(uri, DAILY_SUMMARY, pa.Table.from_pylist(rows, schema=DAILY_SUMMARY).to_batches())
    loaded = [row["category"] for row in rows]
    log.info("summary of %s: %d categories loaded in the warehouse: %s", day, len(loaded), ", ".join(loaded) or "none")
    return {"loaded_uri": uri, "categories": loaded}


def summarize(extracted: dict, day: date, staging_root: str, expected: list[str]) -> dict:
    """The summary partition of ``day`` from the staged loaded totals; ``expected``: the
    configured categories, those not loaded yet are named (a late one re-triggers the summary)."""
    import pyarrow.parquet as pq

    from category_pipeline.schema import DAILY_SUMMARY
    from category_pipeline.storage import dataset_uri, resolve, write_dataset

    filesystem, path = resolve(extracted["loaded_uri"])
    with filesystem.open_input_file(path) as handle:
        table = pq.read_table(handle, schema=DAILY_SUMMARY)
    categories = table.column("category").to_pylist()
    if not categories:
        raise NothingToSummarize(
            f"summary of {day}: no category has loaded this day into category_daily_metrics "
            f"(configured: {', '.join(expected) or 'none'}); run the category DAGs for {day} first"
        )
    not_loaded = sorted(set(expected) - set(categories))
    uri = dataset_uri(staging_root, SCOPE, day, "summary")
    write_dataset(uri, DAILY_SUMMARY, table.to_batches())
    log.info("summary of %s: %d categories summarised (%s)%s", day, len(categories), ", ".join(categories),
             f"; not loaded yet: {', '.join(not_loaded)}" if not_loaded else "")
    quarantined = table.column("quarantined").to_pylist()
    return {
        "summary_uri": uri,
        "categories": len(categories),
        "quarantined": sum(q for q in quarantined if q is not None),
        "not_loaded": not_loaded,
    }
