"""The cross-category daily summary built by ``advanced_data_pipeline``.

One category that cannot be extracted or summed (a missing file, a broken source) does not
take the summary down: the others are summarised, and the missing ones are named, with the
reason, in the XCom and the log. Only a day where no category can be summarised fails.
"""

from __future__ import annotations

import logging
from datetime import date

import pyarrow as pa

from category_pipeline import extract as extract_step
from category_pipeline import process
from category_pipeline.config import Category
from category_pipeline.schema import DAILY_SUMMARY
from category_pipeline.storage import dataset_uri, write_dataset

SCOPE = "daily_summary"
log = logging.getLogger(__name__)


class NothingToSummarize(RuntimeError):
    """No category of the day could be summarised."""


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def extract_all(categories: list[Category], day: date, staging_root: str) -> list[dict]:
    """Per category, its landed URIs, or ``{"category", "error"}`` where it failed."""
    root = f"{staging_root.rstrip('/')}/{SCOPE}"
    extracted = []
    for category in categories:
        try:
            extracted.append({"category": category.name, **extract_step.extract(category, day, root)})
        except Exception as exc:  # one category's source must not fail the others
            log.warning("summary of %s: category %s not extracted: %s", day, category.name, _reason(exc))
            extracted.append({"category": category.name, "error": _reason(exc)})
    return extracted


def summarize(extracted: list[dict], day: date, staging_root: str) -> dict:
    rows, missing = [], {}
    for item in extracted:
        if "error" in item:
            missing[item["category"]] = item["error"]
            continue
        try:
            rows.append(process.daily_totals(item["raw_uri"], item["catalog_uri"], item["category"], day))
        except Exception as exc:
            log.warning("summary of %s: category %s not summed: %s", day, item["category"], _reason(exc))
            missing[item["category"]] = _reason(exc)
    if not rows:
        raise NothingToSummarize(f"summary of {day}: no category could be summarised: {missing}")
    table = pa.Table.from_pylist(rows, schema=DAILY_SUMMARY)
    uri = dataset_uri(staging_root, SCOPE, day, "summary")
    write_dataset(uri, DAILY_SUMMARY, table.to_batches())
    log.info(
        "summary of %s: %d categories summarised (%s), %d missing%s",
        day, len(rows), ", ".join(r["category"] for r in rows), len(missing),
        f" ({', '.join(sorted(missing))})" if missing else "",
    )
    return {
        "summary_uri": uri,
        "categories": len(rows),
        "quarantined": sum(r["quarantined"] for r in rows),
        "missing": missing,
    }
