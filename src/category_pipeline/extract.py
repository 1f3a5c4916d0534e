"""Extract: land the day's raw orders, and the catalog they are checked against, in staging."""

from __future__ import annotations

from datetime import date

from category_pipeline import sources
from category_pipeline.config import Category
from category_pipeline.schema import CATALOG, STAGED_RAW_ORDERS
from category_pipeline.storage import dataset_uri, write_dataset


def extract(category: Category, day: date, staging_root: str) -> dict:
    """Returns the small metadata that travels by XCom: URIs and a row count."""
    raw_uri = dataset_uri(staging_root, category.name, day, "raw_orders")
    catalog_uri = dataset_uri(staging_root, category.name, day, "catalog")
    # The catalog is snapshotted next to the orders so that a rerun of process checks
    # against the same catalog as the first run did.
    write_dataset(catalog_uri, CATALOG, sources.catalog(category, day).to_batches())
    # With the text of any row whose cells did not parse: validate quarantines those.
    rows = write_dataset(raw_uri, STAGED_RAW_ORDERS, sources.orders(category, day))
    return {"raw_uri": raw_uri, "catalog_uri": catalog_uri, "rows": rows}
