"""The cross-category summary survives one broken category: the others are summarised and
the broken one is named, with its reason; a day with no category to summarise fails."""

from __future__ import annotations

from datetime import date

import pyarrow.parquet as pq
import pytest

from category_pipeline import summary
from category_pipeline.config import parse_categories

DAY = date(2026, 11, 20)


def _categories(tmp_path, *broken: str):
    entries = [{"name": "garden", "source": {"rows_per_day": 500, "products": 5}},
               {"name": "toys", "source": {"rows_per_day": 300, "products": 4}}]
    for name in broken:
        entries.append({"name": name, "source": {"kind": "files", "uri": str(tmp_path / "missing" / "{ds}.csv"),
                                                 "catalog_uri": str(tmp_path / "missing" / "catalog.csv")}})
    config = parse_categories({"defaults": {"owner": "t", "schedule": "@daily", "start_date": "2026-01-01",
                                            "retries": 0, "retry_delay_minutes": 1,
                                            "source": {"kind": "synthetic", "rows_per_day": 100, "products": 3},
                                            "resources": {s: {"requests": {"cpu": "1", "memory": "1Gi"},
                                                              "limits": {"cpu": "1", "memory": "1Gi"}}
                                                          for s in ("process", "load")}},
                               "categories": entries})
    assert config.errors == ()
    return config.categories


def test_one_broken_category_is_named_and_the_others_summarised(tmp_path):
    extracted = summary.extract_all(_categories(tmp_path, "books"), DAY, str(tmp_path / "staging"))
    result = summary.summarize(extracted, DAY, str(tmp_path / "staging"))
    assert result["categories"] == 2
    assert set(result["missing"]) == {"books"}
    assert result["missing"]["books"].startswith("SourceMissing: source file ") and "does not exist" in result["missing"]["books"]
    table = pq.read_table(result["summary_uri"]).to_pylist()
    assert sorted(row["category"] for row in table) == ["garden", "toys"]
    assert {row["category"]: row["orders"] + row["quarantined"] for row in table} == {"garden": 500, "toys": 300}


def test_nothing_to_summarise_fails_naming_every_category(tmp_path):
    extracted = [{"category": "books", "error": "FileNotFoundError: x"}]
    with pytest.raises(summary.NothingToSummarize, match="no category could be summarised: {'books'"):
        summary.summarize(extracted, DAY, str(tmp_path))
