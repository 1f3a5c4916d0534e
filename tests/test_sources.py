"""File sources: daily CSV/Parquet orders and catalogs named by {category} and {ds}."""

from __future__ import annotations

import csv
import json
import os
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline import process, sources
from category_pipeline.config import Category
from category_pipeline.extract import extract
from category_pipeline.schema import CATALOG, QUARANTINE, RAW_ORDERS, STAGED_RAW_ORDERS
from category_pipeline.sources import SourceError

DAY = date(2026, 2, 3)
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}

ORDERS = [
    {
        "order_id": "o1",
        "ordered_at": datetime(2026, 2, 3, 8, 30, tzinfo=timezone.utc),
        "customer_id": "C1",
        "product_id": "P1",
        "quantity": 2,
        "unit_price": 9.99,
    },
    {
        "order_id": "o2",
        "ordered_at": datetime(2026, 2, 3, 23, 59, 59, 123456, tzinfo=timezone.utc),
        "customer_id": "C2",
        "product_id": "P2",
        "quantity": 1,
        "unit_price": 120.5,
    },
    {
        "order_id": "o3",
        "ordered_at": datetime(2026, 2, 3, 0, 0, tzinfo=timezone.utc),
        "customer_id": "C3",
        "product_id": "P1",
        "quantity": 5,
        "unit_price": 0.25,
    },
]
CATALOG_ROWS = [{"product_id": "P1", "list_price": 10.0}, {"product_id": "P2", "list_price": 119.0}]


def _category(folder: Path, suffix: str, name: str = "books") -> Category:
    return Category.model_validate(
        {
            "name": name,
            "owner": "me",
            "schedule": "@daily",
            "start_date": "2026-01-01",
            "retries": 0,
            "retry_delay_minutes": 1,
            "source": {
                "kind": "files",
                "uri": f"{folder}/{{category}}/orders_{{ds}}.{suffix}",
                "catalog_uri": f"{folder}/{{category}}/catalog.{suffix}",
            },
            "resources": {"process": RESOURCES, "load": RESOURCES},
        }
    )


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or list(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in columns])


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _orders_path(folder: Path, suffix: str, name="books", day=DAY) -> Path:
    return folder / name / f"orders_{day.isoformat()}.{suffix}"


def _read_staged(category: Category, day: date = DAY) -> pa.Table:
    return pa.Table.from_batches(list(sources.orders(category, day)), STAGED_RAW_ORDERS)


def _read_orders(category: Category, day: date = DAY) -> pa.Table:
    """The orders read, in RAW_ORDERS: every row parsed (no raw text kept)."""
    staged = _read_staged(category, day)
    assert staged.column("raw").null_count == staged.num_rows
    return staged.drop_columns(["raw"])


# --- reading --------------------------------------------------------------------------


def test_csv_orders_and_catalog_are_read(tmp_path):
    _write_csv(_orders_path(tmp_path, "csv"), ORDERS)
    _write_csv(tmp_path / "books" / "catalog.csv", CATALOG_ROWS)
    category = _category(tmp_path, "csv")
    orders = _read_orders(category)
    assert orders.schema.equals(RAW_ORDERS)
    assert orders.to_pylist() == ORDERS
    catalog = sources.catalog(category, DAY)
    assert catalog.schema.equals(CATALOG)
    assert catalog.to_pylist() == CATALOG_ROWS


def test_csv_columns_in_another_order_and_extra_columns_are_accepted(tmp_path):
    columns = ["note", "unit_price", "quantity", "product_id", "customer_id", "ordered_at", "order_id"]
    _write_csv(_orders_path(tmp_path, "csv"), [{**row, "note": "x"} for row in ORDERS], columns)
    assert _read_orders(_category(tmp_path, "csv")).to_pylist() == ORDERS


def test_parquet_orders_and_catalog_are_read_and_conformed(tmp_path):
    # Other (castable) types than the pipeline's and an extra column: conformed on read.
    orders = pa.Table.from_pylist(ORDERS, RAW_ORDERS)
    orders = orders.set_column(4, "quantity", orders.column("quantity").cast(pa.int64()))
    orders = orders.set_column(1, "ordered_at", orders.column("ordered_at").cast(pa.timestamp("ns", tz="UTC")))
    orders = orders.append_column("note", pa.array(["a", "b", "c"]))
    _write_parquet(_orders_path(tmp_path, "parquet"), orders)
    _write_parquet(tmp_path / "books" / "catalog.parquet", pa.Table.from_pylist(CATALOG_ROWS, CATALOG))
    category = _category(tmp_path, "parquet")
    read = _read_orders(category)
    assert read.schema.equals(RAW_ORDERS)
    assert read.to_pylist() == ORDERS
    assert sources.catalog(category, DAY).to_pylist() == CATALOG_ROWS


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_uri_template_picks_the_file_of_the_category_and_day(tmp_path, suffix):
    other_day = date(2026, 2, 4)
    write = _write_csv if suffix == "csv" else lambda p, rows: _write_parquet(p, pa.Table.from_pylist(rows, RAW_ORDERS))
    write(_orders_path(tmp_path, suffix, "books", DAY), ORDERS[:1])
    write(_orders_path(tmp_path, suffix, "books", other_day), ORDERS[1:])
    write(_orders_path(tmp_path, suffix, "music", DAY), ORDERS[2:])
    assert _read_orders(_category(tmp_path, suffix, "books"), DAY).to_pylist() == ORDERS[:1]
    assert _read_orders(_category(tmp_path, suffix, "books"), other_day).to_pylist() == ORDERS[1:]
    assert _read_orders(_category(tmp_path, suffix, "music"), DAY).to_pylist() == ORDERS[2:]


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_missing_orders_file_raises_source_error_naming_it(tmp_path, suffix):
    expected = str(_orders_path(tmp_path, suffix))
    with pytest.raises(SourceError, match="does not exist") as raised:
        _read_orders(_category(tmp_path, suffix))
    assert expected in str(raised.value)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_missing_catalog_file_raises_source_error_naming_it(tmp_path, suffix):
    with pytest.raises(SourceError) as raised:
        sources.catalog(_category(tmp_path, suffix), DAY)
    assert str(tmp_path / "books" / f"catalog.{suffix}") in str(raised.value)


def test_parquet_lacking_a_column_raises_source_error_naming_it(tmp_path):
    table = pa.Table.from_pylist(ORDERS, RAW_ORDERS).drop_columns(["unit_price"])
    _write_parquet(_orders_path(tmp_path, "parquet"), table)
    with pytest.raises(SourceError, match="unit_price") as raised:
        _read_orders(_category(tmp_path, "parquet"))
    assert str(_orders_path(tmp_path, "parquet")) in str(raised.value)


def test_csv_lacking_a_column_raises_source_error_naming_it(tmp_path):
    columns = [name for name in RAW_ORDERS.names if name != "unit_price"]
    _write_csv(_orders_path(tmp_path, "csv"), ORDERS, columns)
    with pytest.raises(SourceError, match="unit_price"):
        _read_orders(_category(tmp_path, "csv"))


def test_csv_catalog_lacking_a_column_raises_source_error(tmp_path):
    _write_csv(tmp_path / "books" / "catalog.csv", [{"product_id": "P1"}])
    with pytest.raises(SourceError, match="list_price"):
        sources.catalog(_category(tmp_path, "csv"), DAY)


def test_parquet_null_customer_stays_null(tmp_path):
    rows = [dict(ORDERS[0], customer_id=None)]
    _write_parquet(_orders_path(tmp_path, "parquet"), pa.Table.from_pylist(rows, RAW_ORDERS))
    assert _read_orders(_category(tmp_path, "parquet")).to_pylist() == rows


def test_csv_row_with_empty_order_id_is_quarantined(tmp_path):
    source = tmp_path / "source"
    _write_csv(_orders_path(source, "csv"), [ORDERS[0], dict(ORDERS[1], order_id=None)])
    _write_csv(source / "books" / "catalog.csv", CATALOG_ROWS)
    result = _validate_extracted(tmp_path, source)
    assert result["quarantine_reasons"] == {"null_field": 1}
    assert pq.read_table(result["clean_uri"]).column("order_id").to_pylist() == ["o1"]


def _validate_extracted(tmp_path, source: Path) -> dict:
    extracted = extract(_category(source, "csv"), DAY, str(tmp_path / "staging"))
    return process.validate(
        extracted["raw_uri"],
        extracted["catalog_uri"],
        "books",
        DAY,
        str(tmp_path / "clean.parquet"),
        str(tmp_path / "quarantine.parquet"),
    )


@pytest.mark.parametrize(
    "column,text",
    [("quantity", "abc"), ("quantity", "2.5"), ("quantity", "99999999999"), ("unit_price", "9,99"), ("ordered_at", "yesterday")],
)
def test_csv_unparseable_cell_quarantines_only_its_row_with_its_text(tmp_path, column, text):
    source = tmp_path / "source"
    rows = [ORDERS[0], dict(ORDERS[1], **{column: text}), ORDERS[2]]
    _write_csv(_orders_path(source, "csv"), rows)
    _write_csv(source / "books" / "catalog.csv", CATALOG_ROWS)
    result = _validate_extracted(tmp_path, source)
    assert result["quarantine_reasons"] == {"unparseable": 1}
    assert pq.read_table(result["clean_uri"]).column("order_id").to_pylist() == ["o1", "o3"]
    quarantine = pq.read_table(result["quarantine_uri"])
    assert quarantine.schema.equals(QUARANTINE)
    (row,) = quarantine.to_pylist()
    assert row["order_id"] == "o2" and row["reason"] == "unparseable"
    assert row[column] is None  # the typed cell that did not parse
    raw = json.loads(row["raw"])
    assert raw[column] == text
    assert raw["order_id"] == "o2" and raw["product_id"] == "P2"


def test_csv_unparseable_cells_in_many_rows_of_a_large_file(tmp_path):
    source = tmp_path / "source"
    rows = [dict(ORDERS[0], order_id=f"o{i}") for i in range(5_000)]
    bad = {7, 1_234, 1_235, 4_999}
    for i in bad:
        rows[i]["quantity"] = "x"
    _write_csv(_orders_path(source, "csv"), rows)
    staged = _read_staged(_category(source, "csv"))
    assert staged.num_rows == 5_000
    raw = staged.column("raw").to_pylist()
    assert {i for i, text in enumerate(raw) if text is not None} == bad
    assert staged.column("quantity").null_count == len(bad)


def test_csv_catalog_with_unparseable_price_still_raises_source_error(tmp_path):
    _write_csv(tmp_path / "books" / "catalog.csv", [{"product_id": "P1", "list_price": "cheap"}])
    with pytest.raises(SourceError, match="catalog"):
        sources.catalog(_category(tmp_path, "csv"), DAY)


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_corrupt_parquet_source_raises_source_error_naming_the_file(tmp_path, damage):
    path = _orders_path(tmp_path, "parquet")
    _write_parquet(path, pa.Table.from_pylist(ORDERS * 2_000, RAW_ORDERS))
    content = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    else:
        path.write_bytes(content[:4] + bytes(len(content) // 2) + content[4 + len(content) // 2 :])
    with pytest.raises(SourceError) as raised:
        _read_orders(_category(tmp_path, "parquet"))
    assert str(path) in str(raised.value)
    assert isinstance(raised.value.__cause__, (pa.ArrowException, OSError))


def test_parquet_with_unconvertible_value_raises_source_error(tmp_path):
    table = pa.Table.from_pylist(ORDERS, RAW_ORDERS)
    table = table.set_column(4, "quantity", pa.array(["2", "abc", "5"]))
    _write_parquet(_orders_path(tmp_path, "parquet"), table)
    with pytest.raises(SourceError) as raised:
        _read_orders(_category(tmp_path, "parquet"))
    assert str(_orders_path(tmp_path, "parquet")) in str(raised.value)


# --- extract --------------------------------------------------------------------------


def _staged_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_extract_lands_raw_orders_and_catalog_in_staging(tmp_path, suffix):
    source = tmp_path / "source"
    if suffix == "csv":
        _write_csv(_orders_path(source, suffix), ORDERS)
        _write_csv(source / "books" / "catalog.csv", CATALOG_ROWS)
    else:
        _write_parquet(_orders_path(source, suffix), pa.Table.from_pylist(ORDERS, RAW_ORDERS))
        _write_parquet(source / "books" / "catalog.parquet", pa.Table.from_pylist(CATALOG_ROWS, CATALOG))
    staging = tmp_path / "staging"
    result = extract(_category(source, suffix), DAY, str(staging))
    assert result["rows"] == len(ORDERS)
    assert result["raw_uri"] == f"{staging}/books/{DAY}/raw_orders.parquet"
    assert result["catalog_uri"] == f"{staging}/books/{DAY}/catalog.parquet"
    assert pq.read_table(result["raw_uri"]).drop_columns(["raw"]).to_pylist() == ORDERS
    assert pq.read_table(result["catalog_uri"]).to_pylist() == CATALOG_ROWS
    assert _staged_files(staging) == [f"books/{DAY}/catalog.parquet", f"books/{DAY}/raw_orders.parquet"]


def test_extract_of_missing_orders_file_leaves_no_raw_dataset(tmp_path):
    source = tmp_path / "source"
    _write_csv(source / "books" / "catalog.csv", CATALOG_ROWS)
    staging = tmp_path / "staging"
    with pytest.raises(SourceError):
        extract(_category(source, "csv"), DAY, str(staging))
    assert not any(name.startswith(f"books/{DAY}/raw_orders") for name in _staged_files(staging))


def test_extract_of_synthetic_source_counts_its_rows(tmp_path):
    category = Category.model_validate(
        {
            "name": "toys",
            "owner": "me",
            "schedule": None,
            "start_date": "2026-01-01",
            "retries": 0,
            "retry_delay_minutes": 1,
            "source": {"kind": "synthetic", "rows_per_day": 2_345, "products": 7},
            "resources": {"process": RESOURCES, "load": RESOURCES},
        }
    )
    result = extract(category, DAY, str(tmp_path))
    assert result["rows"] == 2_345 == pq.read_metadata(result["raw_uri"]).num_rows
    assert pq.read_metadata(result["catalog_uri"]).num_rows == 7
    assert os.path.exists(result["raw_uri"])
