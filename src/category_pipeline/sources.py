"""Where a category's orders come from: the synthetic generator or daily CSV/Parquet files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from category_pipeline import synthetic
from category_pipeline.config import Category, SyntheticSource
from category_pipeline.object_store import is_store_unavailable
from category_pipeline.schema import CATALOG, RAW_ORDERS, RAW_TEXT, STAGED_RAW_ORDERS
from category_pipeline.storage import BATCH_ROWS, resolve


class SourceError(ValueError):
    """A source file is missing or does not have the columns the pipeline needs."""


class SourceMissing(SourceError):
    """A source file is not there (yet): the one source error worth retrying, as a day's
    file may land late."""


def orders(category: Category, day: date) -> Iterator[pa.RecordBatch]:
    """The day's orders in the STAGED_RAW_ORDERS schema: RAW_ORDERS and ``raw``, the text of a
    CSV row with a cell that did not parse (whose typed cells that failed are null)."""
    source = category.source
    if isinstance(source, SyntheticSource):
        batches = synthetic.generate_orders(category.name, day, source.rows_per_day, source.products, source.bad_row_ratio)
        return (batch.append_column(RAW_TEXT, pa.nulls(batch.num_rows, RAW_TEXT.type)) for batch in batches)
    return _read_file(_fill(source.uri, category, day), RAW_ORDERS, keep_unparseable=True)


def catalog(category: Category, day: date) -> pa.Table:
    source = category.source
    if isinstance(source, SyntheticSource):
        return synthetic.catalog(category.name, source.products)
    return pa.Table.from_batches(list(_read_file(_fill(source.catalog_uri, category, day), CATALOG)), CATALOG)


def _fill(template: str, category: Category, day: date) -> str:
    return template.format(category=category.name, ds=day.isoformat())


def _read_file(uri: str, schema: pa.Schema, keep_unparseable: bool = False) -> Iterator[pa.RecordBatch]:
    """The file's batches in ``schema``; with ``keep_unparseable``, plus the ``raw`` column:
    a CSV cell that does not parse then nulls its cell and keeps the row's text in ``raw``
    (the rest of the file loads), where it otherwise fails the read."""
    filesystem, path = resolve(uri)
    try:
        handle = filesystem.open_input_file(path) if path.endswith(".parquet") else filesystem.open_input_stream(path)
    except FileNotFoundError as exc:
        raise SourceMissing(f"source file {uri} does not exist") from exc
    lenient_csv = keep_unparseable and not path.endswith(".parquet")
    with handle:
        if path.endswith(".parquet"):
            try:
                parquet = pq.ParquetFile(handle)
            except (pa.ArrowException, OSError) as exc:
                if is_store_unavailable(exc):
                    raise  # the object store did not answer: the retry may get the file
                raise SourceError(f"source file {uri} is not a readable Parquet file (corrupt or truncated): {exc}") from exc
            _require_columns(uri, parquet.schema_arrow.names, schema)
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=schema.names)
        else:
            try:
                batches = pacsv.open_csv(
                    handle,
                    read_options=pacsv.ReadOptions(block_size=16 << 20),
                    convert_options=pacsv.ConvertOptions(
                        # Leniently: all as text, then cast cell by cell (see _parse).
                        column_types={field.name: pa.string() if lenient_csv else field.type for field in schema},
                        include_columns=schema.names,
                        strings_can_be_null=True,  # an empty field is a missing value, not ''
                    ),
                )
            except (pa.ArrowInvalid, KeyError) as exc:  # KeyError: a column of include_columns is absent
                raise SourceError(f"source file {uri}: {exc}") from exc
        try:
            for batch in batches:
                if lenient_csv:
                    yield _parse(batch, schema)
                elif keep_unparseable:
                    conformed = _conform(batch, schema)
                    yield conformed.append_column(RAW_TEXT, pa.nulls(batch.num_rows, RAW_TEXT.type))
                else:
                    yield _conform(batch, schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # unparseable value, wrong type
            raise SourceError(f"source file {uri}: {exc}") from exc
        except OSError as exc:  # a corrupt page of a Parquet file
            if is_store_unavailable(exc):
                raise
            raise SourceError(f"source file {uri} is corrupt or truncated: {exc}") from exc


def _require_columns(uri: str, names: list[str], schema: pa.Schema) -> None:
    missing = [name for name in schema.names if name not in names]
    if missing:
        raise SourceError(f"source file {uri} lacks column(s) {missing}")


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([batch.column(f.name).cast(f.type) for f in schema], schema=schema)


def _parse(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch of text columns cast to ``schema``, plus ``raw``: where a cell does not parse,
    it becomes null and its row's cells, as read, go to ``raw`` (a JSON object), so that the
    row is quarantined as unparseable while the rest of the file loads."""
    failed = np.zeros(batch.num_rows, dtype=bool)
    columns = []
    for field in schema:
        text = batch.column(field.name)
        bad = _failing_rows(text, field.type)
        if len(bad):
            failed[bad] = True
            mask = np.zeros(batch.num_rows, dtype=bool)
            mask[bad] = True
            text = pc.if_else(pa.array(mask), pa.nulls(batch.num_rows, pa.string()), text)
        columns.append(text.cast(field.type))
    raw = pa.nulls(batch.num_rows, RAW_TEXT.type)
    if failed.any():
        rows = np.flatnonzero(failed)
        cells = batch.select(schema.names).take(pa.array(rows)).to_pylist()
        texts = np.full(batch.num_rows, None, dtype=object)
        texts[rows] = [json.dumps(row) for row in cells]
        raw = pa.array(texts, RAW_TEXT.type)
    return pa.RecordBatch.from_arrays([*columns, raw], schema=STAGED_RAW_ORDERS)


def _failing_rows(text: pa.Array, to: pa.DataType, start: int = 0) -> list[int]:
    """Rows of ``text`` whose cast to ``to`` fails: one cast when all parse, halves searched
    when one does not (a few casts per bad cell)."""
    try:
        text.cast(to)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(text) == 1:
            return [start]
    half = len(text) // 2
    return _failing_rows(text.slice(0, half), to, start) + _failing_rows(text.slice(half), to, start + half)
