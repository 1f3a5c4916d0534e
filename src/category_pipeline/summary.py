"""The cross-category daily summary built by ``advanced_data_pipeline``."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from category_pipeline import extract as extract_step
from category_pipeline import process
from category_pipeline.config import Category
from category_pipeline.schema import DAILY_SUMMARY
from category_pipeline.storage import dataset_uri, write_dataset

SCOPE = "daily_summary"


def extract_all(categories: list[Category], day: date, staging_root: str) -> list[dict]:
    root = f"{staging_root.rstrip('/')}/{SCOPE}"
    return [{"category": c.name, **extract_step.extract(c, day, root)} for c in categories]


def summarize(extracted: list[dict], day: date, staging_root: str) -> dict:
    rows = [process.daily_totals(item["raw_uri"], item["catalog_uri"], item["category"], day) for item in extracted]
    table = pa.Table.from_pylist(rows, schema=DAILY_SUMMARY)
    uri = dataset_uri(staging_root, SCOPE, day, "summary")
    write_dataset(uri, DAILY_SUMMARY, table.to_batches())
    return {"summary_uri": uri, "categories": len(rows), "quarantined": sum(r["quarantined"] for r in rows)}
