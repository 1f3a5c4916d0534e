"""Process: validate the raw orders (quarantining bad rows with a reason) and compute the
category's daily per-product metrics.

Both steps stream record batches, so memory stays bounded by the batch size and the
number of products, not by the day's order volume. Parquet files are read one row group
at a time (a reader kept across row groups holds on to buffers of every group it read),
and validate encodes its outputs on a worker thread while it reads and checks the next
batch (the Parquet writer releases the GIL), with at most a few batches in flight.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE, REQUIRED_RAW_FIELDS
from category_pipeline.storage import DatasetWriter, read_batches, read_metadata, write_dataset

# Checked in this order; a row is quarantined with the first reason that applies.
REASONS = ("null_field", "negative_price", "non_positive_quantity", "unknown_product", "outside_day")

# Batches handed to the writer thread and not yet written, at most: bounds memory.
WRITES_IN_FLIGHT = 2

# Columns of the clean and quarantined orders that Parquet dictionary-encodes: those with
# repeating values (unit prices come from a catalog). The others (order ids, timestamps,
# amounts) are nearly unique: trying a dictionary on them, only to fall back to plain encoding,
# took a fifth of the writing time for no smaller file.
DICTIONARY_COLUMNS = ["category", "order_date", "customer_id", "product_id", "quantity", "unit_price", "reason"]


def checks(batch: pa.RecordBatch, known_products: pa.Array, day: date) -> list[pa.Array]:
    """One boolean array (without nulls) per rule, in REASONS order: does the rule apply?"""
    null_field = pc.is_null(batch.column(REQUIRED_RAW_FIELDS[0]))
    for name in REQUIRED_RAW_FIELDS[1:]:
        column = batch.column(name)
        if column.null_count:
            null_field = pc.or_(null_field, pc.is_null(column))
    found = [
        null_field,
        pc.less(batch.column("unit_price"), 0.0),
        pc.less_equal(batch.column("quantity"), 0),
        pc.invert(pc.is_in(batch.column("product_id"), value_set=known_products)),
        _outside_day(batch.column("ordered_at"), day),
    ]
    return [check if not check.null_count else pc.fill_null(check, False) for check in found]


def _outside_day(ordered_at: pa.Array, day: date) -> pa.Array:
    """Is the order's date (UTC) not ``day``? For UTC (or naive) timestamps, a comparison with
    the day's bounds: the same answer as casting to a date, without the per-row cast."""
    tz = getattr(ordered_at.type, "tz", None)
    if pa.types.is_timestamp(ordered_at.type) and tz in (None, "UTC", "utc", "Etc/UTC", "+00:00"):
        start = datetime.combine(day, time.min, tzinfo=timezone.utc if tz else None)
        first = pa.scalar(start, ordered_at.type)
        after = pa.scalar(start + timedelta(days=1), ordered_at.type)
        return pc.or_(pc.less(ordered_at, first), pc.greater_equal(ordered_at, after))
    return pc.not_equal(pc.cast(ordered_at, pa.date32()), pa.scalar(day, pa.date32()))


def _any(arrays: list[pa.Array]) -> pa.Array:
    return functools.reduce(pc.or_, arrays)


def _line_amount(batch: pa.RecordBatch) -> pa.Array:
    """quantity x unit_price, rounded to cents: the amount of each order line."""
    return pc.round(pc.multiply(pc.cast(batch.column("quantity"), pa.float64()), batch.column("unit_price")), 2)


def _first_reason(found: list[pa.Array]) -> pa.Array:
    names = [f"c{i}" for i in range(len(found))]
    return pc.case_when(pc.make_struct(*found, field_names=names), *[pa.scalar(reason) for reason in REASONS])


def validate(
    raw_uri: str, catalog_uri: str, category: str, day: date, clean_uri: str, quarantine_uri: str
) -> dict:
    """Split raw orders into clean and quarantined datasets; returns URIs and counts."""
    known_products = _product_ids(catalog_uri)
    reasons: Counter[str] = Counter()
    clean = DatasetWriter(clean_uri, CLEAN_ORDERS, use_dictionary=_dictionary_columns(CLEAN_ORDERS))
    quarantine = DatasetWriter(quarantine_uri, QUARANTINE, use_dictionary=_dictionary_columns(QUARANTINE))
    try:
        with _WriterThread() as writes:
            # Decoded on this thread: the writer thread keeps the other core busy.
            for batch in read_batches(raw_uri, use_threads=False):
                found = checks(batch, known_products, day)
                bad = _any(found)
                good = batch
                if bad.true_count:
                    # Reasons only for the (few) bad rows: the first rule that applies.
                    reason = _first_reason([check.filter(bad) for check in found])
                    writes.submit(quarantine.write, batch.filter(bad).append_column("reason", reason))
                    for item in pc.value_counts(reason).to_pylist():
                        reasons[item["values"]] += item["counts"]
                    good = batch.filter(pc.invert(bad))
                writes.submit(clean.write, _enrich(good, category, day))
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


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    return [name for name in schema.names if name in DICTIONARY_COLUMNS]


class _WriterThread:
    """Runs the submitted writes in order on one worker thread, while the caller prepares the
    next batch. ``submit`` waits once more than WRITES_IN_FLIGHT writes are pending, and
    re-raises a failed write; leaving the block waits for the rest (or, on an error, for the
    running one only), so that nothing writes after the writers are committed or aborted."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: deque[Future] = deque()

    def submit(self, write: Callable[[pa.RecordBatch], None], batch: pa.RecordBatch) -> None:
        self._pending.append(self._executor.submit(write, batch))
        while len(self._pending) > WRITES_IN_FLIGHT:
            self._pending.popleft().result()

    def __enter__(self) -> _WriterThread:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            while exc_type is None and self._pending:
                self._pending.popleft().result()
        finally:
            for future in self._pending:
                future.cancel()
            self._executor.shutdown(wait=True)


def _product_ids(catalog_uri: str) -> pa.Array:
    return pa.concat_arrays(
        [batch.column("product_id") for batch in read_batches(catalog_uri, columns=["product_id"])]
        or [pa.array([], pa.string())]
    )


def _enrich(good: pa.RecordBatch, category: str, day: date) -> pa.RecordBatch:
    n = good.num_rows
    amount = _line_amount(good)
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
    batch so that only one batch and one partial result per product are held at once.

    Orders count the non-null order_ids; batches without an order_id column (read so by
    ``compute_metrics`` when the file shows it has no nulls) count their rows instead.
    Category and product_id may come dictionary-encoded."""
    partials: list[pa.Table] = []
    category = order_date = None
    for batch in batches:
        if not batch.num_rows:
            continue
        category, order_date = batch.column("category")[0], batch.column("order_date")[0]
        orders = ("order_id", "count") if "order_id" in batch.schema.names else ([], "count_all")
        partial = (
            pa.Table.from_batches([batch])
            .group_by("product_id")
            .aggregate([orders, ("quantity", "sum"), ("amount", "sum")])
        )
        key = partial.column("product_id")
        if pa.types.is_dictionary(key.type):  # dictionaries differ between row groups
            key = pc.cast(key, key.type.value_type)
        counts = partial.column("order_id_count" if orders[0] else "count_all")
        partials.append(
            pa.Table.from_arrays(
                [key, counts, partial.column("quantity_sum"), partial.column("amount_sum")], names=PARTIAL_COLUMNS
            )
        )
        if len(partials) > 16:  # fold now and then: bounded by products, not batches
            partials = [_fold(partials)]
    if not partials:
        return PRODUCT_METRICS.empty_table()
    if isinstance(category, pa.DictionaryScalar):
        category = category.value
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
    return pa.Table.from_arrays(
        [combined.column("product_id")] + [combined.column(f"{name}_sum") for name in PARTIAL_COLUMNS[1:]],
        names=PARTIAL_COLUMNS,
    )


def _never_null(uri: str, column: str) -> bool:
    """Do the file's statistics show that ``column`` has no null in any row group?"""
    metadata = read_metadata(uri)
    index = metadata.schema.names.index(column)
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(index)
        statistics = chunk.statistics if chunk.is_stats_set else None
        if statistics is None or not statistics.has_null_count or statistics.null_count:
            return False
    return True


def compute_metrics(clean_uri: str, metrics_uri: str) -> dict:
    # The orders of a product count its non-null order_ids: when the statistics show there
    # are none, counting rows gives the same and spares reading the widest column.
    columns = ["category", "order_date", "product_id", "quantity", "amount"]
    if not _never_null(clean_uri, "order_id"):
        columns.append("order_id")
    batches = read_batches(clean_uri, columns=columns, read_dictionary=["category", "product_id"])
    metrics = product_metrics(batches)
    rows = write_dataset(metrics_uri, PRODUCT_METRICS, metrics.to_batches())
    return {"metrics_uri": metrics_uri, "rows": rows}


def daily_totals(raw_uri: str, catalog_uri: str, category: str, day: date) -> dict:
    """One category's day in one row: orders, units and revenue of the good rows, and how
    many rows were quarantined. Streams the raw orders; writes nothing."""
    known_products = _product_ids(catalog_uri)
    orders = units = quarantined = 0
    revenue = 0.0
    for batch in read_batches(raw_uri):
        kept = batch.filter(pc.invert(_any(checks(batch, known_products, day))))
        quarantined += batch.num_rows - kept.num_rows
        orders += kept.num_rows
        units += pc.sum(kept.column("quantity")).as_py() or 0
        revenue += pc.sum(_line_amount(kept)).as_py() or 0.0
    return {
        "order_date": day,
        "category": category,
        "orders": orders,
        "units": units,
        "revenue": round(revenue, 2),
        "quarantined": quarantined,
    }
