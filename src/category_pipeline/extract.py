"""Extract: land the day's raw orders, and the catalog they are checked against, in staging."""

from __future__ import annotations

from datetime import date

from category_pipeline import metrics, sources
from category_pipeline.config import Category
from category_pipeline.schema import CATALOG, STAGED_RAW_ORDERS
from category_pipeline.storage import dataset_uri, write_dataset


def extract(category: Category, day: date, staging_root: str) -> dict:
    """Returns the small metadata that travels by XCom: URIs and a row count."""
    with metrics.step_timer(category.name, "extract"):
        landed = _land(category, day, staging_root)
    metrics.rows_extracted(category.name, landed["rows"])
    return landed


def _land(category: Category, day: date, staging_root: str) -> dict:
    raw_uri = dataset_uri(staging_root, category.name, day, "raw_orders")
    catalog_uri = dataset_uri(staging_root, category.name, day, "catalog")
    # The catalog is snapshotted next to the orders so that a rerun of process checks
    # against the same catalog as the first run did.
    write_dataset(catalog_uri, CATALOG, sources.catalog(category, day).to_batches())
    # With the text of any row whose cells did not parse: validate quarantines those.
    rows = write_dataset(raw_uri, STAGED_RAW_ORDERS, sources.orders(category, day))
    return {"raw_uri": raw_uri, "catalog_uri": catalog_uri, "rows": rows}
