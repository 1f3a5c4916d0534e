"""Arrow schemas of the staged datasets and the warehouse tables they load into."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

RAW_ORDERS = pa.schema(
    [
        ("order_id", pa.string()),
        ("ordered_at", pa.timestamp("us", tz="UTC")),
        ("customer_id", pa.string()),
        ("product_id", pa.string()),
        ("quantity", pa.int32()),
        ("unit_price", pa.float64()),
    ]
)
REQUIRED_RAW_FIELDS = ("order_id", "ordered_at", "product_id", "quantity", "unit_price")

CATALOG = pa.schema([("product_id", pa.string()), ("list_price", pa.float64())])

# The original text of a row a file source could not parse (a JSON object of its cells as read),
# null for every other row. Staged raw orders carry it (file sources), so does the quarantine.
RAW_TEXT = pa.field("raw", pa.string())
STAGED_RAW_ORDERS = RAW_ORDERS.append(RAW_TEXT)

QUARANTINE = RAW_ORDERS.append(pa.field("reason", pa.string())).append(RAW_TEXT)

# The raw columns, with the partition columns in front and the line amount behind.
CLEAN_ORDERS = pa.schema(
    [("category", pa.string()), ("order_date", pa.date32()), *RAW_ORDERS, ("amount", pa.float64())]
)

PRODUCT_METRICS = pa.schema(
    [
        ("category", pa.string()),
        ("order_date", pa.date32()),
        ("product_id", pa.string()),
        ("orders", pa.int64()),
        ("units", pa.int64()),
        ("revenue", pa.float64()),
    ]
)

DAILY_SUMMARY = pa.schema(
    [
        ("order_date", pa.date32()),
        ("category", pa.string()),
        ("orders", pa.int64()),
        ("units", pa.int64()),
        ("revenue", pa.float64()),
        ("quarantined", pa.int64()),
    ]
)


@dataclass(frozen=True)
class WarehouseTable:
    """A warehouse table: the staged schema it takes and the columns that partition it."""

    name: str
    schema: pa.Schema
    primary_key: tuple[str, ...]
    partition_by: tuple[str, ...]


WAREHOUSE_TABLES = {
    table.name: table
    for table in (
        WarehouseTable("orders", CLEAN_ORDERS, ("category", "order_date", "order_id"), ("category", "order_date")),
        WarehouseTable(
            "category_daily_metrics",
            PRODUCT_METRICS,
            ("category", "order_date", "product_id"),
            ("category", "order_date"),
        ),
        WarehouseTable("daily_sales_summary", DAILY_SUMMARY, ("order_date", "category"), ("order_date",)),
    )
}
