"""Process: validate the raw orders (quarantining bad rows with a reason) and compute the
category's daily per-product metrics.

Both steps stream record batches, so memory stays bounded by the batch size and the
number of products, not by the day's order volume. Parquet files are read one row group
at a time (a reader kept across row groups holds on to buffers of every group it read),
and validate encodes its outputs on a worker thread while it reads and checks the next
batch (the Parquet writer releases the GIL), with at most a few batches in flight.

Duplicate order_ids need the whole day: validate first reads the order_id column alone to
find the ids that may repeat (``DuplicateOrderIds``), then compares only those, as strings,
while it streams the day. It logs rows in, clean, quarantined by reason and rows/s.
"""

from __future__ import annotations

import functools
import logging
import mmap
import time as clock
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline import metrics
from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE, REQUIRED_RAW_FIELDS, RAW_TEXT
from category_pipeline.storage import DatasetWriter, read_batches, read_metadata, write_dataset

log = logging.getLogger(__name__)

# Checked in this order; a row is quarantined with the first reason that applies:
#   unparseable            a cell of the source file did not parse (its text is kept in `raw`)
#   null_field             a required field is missing
#   invalid_price          unit_price, or the line amount quantity x unit_price, is NaN, infinite
#                          or too large to be rounded to cents (|amount| >= MAX_AMOUNT)
#   negative_price         unit_price < 0
#   non_positive_quantity  quantity <= 0
#   unknown_product        product_id not in the day's catalog
#   outside_day            ordered_at (UTC) not on the day
#   duplicate_order_id     an order_id already seen that day in a row passing every rule above:
#                          the first such row is kept, every later one quarantined
# duplicate_order_id comes last: a row bad for another reason keeps that reason, and does not
# count as "the first" of its order_id.
REASONS = (
    "unparseable",
    "null_field",
    "invalid_price",
    "negative_price",
    "non_positive_quantity",
    "unknown_product",
    "outside_day",
    "duplicate_order_id",
)
ROW_REASONS = REASONS[:-1]  # decided by the row alone; the last needs the rows before it

# Amounts at or beyond this overflow when rounded to cents (x 100): not a price, an error.
MAX_AMOUNT = np.finfo(np.float64).max / 100

# Batches handed to the writer thread and not yet written, at most: bounds memory.
WRITES_IN_FLIGHT = 2

# Columns of the clean and quarantined orders that Parquet dictionary-encodes: those with
# repeating values (unit prices come from a catalog). The others (order ids, timestamps,
# amounts) are nearly unique: trying a dictionary on them, only to fall back to plain encoding,
# took a fifth of the writing time for no smaller file.
DICTIONARY_COLUMNS = ["category", "order_date", "customer_id", "product_id", "quantity", "unit_price", "reason"]


def checks(batch: pa.RecordBatch, known_products: pa.Array, day: date) -> list[pa.Array]:
    """One boolean array (without nulls) per row rule, in ROW_REASONS order: does it apply?"""
    null_field = pc.is_null(batch.column(REQUIRED_RAW_FIELDS[0]))
    for name in REQUIRED_RAW_FIELDS[1:]:
        column = batch.column(name)
        if column.null_count:
            null_field = pc.or_(null_field, pc.is_null(column))
    if RAW_TEXT.name in batch.schema.names:
        unparseable = pc.is_valid(batch.column(RAW_TEXT.name))
    else:  # staged before file sources kept unparseable rows, or a synthetic day
        unparseable = pa.array(np.zeros(batch.num_rows, dtype=bool))
    amount = pc.multiply(pc.cast(batch.column("quantity"), pa.float64()), batch.column("unit_price"))
    found = [
        unparseable,
        null_field,
        # NaN and infinities compare false: not less than the bound, so invalid.
        pc.invert(pc.less(pc.abs(amount), MAX_AMOUNT)),
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


class DuplicateOrderIds:
    """Finds the order_ids already kept earlier in the day, across batches and row groups,
    exactly and in bounded memory, in two passes.

    First, over the order_id column alone: each id gets a 64-bit hash, and goes to one of
    2^k buckets (4 to 8 per row) by its low bits, marking the buckets that get a second id.
    Of the ids in marked buckets (~14%), those whose whole hash occurs more than once are the
    candidates: every repeated id, and by chance next to none else. Then, during validation
    (``add``), only the candidates are compared, as strings, with those kept before: exact,
    whatever the hash. Memory, at 10M rows: 128 MB of buckets and 80 MB of hashes during the
    first pass; 10 MB (a byte a row) and the strings of the kept candidates after it. Time:
    ~1 s at 10M rows (measured with bench/process_bench.py on 2 cores)."""

    def __init__(self, raw_uri: str, rows: int):
        bits = max(10, min(31, (rows * 6).bit_length()))
        mask = np.uint64((1 << bits) - 1)
        # Per bucket: 0 no id yet; SHARED two ids or more; else which row of the current
        # chunk (+1) wrote it last.
        last = _zeroed(1 << bits, np.uint16)
        hashes = []
        for batch_hashes in _hashes_ahead(raw_uri):
            hashes.append(batch_hashes)
            batch_buckets = (batch_hashes & mask).astype(np.intp)
            for start in range(0, len(batch_buckets), _SHARED - 1):  # tags unique in a chunk
                chunk = batch_buckets[start : start + _SHARED - 1]
                tags = np.arange(1, len(chunk) + 1, dtype=np.uint16)
                before = last[chunk]
                last[chunk] = tags  # of repeated buckets, one tag stays: the others see it
                again = (before != 0) | (last[chunk] != tags)
                last[chunk[again]] = _SHARED
        # The ids of shared buckets whose whole 64-bit hash is shared too: the repeated ids
        # (and, by chance, next to none else). Per row of the day (1 byte); the rest goes.
        total = sum(len(batch_hashes) for batch_hashes in hashes)
        rows, shared, start = [], [], 0
        while hashes:
            batch_hashes = hashes.pop(0)
            in_shared = np.flatnonzero(last[(batch_hashes & mask).astype(np.intp)] == _SHARED)
            rows.append(in_shared + start)
            shared.append(batch_hashes[in_shared])
            start += len(batch_hashes)
        del last
        rows = np.concatenate(rows) if rows else np.zeros(0, np.intp)
        shared = np.concatenate(shared) if shared else np.zeros(0, np.uint64)
        order = np.argsort(shared)
        ordered = shared[order]
        repeated = np.zeros(len(rows), dtype=bool)
        same = ordered[1:] == ordered[:-1]
        repeated[1:] |= same
        repeated[:-1] |= same
        self.maybe = np.zeros(total, dtype=bool)
        self.maybe[rows[order[repeated]]] = True
        del rows, shared, order, ordered
        self.offset = 0  # rows of the day seen by ``add``
        self.kept: set[str] = set()

    def add(self, order_ids: pa.Array, kept: np.ndarray | None = None) -> np.ndarray:
        """The next batch of the day, in order: are its ids (at rows ``kept``, else all; none
        null) among those kept before, in it or earlier? Keeps the others."""
        maybe = self.maybe[self.offset : self.offset + len(order_ids)]
        self.offset += len(order_ids)
        rows = np.flatnonzero(maybe) if kept is None else kept[maybe[kept]]
        duplicate = np.zeros(len(order_ids), dtype=bool)
        if len(rows):
            seen = self.kept
            for row, order_id in zip(rows.tolist(), order_ids.take(pa.array(rows)).to_pylist()):
                if order_id in seen:
                    duplicate[row] = True
                else:
                    seen.add(order_id)
        return duplicate


_SHARED = 0xFFFF


def _hashes_ahead(raw_uri: str):
    """The hash of each order_id, batch by batch: the next batch decoded and hashed on a
    worker thread while the caller marks the buckets of this one."""
    batches = read_batches(raw_uri, columns=["order_id"], use_threads=False)

    def next_hashes() -> np.ndarray | None:
        batch = next(batches, None)
        return None if batch is None else _hash_strings(batch.column(0))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="order-id-hash") as pool:
        ahead = pool.submit(next_hashes)
        while (hashes := ahead.result()) is not None:
            ahead = pool.submit(next_hashes)
            yield hashes


def _zeroed(n: int, dtype) -> np.ndarray:
    """n zeros, on transparent huge pages where the system has them, and written once up
    front: the maps are probed at random, and faulting their pages in at random (or missing
    the TLB on 4 KiB pages) made that 3x slower."""
    size = n * np.dtype(dtype).itemsize
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is None or size < (4 << 20):
        return np.zeros(n, dtype)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        memory.madvise(advise)
    except OSError:
        pass
    array = np.frombuffer(memory, dtype)
    array.fill(0)
    return array


_KEYS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], np.uint64)


def _hash_strings(strings: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string (of a null: as of ''): its bytes as 64-bit words
    (zero-padded) times odd keys, summed with its length times a key, then mixed with the
    finalizer of MurmurHash3."""
    if pa.types.is_large_string(strings.type) or pa.types.is_dictionary(strings.type):
        strings = pc.cast(strings, pa.string())
    n = len(strings)
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, n + 1, strings.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None and n else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    h = lengths.astype(np.uint64) * np.uint64(0x9FB21C651E98DF25)
    longest = int(lengths.max()) if n else 0
    if n and int(lengths.min()) == longest:  # the usual case: ids of one width, one block
        groups = [(slice(None), data[offsets[0] : offsets[-1]].reshape(n, longest))]
    else:
        groups = []
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            groups.append((rows, data[offsets[rows][:, None] + np.arange(length)]))
    for rows, cells in groups:
        width = -(-cells.shape[1] // 8) * 8
        if width != cells.shape[1]:
            padded = np.zeros((cells.shape[0], width), np.uint8)
            padded[:, : cells.shape[1]] = cells
            cells = padded
        words = np.ascontiguousarray(cells).view("<u8")
        part = h[rows]
        for i in range(words.shape[1]):
            part += words[:, i] * _KEYS[i % len(_KEYS)] * np.uint64(2 * (i // len(_KEYS)) + 1)
        h[rows] = part
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


class _Classifier:
    """Every rule of REASONS over a day's batches, in order: the row rules (``checks``), then
    the duplicates among the rows that pass them (``duplicates``, which must see the batches
    in order)."""

    def __init__(self, known_products: pa.Array, day: date, raw_uri: str):
        self.known_products, self.day = known_products, day
        self.seen = DuplicateOrderIds(raw_uri, _rows(raw_uri))

    def checks(self, batch: pa.RecordBatch) -> list[pa.Array]:
        return checks(batch, self.known_products, self.day)

    def duplicates(self, batch: pa.RecordBatch, found: list[pa.Array]) -> tuple[list[pa.Array], pa.Array]:
        """(one boolean array per reason, whether any applies), from the row rules' arrays."""
        bad = _any(found)
        kept = np.flatnonzero(np.asarray(pc.invert(bad))) if bad.true_count else None
        repeated = self.seen.add(batch.column("order_id"), kept)
        duplicate = pa.array(repeated)
        return [*found, duplicate], pc.or_(bad, duplicate) if repeated.any() else bad

    def __call__(self, batch: pa.RecordBatch) -> tuple[list[pa.Array], pa.Array]:
        return self.duplicates(batch, self.checks(batch))


def _first_reason(found: list[pa.Array]) -> pa.Array:
    names = [f"c{i}" for i in range(len(found))]
    return pc.case_when(pc.make_struct(*found, field_names=names), *[pa.scalar(reason) for reason in REASONS])


def validate(
    raw_uri: str, catalog_uri: str, category: str, day: date, clean_uri: str, quarantine_uri: str
) -> dict:
    """Split raw orders into clean and quarantined datasets; returns URIs and counts."""
    with metrics.step_timer(category, "validate"):
        result = _validate(raw_uri, catalog_uri, category, day, clean_uri, quarantine_uri)
    metrics.validated(category, result["clean_rows"], result["quarantine_reasons"], REASONS)
    return result


def _validate(
    raw_uri: str, catalog_uri: str, category: str, day: date, clean_uri: str, quarantine_uri: str
) -> dict:
    started = clock.perf_counter()
    classify = _Classifier(_product_ids(catalog_uri), day, raw_uri)
    reasons: Counter[str] = Counter()
    rows_in = 0
    clean = DatasetWriter(clean_uri, CLEAN_ORDERS, use_dictionary=_dictionary_columns(CLEAN_ORDERS))
    quarantine = DatasetWriter(quarantine_uri, QUARANTINE, use_dictionary=_dictionary_columns(QUARANTINE))
    try:
        with _WriterThread() as writes:
            # Decoded on this thread: the writer thread keeps the other core busy.
            for batch in read_batches(raw_uri, use_threads=False):
                rows_in += batch.num_rows
                found, bad = classify(batch)
                good = batch
                if bad.true_count:
                    # Reasons only for the (few) bad rows: the first rule that applies.
                    reason = _first_reason([check.filter(bad) for check in found])
                    writes.submit(quarantine.write, _quarantined(batch.filter(bad), reason))
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
    seconds = clock.perf_counter() - started
    by_reason = ", ".join(f"{n:,} {reason}" for reason, n in sorted(reasons.items())) or "none"
    log.info(
        "validated %s %s: %s rows in, %s clean, %s quarantined (%s), in %.2f s (%s rows/s)",
        category,
        day,
        f"{rows_in:,}",
        f"{clean.rows:,}",
        f"{quarantine.rows:,}",
        by_reason,
        seconds,
        f"{rows_in / seconds:,.0f}" if seconds > 0 else "-",
    )
    return {
        "clean_uri": clean_uri,
        "quarantine_uri": quarantine_uri,
        "clean_rows": clean.rows,
        "quarantined_rows": quarantine.rows,
        "quarantine_reasons": dict(sorted(reasons.items())),
    }


def _quarantined(bad: pa.RecordBatch, reason: pa.Array) -> pa.RecordBatch:
    """The bad rows in the QUARANTINE schema: their raw columns, reason and raw text."""
    names = bad.schema.names
    columns = []
    for field in QUARANTINE:
        if field.name == "reason":
            columns.append(reason)
        elif field.name in names:
            columns.append(bad.column(field.name))
        else:  # no raw text staged (a synthetic source, or an older staged dataset)
            columns.append(pa.nulls(bad.num_rows, field.type))
    return pa.RecordBatch.from_arrays(columns, schema=QUARANTINE)


def _rows(uri: str) -> int:
    return read_metadata(uri).num_rows


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

    def submit(self, write: Callable[..., None], *args) -> None:
        self._pending.append(self._executor.submit(write, *args))
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


def compute_metrics(clean_uri: str, metrics_uri: str, category: str | None = None) -> dict:
    """Per-product metrics of the clean orders, written to ``metrics_uri``. ``category`` names
    the step's duration metric; by default, the category of the staged ``metrics_uri``."""
    with metrics.step_timer(category or metrics.category_of_staged(metrics_uri), "compute_metrics"):
        return _compute_metrics(clean_uri, metrics_uri)


def _compute_metrics(clean_uri: str, metrics_uri: str) -> dict:
    # The orders of a product count its non-null order_ids: when the statistics show there
    # are none, counting rows gives the same and spares reading the widest column.
    columns = ["category", "order_date", "product_id", "quantity", "amount"]
    if not _never_null(clean_uri, "order_id"):
        columns.append("order_id")
    batches = read_batches(clean_uri, columns=columns, read_dictionary=["category", "product_id"])
    per_product = product_metrics(batches)
    rows = write_dataset(metrics_uri, PRODUCT_METRICS, per_product.to_batches())
    return {"metrics_uri": metrics_uri, "rows": rows}


def daily_totals(raw_uri: str, catalog_uri: str, category: str, day: date) -> dict:
    """One category's day in one row: orders, units and revenue of the good rows, and how
    many rows were quarantined. Streams the raw orders; writes nothing."""
    classify = _Classifier(_product_ids(catalog_uri), day, raw_uri)
    orders = units = quarantined = 0
    revenue = 0.0
    for batch in read_batches(raw_uri):
        kept = batch.filter(pc.invert(classify(batch)[1]))
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
