"""PostgreSQL native partitioning of the warehouse tables: one leaf table per load unit, so
that a load replaces its partition by swapping tables instead of deleting rows.

A table partitioned by ``(category, order_date)`` is a tree:

    orders                                     PARTITION BY LIST (category)
      orders_home_<hash>                       FOR VALUES IN ('home'), PARTITION BY RANGE (order_date)
        orders_home_20260401_<hash>            FOR VALUES FROM ('2026-04-01') TO ('2026-04-02')

Every partition column but the last is a LIST level; the last, a date, is a RANGE level of
one day. A load copies its rows into a new standalone table, builds its primary key there
(one sort, instead of inserting 1M keys into a live index), then swaps it in place of the
leaf in the same transaction. Why: replacing a partition by DELETE + INSERT of the same keys
in one transaction made PostgreSQL's primary-key index fight the just-deleted, not yet dead,
entries on every page (a reload took 4x a first load); a swap costs the same whatever the
leaf held before.

Locks: the copy and the index build hold locks only on the new table. The swap takes the
leaf's parent (one category's, or one day's, subtree) ACCESS EXCLUSIVE for the milliseconds
before commit when a leaf is replaced, SHARE UPDATE EXCLUSIVE when it is new. A waiting
ACCESS EXCLUSIVE request would queue every new reader of that parent behind it, so the swap
waits in short slices and steps back in between (see ``SWAP_SLICE``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
from psycopg import sql

from category_pipeline.schema import WarehouseTable

# Longest PostgreSQL identifier is 63 bytes; a leaf name leaves room for the staging table's
# suffix and its index's.
_LEAF_NAME_BUDGET = 48
_HASH_LENGTH = 8

# How long one attempt of the swap may wait for its parent's lock before stepping back.
SWAP_SLICE = 1.0


@dataclass(frozen=True)
class Level:
    """One partitioned table of the tree and how its children are bounded."""

    name: str  # the partitioned table
    column: str  # the column its children are split on
    kind: str  # LIST or RANGE


def check_partitionable(table: WarehouseTable) -> None:
    """The layout above needs the last partition column to be a date."""
    if not table.partition_by or table.schema.field(table.partition_by[-1]).type != pa.date32():
        raise ValueError(f"table {table.name}: the last partition column must be a date, got {table.partition_by}")


def partition_clause(table: WarehouseTable, depth: int = 0) -> sql.Composable:
    """``PARTITION BY LIST (category)`` or ``PARTITION BY RANGE (order_date)`` of level ``depth``."""
    column = table.partition_by[depth]
    kind = "RANGE" if depth == len(table.partition_by) - 1 else "LIST"
    return sql.SQL("PARTITION BY {} ({})").format(sql.SQL(kind), sql.Identifier(column))


def levels(table: WarehouseTable, values: Mapping[str, pa.Scalar]) -> list[Level]:
    """The partitioned tables from the root down to the leaf's parent, for ``values``."""
    check_partitionable(table)
    result = []
    for depth, column in enumerate(table.partition_by):
        name = table.name if depth == 0 else _name(table, values, depth)
        kind = "RANGE" if depth == len(table.partition_by) - 1 else "LIST"
        result.append(Level(name, column, kind))
    return result


def leaf_name(table: WarehouseTable, values: Mapping[str, pa.Scalar]) -> str:
    return _name(table, values, len(table.partition_by))


def bounds(table: WarehouseTable, values: Mapping[str, pa.Scalar], depth: int) -> sql.Composable:
    """The ``FOR VALUES`` clause of the child at ``depth`` (1 = the root's children)."""
    column = table.partition_by[depth - 1]
    value = values[column].as_py()
    if depth == len(table.partition_by):
        return sql.SQL("FOR VALUES FROM ({}) TO ({})").format(sql.Literal(value), _day_after(value))
    return sql.SQL("FOR VALUES IN ({})").format(sql.Literal(value))


def _day_after(day: date) -> sql.Composable:
    """The day's upper bound; Python's last date has no next day, PostgreSQL's range does."""
    return sql.SQL("MAXVALUE") if day == date.max else sql.Literal(day + timedelta(days=1))


def check_constraint(table: WarehouseTable, values: Mapping[str, pa.Scalar]) -> sql.Composable:
    """A CHECK that implies the leaf's whole partition constraint, so that attaching the
    table does not scan it again under the parent's lock."""
    last = table.partition_by[-1]
    terms = [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(values[column].as_py()))
        for column in table.partition_by[:-1]
    ]
    day = values[last].as_py()
    terms.append(sql.SQL("{} >= {}").format(sql.Identifier(last), sql.Literal(day)))
    if day != date.max:
        terms.append(sql.SQL("{} < {}").format(sql.Identifier(last), _day_after(day)))
    return sql.SQL("CHECK ({})").format(sql.SQL(" AND ").join(terms))


def _name(table: WarehouseTable, values: Mapping[str, pa.Scalar], depth: int) -> str:
    """``orders_home_20260401_1a2b3c4d``: readable, and unique by the hash of the exact values
    (two categories that read the same once made identifier-safe still differ)."""
    parts = [values[column].as_py() for column in table.partition_by[:depth]]
    exact = "\x1f".join([table.name, *(str(part) for part in parts)])
    digest = hashlib.sha256(exact.encode()).hexdigest()[:_HASH_LENGTH]
    labels = [part.strftime("%Y%m%d") if hasattr(part, "strftime") else _identifier_safe(str(part)) for part in parts]
    readable = "_".join([table.name, *labels])[: _LEAF_NAME_BUDGET - _HASH_LENGTH - 1].rstrip("_")
    return f"{readable}_{digest}"


def _identifier_safe(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"
