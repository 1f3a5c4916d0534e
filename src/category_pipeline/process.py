"""Process: validate the raw orders (quarantining bad rows with a reason) and compute the
category's daily per-product metrics.

Both steps stream record batches, so memory stays bounded by the batch size and the
number of products, not by the day's order volume.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE, REQUIRED_RAW_FIELDS
from category_pipeline.storage import DatasetWriter, read_batches, write_dataset

# Checked in this order; a row is quarantined with the first reason that applies.
REASONS = ("null_field", "negative_price", "non_positive_quantity", "unknown_product", "outside_day")


def classify(batch: pa.RecordBatch, known_products: pa.Array, day: date) -> pa.Array:
    """The quarantine reason of every row, or null for a good row."""
    null_field = pc.is_null(batch.column(REQUIRED_RAW_FIELDS[0]))
    for name in REQUIRED_RAW_FIELDS[1:]:
        null_field = pc.or_(null_field, pc.is_null(batch.column(name)))
    checks = [
        null_field,
        pc.less(batch.column("unit_price"), 0.0),
        pc.less_equal(batch.column("quantity"), 0),
        pc.invert(pc.is_in(batch.column("product_id"), value_set=known_products)),
        pc.not_equal(pc.cast(batch.column("ordered_at"), pa.date32()), pa.scalar(day, pa.date32())),
    ]
    checks = [pc.fill_null(check, False) for check in checks]
    names = [f"c{i}" for i in range(len(checks))]
    return pc.case_when(
        pc.make_struct(*checks, field_names=names), *[pa.scalar(reason) for reason in REASONS]
    )


def validate(
    raw_uri: str, catalog_uri: str, category: str, day: date, clean_uri: str, quarantine_uri: str
) -> dict:
    """Split raw orders into clean and quarantined datasets; returns URIs and counts."""
    known_products = _product_ids(catalog_uri)
    reasons: Counter[str] = Counter()
    clean = DatasetWriter(clean_uri, CLEAN_ORDERS)
    quarantine = DatasetWriter(quarantine_uri, QUARANTINE)
    try:
        for batch in read_batches(raw_uri):
            reason = classify(batch, known_products, day)
            bad = pc.is_valid(reason)
            quarantined = batch.filter(bad).append_column("reason", reason.filter(bad))
            quarantine.write(quarantined)
            for item in pc.value_counts(quarantined.column("reason")).to_pylist():
                reasons[item["values"]] += item["counts"]
            clean.write(_enrich(batch.filter(pc.invert(bad)), category, day))
        clean.commit()
        quarantine.commit()
    except BaseException:
        clean.abort()
        quarantine.abort()
        raise
    return {
        "clean_uri": clean_uri,
        "quarantine_uri": quarantine_uri,
        "clean_rows": clean.rows,
        "quarantined_rows": quarantine.rows,
        "quarantine_reasons": dict(sorted(reasons.items())),
    }


def _product_ids(catalog_uri: str) -> pa.Array:
    return pa.concat_arrays(
        [batch.column("product_id") for batch in read_batches(catalog_uri, columns=["product_id"])]
        or [pa.array([], pa.string())]
    )


def _enrich(good: pa.RecordBatch, category: str, day: date) -> pa.RecordBatch:
    n = good.num_rows
    amount = pc.round(pc.multiply(pc.cast(good.column("quantity"), pa.float64()), good.column("unit_price")), 2)
    columns = {
        "category": pa.repeat(pa.scalar(category), n),
        "order_date": pa.repeat(pa.scalar(day, pa.date32()), n),
        "amount": amount,
    }
    return pa.RecordBatch.from_arrays(
        [columns[f.name] if f.name in columns else good.column(f.name) for f in CLEAN_ORDERS],
        schema=CLEAN_ORDERS,
    )


def product_metrics(batches) -> pa.Table:
    """Per-product orders, units and revenue of clean-order batches, aggregated batch by
    batch so that only one batch and one partial result per product are held at once."""
    partials: list[pa.Table] = []
    category = order_date = None
    for batch in batches:
        if not batch.num_rows:
            continue
        category, order_date = batch.column("category")[0], batch.column("order_date")[0]
        partial = (
            pa.Table.from_batches([batch])
            .group_by("product_id")
            .aggregate([("order_id", "count"), ("quantity", "sum"), ("amount", "sum")])
        )
        partials.append(partial.select(PARTIAL_COLUMNS))
        if len(partials) > 16:  # fold now and then: bounded by products, not batches
            partials = [_fold(partials)]
    if not partials:
        return PRODUCT_METRICS.empty_table()
    totals = _fold(partials).sort_by("product_id")
    n = totals.num_rows
    return pa.Table.from_arrays(
        [
            pa.repeat(category, n),
            pa.repeat(order_date, n),
            totals.column("product_id"),
            pc.cast(totals.column("order_id_count"), pa.int64()),
            pc.cast(totals.column("quantity_sum"), pa.int64()),
            pc.round(totals.column("amount_sum"), 2),
        ],
        schema=PRODUCT_METRICS,
    )


# Partial aggregates are always in this column order, so that fresh and folded partials
# concatenate (pyarrow places the group key differently in different versions).
PARTIAL_COLUMNS = ["product_id", "order_id_count", "quantity_sum", "amount_sum"]


def _fold(partials: list[pa.Table]) -> pa.Table:
    combined = pa.concat_tables(partials).group_by("product_id").aggregate(
        [(name, "sum") for name in PARTIAL_COLUMNS[1:]]
    )
    return pa.table(
        [combined.column("product_id")] + [combined.column(f"{name}_sum") for name in PARTIAL_COLUMNS[1:]],
        names=PARTIAL_COLUMNS,
    )


def compute_metrics(clean_uri: str, metrics_uri: str) -> dict:
    columns = ["category", "order_date", "order_id", "product_id", "quantity", "amount"]
    metrics = product_metrics(read_batches(clean_uri, columns=columns))
    rows = write_dataset(metrics_uri, PRODUCT_METRICS, metrics.to_batches())
    return {"metrics_uri": metrics_uri, "rows": rows}


def daily_totals(raw_uri: str, catalog_uri: str, category: str, day: date) -> dict:
    """One category's day in one row: orders, units and revenue of the good rows, and how
    many rows were quarantined. Streams the raw orders; writes nothing."""
    known_products = _product_ids(catalog_uri)
    orders = units = quarantined = 0
    revenue = 0.0
    for batch in read_batches(raw_uri):
        good = pc.is_null(classify(batch, known_products, day))
        kept = batch.filter(good)
        quarantined += batch.num_rows - kept.num_rows
        orders += kept.num_rows
        units += pc.sum(kept.column("quantity")).as_py() or 0
        amount = pc.multiply(pc.cast(kept.column("quantity"), pa.float64()), kept.column("unit_price"))
        revenue += pc.sum(pc.round(amount, 2)).as_py() or 0.0
    return {
        "order_date": day,
        "category": category,
        "orders": orders,
        "units": units,
        "revenue": round(revenue, 2),
        "quarantined": quarantined,
    }
