"""The quarantine rules added for production data: duplicate order_ids, invalid prices,
corrupt staged datasets and the validate step's log line."""

from __future__ import annotations

import functools
import logging
import math
import random
from collections import Counter
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline import process, synthetic
from category_pipeline.schema import RAW_ORDERS
from category_pipeline.storage import DatasetReadError, read_batches
from tests.test_process import CATALOG_TABLE, DAY, NOON, Staged, _orders, _row, _synthetic_staged

INF, NAN = float("inf"), float("nan")


def _validate(tmp_path, rows: list[dict]):
    staged = Staged(tmp_path, pa.Table.from_pylist(rows, RAW_ORDERS), CATALOG_TABLE)
    result = staged.validate()
    clean = pq.read_table(result["clean_uri"])
    quarantine = pq.read_table(result["quarantine_uri"])
    return result, clean, quarantine


@pytest.fixture
def small_batches(monkeypatch):
    """validate reads the raw orders 7 rows at a time: duplicates span batches and row groups."""
    monkeypatch.setattr(process, "read_batches", functools.partial(read_batches, batch_rows=7))


# --- duplicate_order_id ------------------------------------------------------------------


def test_duplicate_order_id_in_one_batch_keeps_the_first(tmp_path):
    rows = [_row("o1", quantity=1), _row("o2"), _row("o1", quantity=2), _row("o1", quantity=3)]
    result, clean, quarantine = _validate(tmp_path, rows)
    assert result["quarantine_reasons"] == {"duplicate_order_id": 2}
    assert clean.column("order_id").to_pylist() == ["o1", "o2"]
    assert clean.column("quantity").to_pylist() == [1, 2]  # the first o1 is the one kept
    assert quarantine.column("quantity").to_pylist() == [2, 3]
    assert set(quarantine.column("reason").to_pylist()) == {"duplicate_order_id"}


def test_duplicate_order_id_across_batches_and_row_groups(tmp_path, small_batches):
    rows = [_row(f"o{i}", quantity=1) for i in range(30)] + [_row(f"o{i}", quantity=2) for i in range(0, 30, 3)]
    result, clean, quarantine = _validate(tmp_path, rows)
    assert result["quarantine_reasons"] == {"duplicate_order_id": 10}
    assert clean.num_rows == 30 and set(clean.column("quantity").to_pylist()) == {1}
    assert sorted(quarantine.column("order_id").to_pylist()) == sorted(f"o{i}" for i in range(0, 30, 3))


def test_a_bad_row_keeps_its_reason_and_is_not_the_first_of_its_order_id(tmp_path):
    rows = [
        _row("o1", product_id="P9", quantity=5),  # unknown_product: does not count as the first o1
        _row("o1", quantity=2),  # the first good o1: kept
        _row("o1", quantity=0),  # bad for its own reason: keeps it
        _row("o1", quantity=3),  # a duplicate
    ]
    result, clean, quarantine = _validate(tmp_path, rows)
    assert result["quarantine_reasons"] == {"unknown_product": 1, "non_positive_quantity": 1, "duplicate_order_id": 1}
    assert clean.column("quantity").to_pylist() == [2]
    assert dict(zip(quarantine.column("quantity").to_pylist(), quarantine.column("reason").to_pylist())) == {
        5: "unknown_product",
        0: "non_positive_quantity",
        3: "duplicate_order_id",
    }


def test_ids_differing_only_in_trailing_bytes_or_length_are_not_duplicates(tmp_path, small_batches):
    ids = ["a", "a\0", "", "a" * 8, "a" * 9, "a" * 16, "b" * 100, "é", "e", "home-20261120-00000001", "home-20261120-00000010"]
    rows = [_row(order_id) for order_id in ids]
    result, clean, _ = _validate(tmp_path, rows + [_row(order_id) for order_id in ids])
    assert result["quarantine_reasons"] == {"duplicate_order_id": len(ids)}
    assert clean.column("order_id").to_pylist() == ids


def test_many_duplicates_match_an_independent_classification(tmp_path, small_batches):
    raw = _orders(rows=3_000, bad_row_ratio=0.1)
    rows = raw.to_pylist()
    random.Random(7).shuffle(extra := random.Random(3).sample(rows, 600))
    staged = Staged(tmp_path, pa.Table.from_pylist(rows + extra, RAW_ORDERS), synthetic.catalog("home", 20))
    expected = Counter(reason for reason in staged.expected_reasons() if reason is not None)
    assert expected["duplicate_order_id"] > 0
    result = staged.validate()
    assert result["quarantine_reasons"] == dict(expected)
    assert result["clean_rows"] == staged.expected_reasons().count(None)
    clean_ids = pq.read_table(result["clean_uri"]).column("order_id").to_pylist()
    assert len(clean_ids) == len(set(clean_ids))  # loads without a primary key violation


def test_daily_totals_agree_with_validate_on_duplicates(tmp_path):
    rows = [_row(f"o{i % 5}", quantity=i + 1) for i in range(12)]
    staged = Staged(tmp_path, pa.Table.from_pylist(rows, RAW_ORDERS), CATALOG_TABLE)
    totals = process.daily_totals(staged.raw_uri, staged.catalog_uri, "home", DAY)
    result = staged.validate()
    assert totals["orders"] == result["clean_rows"] == 5
    assert totals["quarantined"] == result["quarantined_rows"] == 7
    assert totals["units"] == sum(range(1, 6))


# --- invalid_price -------------------------------------------------------------------------

INVALID_PRICES = {
    "NaN": _row("o", unit_price=NAN),
    "inf": _row("o", unit_price=INF),
    "-inf": _row("o", unit_price=-INF),
    "1e308 x 2 overflows": _row("o", unit_price=1e308, quantity=2),
    "1e308 overflows in cents": _row("o", unit_price=1e308, quantity=1),
    "amount overflows in cents": _row("o", unit_price=1e306, quantity=2),
    "NaN with an unknown product": _row("o", unit_price=NAN, product_id="P9"),
}


@pytest.mark.parametrize("bad", list(INVALID_PRICES.values()), ids=list(INVALID_PRICES))
def test_invalid_price_is_quarantined(tmp_path, bad):
    result, clean, quarantine = _validate(tmp_path, [_row(), bad])
    assert result["quarantine_reasons"] == {"invalid_price": 1}
    assert clean.column("order_id").to_pylist() == ["o-good"]
    assert all(math.isfinite(amount) for amount in clean.column("amount").to_pylist())
    assert quarantine.column("reason").to_pylist() == ["invalid_price"]


def test_large_but_finite_price_is_kept(tmp_path):
    result, clean, _ = _validate(tmp_path, [_row(unit_price=1e12, quantity=3)])
    assert result["clean_rows"] == 1
    assert clean.column("amount").to_pylist() == [3e12]


def test_null_price_stays_null_field_and_daily_totals_skip_invalid_prices(tmp_path):
    rows = [_row("o1"), _row("o2", unit_price=None), _row("o3", unit_price=INF), _row("o4", unit_price=1e308, quantity=2)]
    staged = Staged(tmp_path, pa.Table.from_pylist(rows, RAW_ORDERS), CATALOG_TABLE)
    assert staged.validate()["quarantine_reasons"] == {"null_field": 1, "invalid_price": 2}
    totals = process.daily_totals(staged.raw_uri, staged.catalog_uri, "home", DAY)
    assert totals["orders"] == 1 and math.isclose(totals["revenue"], 19.98)


# --- corrupt staged datasets -----------------------------------------------------------------


def _truncate(path: str) -> None:
    with open(path, "rb") as handle:
        content = handle.read()
    with open(path, "wb") as handle:
        handle.write(content[: len(content) // 2])


def _garble(path: str) -> None:
    with open(path, "rb") as handle:
        content = bytearray(handle.read())
    middle = len(content) // 2
    content[8:middle] = bytes(middle - 8)
    with open(path, "wb") as handle:
        handle.write(bytes(content))


@pytest.mark.parametrize("damage", [_truncate, _garble], ids=["truncated", "garbled"])
@pytest.mark.parametrize("which", ["raw", "catalog"])
def test_corrupt_staged_input_of_validate_names_the_file(tmp_path, damage, which):
    staged = _synthetic_staged(tmp_path, rows=20_000)
    path = staged.raw_uri if which == "raw" else staged.catalog_uri
    damage(path)
    with pytest.raises(DatasetReadError) as raised:
        staged.validate()
    assert path in str(raised.value)
    assert isinstance(raised.value.__cause__, (pa.ArrowException, OSError))


def test_corrupt_clean_dataset_of_compute_metrics_names_the_file(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=5_000)
    clean_uri = staged.validate()["clean_uri"]
    _truncate(clean_uri)
    with pytest.raises(DatasetReadError, match="corrupt or truncated") as raised:
        process.compute_metrics(clean_uri, str(tmp_path / "metrics.parquet"))
    assert clean_uri in str(raised.value)


def test_corrupt_raw_dataset_of_daily_totals_names_the_file(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=5_000)
    _truncate(staged.raw_uri)
    with pytest.raises(DatasetReadError) as raised:
        process.daily_totals(staged.raw_uri, staged.catalog_uri, "home", DAY)
    assert staged.raw_uri in str(raised.value)


# --- the log line ------------------------------------------------------------------------------


def test_validate_logs_rows_in_clean_quarantined_by_reason_and_rate(tmp_path, caplog):
    rows = [_row("o1"), _row("o1"), _row("o2", quantity=0), _row("o3", ordered_at=NOON + timedelta(days=2))]
    with caplog.at_level(logging.INFO, logger="category_pipeline.process"):
        _validate(tmp_path, rows)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "category_pipeline.process"]
    assert "4 rows in" in message and "1 clean" in message and "3 quarantined" in message
    for part in ("1 duplicate_order_id", "1 non_positive_quantity", "1 outside_day", "rows/s", " s "):
        assert part in message, message
