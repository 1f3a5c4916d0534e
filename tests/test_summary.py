"""The cross-category summary is built from what the categories loaded (the warehouse's
category_daily_metrics, and the staged quarantine counts), never from raw orders; a day that no
category has loaded fails, saying so; a staged quarantine that retention removed leaves only
that column empty."""

from __future__ import annotations

import sqlite3
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline import summary
from category_pipeline.schema import QUARANTINE
from category_pipeline.storage import dataset_uri, write_dataset
from category_pipeline.warehouse import Warehouse

DAY = date(2026, 11, 20)


def _warehouse(tmp_path, metrics: list[tuple]) -> Warehouse:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE category_daily_metrics (category TEXT, order_date TEXT, product_id TEXT, "
                           "orders INTEGER, units INTEGER, revenue REAL)")
        connection.executemany("INSERT INTO category_daily_metrics VALUES (?, ?, ?, ?, ?, ?)", metrics)
    return Warehouse("sqlite", str(path))


def _quarantine(root: str, category: str, rows: int) -> None:
    table = pa.Table.from_pylist([{"order_id": f"q{i}", "reason": "unknown_product"} for i in range(rows)], schema=QUARANTINE)
    write_dataset(dataset_uri(root, category, DAY, "quarantine"), QUARANTINE, table.to_batches())


def test_summary_of_the_loaded_categories_names_the_missing_ones(tmp_path):
    root = str(tmp_path / "staging")
    warehouse = _warehouse(tmp_path, [
        ("garden", DAY.isoformat(), "p1", 3, 5, 10.0), ("garden", DAY.isoformat(), "p2", 2, 2, 4.5),
        ("toys", DAY.isoformat(), "p1", 7, 9, 20.0),
        ("garden", "2026-11-19", "p1", 100, 100, 100.0),  # another day: not summed
    ])
    _quarantine(root, "garden", 4)  # toys: its quarantine is gone (staging retention)

    extracted = summary.extract_loaded(warehouse, DAY, root)
    assert extracted["categories"] == ["garden", "toys"]
    result = summary.summarize(extracted, DAY, root, ["books", "garden", "toys"])
    assert result["categories"] == 2 and result["quarantined"] == 4
    assert result["not_loaded"] == ["books"]
    rows = pq.read_table(result["summary_uri"]).to_pylist()
    assert rows == [
        {"order_date": DAY, "category": "garden", "orders": 5, "units": 7, "revenue": 14.5, "quarantined": 4},
        {"order_date": DAY, "category": "toys", "orders": 7, "units": 9, "revenue": 20.0, "quarantined": None},
    ]


@pytest.mark.parametrize("metrics", [[("garden", "2026-11-19", "p1", 1, 1, 1.0)], None], ids=["other-day", "no-table"])
def test_a_day_no_category_has_loaded_fails_naming_the_configured_ones(tmp_path, metrics):
    if metrics is None:
        warehouse = Warehouse("sqlite", str(tmp_path / "empty.db"))
    else:
        warehouse = _warehouse(tmp_path, metrics)
    extracted = summary.extract_loaded(warehouse, DAY, str(tmp_path))
    with pytest.raises(summary.NothingToSummarize, match=r"no category has loaded this day .*configured: garden, toys"):
        summary.summarize(extracted, DAY, str(tmp_path), ["garden", "toys"])
