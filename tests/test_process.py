"""The synthetic source and the process step (validate, quarantine, metrics).

Expected counts and sums are computed here in plain Python from the raw rows, never
copied from the pipeline's output.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline import process, synthetic
from category_pipeline.schema import CATALOG, CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE, RAW_ORDERS
from category_pipeline.storage import read_batches, write_dataset

DAY = date(2026, 3, 14)
REQUIRED = ("order_id", "ordered_at", "product_id", "quantity", "unit_price")


def _orders(category="home", day=DAY, rows=3_000, products=20, bad_row_ratio=0.02, batch_rows=1_000) -> pa.Table:
    batches = list(synthetic.generate_orders(category, day, rows, products, bad_row_ratio, batch_rows=batch_rows))
    return pa.Table.from_batches(batches, RAW_ORDERS)


def _expected_reason(row: dict, known: set[str], day: date) -> str | None:
    """The documented rules, in their documented order, in plain Python."""
    if row.get("raw") is not None:
        return "unparseable"
    if any(row[name] is None for name in REQUIRED):
        return "null_field"
    amount = row["quantity"] * row["unit_price"]
    if not math.isfinite(row["unit_price"]) or not abs(amount) < 1.7976931348623157e308 / 100:
        return "invalid_price"
    if row["unit_price"] < 0:
        return "negative_price"
    if row["quantity"] <= 0:
        return "non_positive_quantity"
    if row["product_id"] not in known:
        return "unknown_product"
    if row["ordered_at"].astimezone(timezone.utc).date() != day:
        return "outside_day"
    return None


class Staged:
    """A raw dataset and its catalog in a temporary folder, validated on demand."""

    def __init__(self, folder, raw: pa.Table, catalog: pa.Table, category="home", day=DAY):
        self.folder, self.category, self.day = folder, category, day
        self.raw_uri = str(folder / "raw.parquet")
        self.catalog_uri = str(folder / "catalog.parquet")
        write_dataset(self.raw_uri, RAW_ORDERS, raw.to_batches(max_chunksize=700))
        write_dataset(self.catalog_uri, CATALOG, catalog.to_batches())
        self.raw_rows = raw.to_pylist()
        self.known = set(catalog.column("product_id").to_pylist())

    def validate(self) -> dict:
        return process.validate(
            self.raw_uri,
            self.catalog_uri,
            self.category,
            self.day,
            str(self.folder / "clean.parquet"),
            str(self.folder / "quarantine.parquet"),
        )

    def expected_reasons(self) -> list[str | None]:
        """Row rules, then: a later row with the order_id of an earlier good row is a duplicate."""
        reasons, kept = [], set()
        for row in self.raw_rows:
            reason = _expected_reason(row, self.known, self.day)
            if reason is None:
                if row["order_id"] in kept:
                    reason = "duplicate_order_id"
                kept.add(row["order_id"])
            reasons.append(reason)
        return reasons


def _synthetic_staged(folder, rows=3_000, products=20, bad_row_ratio=0.1, category="home") -> Staged:
    raw = _orders(category, DAY, rows, products, bad_row_ratio)
    return Staged(folder, raw, synthetic.catalog(category, products), category)


def _python_metrics(clean_rows: list[dict]) -> dict[str, tuple[int, int, Decimal]]:
    """Per product: orders, units, revenue (exact: prices have two decimals)."""
    totals = defaultdict(lambda: [0, 0, Decimal(0)])
    for row in clean_rows:
        entry = totals[row["product_id"]]
        entry[0] += 1
        entry[1] += row["quantity"]
        entry[2] += Decimal(str(row["unit_price"])) * row["quantity"]
    return {product: tuple(values) for product, values in totals.items()}


def _assert_metrics_match(metrics: pa.Table, clean_rows: list[dict]) -> None:
    expected = _python_metrics(clean_rows)
    got = {row["product_id"]: row for row in metrics.to_pylist()}
    assert got.keys() == expected.keys()
    for product, (orders, units, revenue) in expected.items():
        assert got[product]["orders"] == orders, product
        assert got[product]["units"] == units, product
        assert math.isclose(got[product]["revenue"], float(revenue), abs_tol=0.01), product


# --- synthetic source -------------------------------------------------------------------


def test_same_category_and_day_give_identical_orders():
    assert _orders("home", DAY).equals(_orders("home", DAY))


def test_other_day_gives_other_orders():
    a, b = _orders("home", DAY), _orders("home", DAY + timedelta(days=1))
    assert a.column("unit_price") != b.column("unit_price")
    assert set(a.column("order_id").to_pylist()).isdisjoint(b.column("order_id").to_pylist())


def test_other_category_gives_other_orders():
    a, b = _orders("home", DAY), _orders("fashion", DAY)
    assert a.column("unit_price") != b.column("unit_price")
    assert set(a.column("product_id").drop_null().to_pylist()).isdisjoint(b.column("product_id").drop_null().to_pylist())


def test_catalog_is_deterministic_with_unique_ids_and_prices_in_range():
    catalog = synthetic.catalog("home", 50)
    assert catalog.equals(synthetic.catalog("home", 50))
    assert catalog.schema == CATALOG
    assert len(set(catalog.column("product_id").to_pylist())) == 50
    assert all(5.0 <= price <= 505.0 for price in catalog.column("list_price").to_pylist())


@pytest.mark.parametrize("rows", [0, 1, 999, 1_000, 1_001, 4_321])
def test_row_count_across_batch_boundaries(rows):
    batches = list(synthetic.generate_orders("home", DAY, rows, 10, batch_rows=1_000))
    assert sum(b.num_rows for b in batches) == rows
    assert len(batches) == math.ceil(rows / 1_000)
    assert all(0 < b.num_rows <= 1_000 for b in batches)
    order_ids = [oid for b in batches for oid in b.column("order_id").to_pylist()]
    assert len(set(order_ids)) == rows  # unique across batches


def test_orders_fall_on_their_day():
    table = _orders(bad_row_ratio=0.0)
    assert {ts.astimezone(timezone.utc).date() for ts in table.column("ordered_at").to_pylist()} == {DAY}


def test_zero_bad_row_ratio_quarantines_nothing(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=4_000, bad_row_ratio=0.0)
    assert set(staged.expected_reasons()) == {None}
    result = staged.validate()
    assert result["quarantined_rows"] == 0
    assert result["quarantine_reasons"] == {}
    assert result["clean_rows"] == 4_000


def test_bad_rows_of_every_generated_kind_are_present():
    # 20% of 5000 rows are broken; each of the four kinds gets ~250 of them.
    raw = _orders(rows=5_000, bad_row_ratio=0.2)
    known = set(synthetic.catalog("home", 20).column("product_id").to_pylist())
    kinds = Counter(_expected_reason(row, known, DAY) for row in raw.to_pylist())
    assert {"null_field", "negative_price", "non_positive_quantity", "unknown_product"} <= kinds.keys()


# --- validate -------------------------------------------------------------------------


def test_quarantine_counts_per_reason_match_independent_classification(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=5_000, bad_row_ratio=0.1)
    expected = Counter(reason for reason in staged.expected_reasons() if reason is not None)
    result = staged.validate()
    assert result["quarantine_reasons"] == dict(expected)
    assert result["quarantined_rows"] == sum(expected.values())
    assert result["clean_rows"] == staged.expected_reasons().count(None)


def test_validate_drops_no_row_silently(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=5_000, bad_row_ratio=0.1)
    result = staged.validate()
    clean_ids = pq.read_table(result["clean_uri"]).column("order_id").to_pylist()
    quarantined_ids = pq.read_table(result["quarantine_uri"]).column("order_id").to_pylist()
    raw_ids = [row["order_id"] for row in staged.raw_rows]
    assert result["clean_rows"] + result["quarantined_rows"] == len(raw_ids)
    assert sorted(clean_ids + quarantined_ids) == sorted(raw_ids)
    assert set(clean_ids).isdisjoint(quarantined_ids)


def test_quarantine_dataset_holds_the_bad_rows_with_their_reason(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=5_000, bad_row_ratio=0.1)
    result = staged.validate()
    quarantine = pq.read_table(result["quarantine_uri"])
    assert quarantine.schema.equals(QUARANTINE)
    raw_by_id = {row["order_id"]: row for row in staged.raw_rows}
    for row in quarantine.to_pylist():
        original = raw_by_id[row.pop("order_id")]
        reason = row.pop("reason")
        assert row.pop("raw") is None
        assert reason == _expected_reason(original, staged.known, DAY)
        assert row == {k: v for k, v in original.items() if k != "order_id"}


def test_clean_rows_carry_category_date_and_amount(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=2_000, bad_row_ratio=0.1, category="garden")
    result = staged.validate()
    clean = pq.read_table(result["clean_uri"])
    assert clean.schema.equals(CLEAN_ORDERS)
    raw_by_id = {row["order_id"]: row for row in staged.raw_rows}
    for row in clean.to_pylist():
        assert row["category"] == "garden"
        assert row["order_date"] == DAY
        original = raw_by_id[row["order_id"]]
        assert _expected_reason(original, staged.known, DAY) is None
        assert row["quantity"] == original["quantity"] and row["unit_price"] == original["unit_price"]
        expected_amount = Decimal(str(original["unit_price"])) * original["quantity"]
        assert math.isclose(row["amount"], float(expected_amount), abs_tol=1e-9)


# Handcrafted raw rows: one good row and one row of each kind of problem.
CATALOG_TABLE = pa.table({"product_id": ["P1", "P2"], "list_price": [10.0, 20.0]}, schema=CATALOG)
NOON = datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=timezone.utc)


def _row(order_id="o-good", ordered_at=NOON, customer_id="C1", product_id="P1", quantity=2, unit_price=9.99):
    return {
        "order_id": order_id,
        "ordered_at": ordered_at,
        "customer_id": customer_id,
        "product_id": product_id,
        "quantity": quantity,
        "unit_price": unit_price,
    }


BAD_ROWS = {
    "null order_id": (_row(order_id=None), "null_field"),
    "null ordered_at": (_row(order_id="o", ordered_at=None), "null_field"),
    "null product_id": (_row(order_id="o", product_id=None), "null_field"),
    "null quantity": (_row(order_id="o", quantity=None), "null_field"),
    "null unit_price": (_row(order_id="o", unit_price=None), "null_field"),
    "negative price": (_row(order_id="o", unit_price=-0.01), "negative_price"),
    "zero quantity": (_row(order_id="o", quantity=0), "non_positive_quantity"),
    "negative quantity": (_row(order_id="o", quantity=-3), "non_positive_quantity"),
    "unknown product": (_row(order_id="o", product_id="P9"), "unknown_product"),
    "day before": (_row(order_id="o", ordered_at=NOON.replace(hour=0) - timedelta(microseconds=1)), "outside_day"),
    "day after": (_row(order_id="o", ordered_at=NOON.replace(hour=0) + timedelta(days=1)), "outside_day"),
    "negative price, unknown product": (_row(order_id="o", unit_price=-1.0, product_id="P9"), "negative_price"),
}


@pytest.mark.parametrize("bad,reason", list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_handcrafted_bad_row_is_quarantined_with_its_reason(tmp_path, bad, reason):
    assert _expected_reason(bad, {"P1", "P2"}, DAY) == reason  # the case is what it claims
    staged = Staged(tmp_path, pa.Table.from_pylist([_row(), bad], RAW_ORDERS), CATALOG_TABLE)
    result = staged.validate()
    assert result["quarantine_reasons"] == {reason: 1}
    assert pq.read_table(result["clean_uri"]).column("order_id").to_pylist() == ["o-good"]
    quarantine = pq.read_table(result["quarantine_uri"]).to_pylist()
    assert len(quarantine) == 1
    assert quarantine[0].pop("reason") == reason
    assert quarantine[0].pop("raw") is None
    assert quarantine[0] == bad


@pytest.mark.parametrize(
    "good",
    [
        _row(customer_id=None),
        _row(ordered_at=NOON.replace(hour=0)),
        _row(ordered_at=NOON.replace(hour=0) + timedelta(days=1, microseconds=-1)),
        _row(unit_price=0.0),
        _row(product_id="P2", quantity=1),
    ],
    ids=["null customer", "first microsecond", "last microsecond", "zero price", "other product"],
)
def test_handcrafted_good_row_is_kept(tmp_path, good):
    staged = Staged(tmp_path, pa.Table.from_pylist([good], RAW_ORDERS), CATALOG_TABLE)
    result = staged.validate()
    assert result["clean_rows"] == 1
    assert result["quarantined_rows"] == 0


def test_all_bad_rows_of_one_batch_are_counted_together(tmp_path):
    bad_rows = [bad if bad["order_id"] is None else dict(bad, order_id=f"b{i}") for i, (bad, _) in enumerate(BAD_ROWS.values())]
    rows = [_row(f"g{i}") for i in range(5)] + bad_rows
    staged = Staged(tmp_path, pa.Table.from_pylist(rows, RAW_ORDERS), CATALOG_TABLE)
    expected = Counter(reason for _, reason in BAD_ROWS.values())
    result = staged.validate()
    assert result["quarantine_reasons"] == dict(expected)
    assert result["quarantined_rows"] == len(BAD_ROWS)
    assert result["clean_rows"] == 5


# --- metrics ---------------------------------------------------------------------------


def test_compute_metrics_match_python_aggregation(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=8_000, products=30, bad_row_ratio=0.05)
    validated = staged.validate()
    result = process.compute_metrics(validated["clean_uri"], str(tmp_path / "metrics.parquet"))
    metrics = pq.read_table(result["metrics_uri"])
    assert metrics.schema.equals(PRODUCT_METRICS)
    clean_rows = [row for row, reason in zip(staged.raw_rows, staged.expected_reasons()) if reason is None]
    _assert_metrics_match(metrics, clean_rows)
    assert result["rows"] == len({row["product_id"] for row in clean_rows})
    assert set(metrics.column("category").to_pylist()) == {"home"}
    assert set(metrics.column("order_date").to_pylist()) == {DAY}


def _clean_batches(tmp_path, n_batches: int):
    """The clean orders of a validated day, cut into ``n_batches`` record batches."""
    staged = _synthetic_staged(tmp_path, rows=3_000, products=25, bad_row_ratio=0.05)
    clean = pq.read_table(staged.validate()["clean_uri"]).combine_chunks()
    n = clean.num_rows
    bounds = [i * n // n_batches for i in range(n_batches + 1)]
    batches = [clean.slice(a, b - a).to_batches()[0] for a, b in zip(bounds, bounds[1:])]
    return batches, clean.to_pylist()


@pytest.mark.parametrize("n_batches", [1, 5, 16, 17])
def test_product_metrics_over_several_batches(tmp_path, n_batches):
    batches, clean_rows = _clean_batches(tmp_path, n_batches)
    assert len(batches) == n_batches and all(b.num_rows for b in batches)
    _assert_metrics_match(process.product_metrics(batches), clean_rows)


@pytest.mark.parametrize("n_batches", [18, 40])
def test_product_metrics_over_many_batches(tmp_path, n_batches):
    batches, clean_rows = _clean_batches(tmp_path, n_batches)
    assert len(batches) == n_batches and all(b.num_rows for b in batches)
    _assert_metrics_match(process.product_metrics(batches), clean_rows)


def test_product_metrics_skips_empty_batches():
    rows = [
        {**_row(f"o{i}", product_id=f"P{i % 2 + 1}"), "category": "home", "order_date": DAY, "amount": 19.98}
        for i in range(4)
    ]
    empty = pa.RecordBatch.from_pylist([], CLEAN_ORDERS)
    metrics = process.product_metrics([empty, pa.RecordBatch.from_pylist(rows, CLEAN_ORDERS), empty])
    assert metrics.column("product_id").to_pylist() == ["P1", "P2"]
    assert metrics.column("orders").to_pylist() == [2, 2]
    assert metrics.column("units").to_pylist() == [4, 4]
    assert metrics.column("revenue").to_pylist() == pytest.approx([39.96, 39.96], abs=0.01)
    assert set(metrics.column("category").to_pylist()) == {"home"}


def test_product_metrics_of_read_batches_with_small_batch_rows(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=3_000, products=25, bad_row_ratio=0.05)
    clean_uri = staged.validate()["clean_uri"]
    batches = list(read_batches(clean_uri, batch_rows=100))
    assert len(batches) > 17
    _assert_metrics_match(process.product_metrics(iter(batches)), pa.Table.from_batches(batches).to_pylist())


def test_product_metrics_of_no_rows_is_empty():
    metrics = process.product_metrics([pa.RecordBatch.from_pylist([], CLEAN_ORDERS)])
    assert metrics.num_rows == 0
    assert metrics.schema.equals(PRODUCT_METRICS)


def test_daily_totals_agree_with_validate_and_metrics(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=6_000, products=15, bad_row_ratio=0.08)
    totals = process.daily_totals(staged.raw_uri, staged.catalog_uri, "home", DAY)
    validated = staged.validate()
    metrics = pq.read_table(process.compute_metrics(validated["clean_uri"], str(tmp_path / "m.parquet"))["metrics_uri"])
    assert totals["order_date"] == DAY and totals["category"] == "home"
    assert totals["orders"] == validated["clean_rows"] == sum(metrics.column("orders").to_pylist())
    assert totals["quarantined"] == validated["quarantined_rows"]
    assert totals["units"] == sum(metrics.column("units").to_pylist())
    assert math.isclose(totals["revenue"], sum(metrics.column("revenue").to_pylist()), abs_tol=0.01)


def test_daily_totals_match_python_totals(tmp_path):
    staged = _synthetic_staged(tmp_path, rows=6_000, products=15, bad_row_ratio=0.08)
    reasons = staged.expected_reasons()
    clean = [row for row, reason in zip(staged.raw_rows, reasons) if reason is None]
    totals = process.daily_totals(staged.raw_uri, staged.catalog_uri, "home", DAY)
    assert totals["orders"] == len(clean)
    assert totals["quarantined"] == len(reasons) - len(clean)
    assert totals["units"] == sum(row["quantity"] for row in clean)
    revenue = sum(Decimal(str(row["unit_price"])) * row["quantity"] for row in clean)
    assert math.isclose(totals["revenue"], float(revenue), abs_tol=0.01)
