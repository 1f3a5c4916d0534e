"""Deterministic synthetic orders: the default source, so everything runs with zero setup.

The same (category, day) always yields the same rows, so reruns see the same input. A
configurable share of rows is broken on purpose (null product, negative price, unknown
product, zero quantity) so that quarantine is exercised every day.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from category_pipeline.schema import CATALOG, RAW_ORDERS

BAD_ROW_KINDS = 4  # null product, negative price, unknown product, zero quantity
MICROS_PER_DAY = 86_400 * 1_000_000
CUSTOMERS = 50_000


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # Arrow wants a non-negative int64


def product_prefix(category: str) -> str:
    return category.upper()[:4]


def catalog(category: str, products: int) -> pa.Table:
    """The category's product catalog: ids and list prices between 5.00 and 505.00."""
    ids = pc.binary_join_element_wise(f"{product_prefix(category)}-", _zero_padded(_arange(1, products + 1)), "")
    prices = pc.round(pc.add(pc.multiply(pc.random(products, initializer=_seed(category, "prices")), 500.0), 5.0), 2)
    return pa.Table.from_arrays([ids, prices], schema=CATALOG)


def generate_orders(
    category: str,
    day: date,
    rows: int,
    products: int,
    bad_row_ratio: float = 0.02,
    batch_rows: int = 1_000_000,
) -> Iterator[pa.RecordBatch]:
    """Yield the day's orders in batches of at most ``batch_rows`` rows."""
    product_ids = catalog(category, products)
    list_prices = product_ids.column("list_price").combine_chunks()
    ids = product_ids.column("product_id").combine_chunks()
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1_000_000)
    for batch_index, start in enumerate(range(0, rows, batch_rows)):
        n = min(batch_rows, rows - start)
        yield _batch(category, day, batch_index, start, n, ids, list_prices, day_start, bad_row_ratio)


def _batch(category, day, batch_index, start, n, ids, list_prices, day_start, bad_row_ratio) -> pa.RecordBatch:
    def uniform(stream: str) -> pa.Array:
        return pc.random(n, initializer=_seed(category, day, batch_index, stream))

    product_index = _floor_int(uniform("product"), len(ids))
    product_id = ids.take(product_index)
    # Customers pay the list price give or take 10%.
    noise = pc.add(pc.multiply(uniform("price"), 0.2), 0.9)
    unit_price = pc.round(pc.multiply(list_prices.take(product_index), noise), 2)
    quantity = pc.cast(pc.add(_floor_int(uniform("quantity"), 4), 1), pa.int32())
    offsets = _floor_int(uniform("time"), MICROS_PER_DAY)
    ordered_at = pc.cast(pc.add(offsets, day_start), pa.timestamp("us", tz="UTC"))
    customer_id = pc.binary_join_element_wise("C", _zero_padded(_floor_int(uniform("customer"), CUSTOMERS)), "")
    sequence = _arange(start + 1, start + n + 1)
    order_id = pc.binary_join_element_wise(f"{category}-{day:%Y%m%d}-", _zero_padded(sequence, 8), "")

    # Which rows are broken, and how: one uniform draw decides both.
    damage = uniform("damage")
    broken = pc.less(damage, bad_row_ratio)
    kind = _floor_int(pc.divide(damage, bad_row_ratio or 1.0), BAD_ROW_KINDS)

    def broken_as(k: int) -> pa.Array:
        return pc.and_(broken, pc.equal(kind, k))

    product_id = pc.if_else(broken_as(0), pa.scalar(None, pa.string()), product_id)
    unit_price = pc.if_else(broken_as(1), pc.negate(unit_price), unit_price)
    product_id = pc.if_else(broken_as(2), pa.scalar(f"{product_prefix(category)}-UNKNOWN"), product_id)
    quantity = pc.if_else(broken_as(3), pa.scalar(0, pa.int32()), quantity)
    return pa.RecordBatch.from_arrays(
        [order_id, ordered_at, customer_id, product_id, quantity, unit_price], schema=RAW_ORDERS
    )


def _arange(start: int, stop: int) -> pa.Array:
    ones = pa.repeat(pa.scalar(1, pa.int64()), stop - start)
    return pc.add(pc.cumulative_sum(ones), start - 1)


def _floor_int(uniform: pa.Array, bound: int) -> pa.Array:
    # uniform is in [0, 1), so the result is in [0, bound).
    return pc.cast(pc.floor(pc.multiply(uniform, float(bound))), pa.int64())


def _zero_padded(values: pa.Array, width: int = 5) -> pa.Array:
    return pc.utf8_lpad(pc.cast(values, pa.string()), width=width, padding="0")
