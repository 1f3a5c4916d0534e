"""Where a category's orders come from: the synthetic generator or daily CSV/Parquet files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from category_pipeline import synthetic
from category_pipeline.config import Category, SyntheticSource
from category_pipeline.schema import CATALOG, RAW_ORDERS
from category_pipeline.storage import BATCH_ROWS, resolve


class SourceError(ValueError):
    """A source file is missing or does not have the columns the pipeline needs."""


def orders(category: Category, day: date) -> Iterator[pa.RecordBatch]:
    source = category.source
    if isinstance(source, SyntheticSource):
        return synthetic.generate_orders(category.name, day, source.rows_per_day, source.products, source.bad_row_ratio)
    return _read_file(_fill(source.uri, category, day), RAW_ORDERS)


def catalog(category: Category, day: date) -> pa.Table:
    source = category.source
    if isinstance(source, SyntheticSource):
        return synthetic.catalog(category.name, source.products)
    return pa.Table.from_batches(list(_read_file(_fill(source.catalog_uri, category, day), CATALOG)), CATALOG)


def _fill(template: str, category: Category, day: date) -> str:
    return template.format(category=category.name, ds=day.isoformat())


def _read_file(uri: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    filesystem, path = resolve(uri)
    try:
        handle = filesystem.open_input_file(path) if path.endswith(".parquet") else filesystem.open_input_stream(path)
    except FileNotFoundError as exc:
        raise SourceError(f"source file {uri} does not exist") from exc
    with handle:
        if path.endswith(".parquet"):
            parquet = pq.ParquetFile(handle)
            _require_columns(uri, parquet.schema_arrow.names, schema)
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=schema.names)
        else:
            try:
                batches = pacsv.open_csv(
                    handle,
                    read_options=pacsv.ReadOptions(block_size=16 << 20),
                    convert_options=pacsv.ConvertOptions(
                        column_types={field.name: field.type for field in schema},
                        include_columns=schema.names,
                        strings_can_be_null=True,  # an empty field is a missing value, not ''
                    ),
                )
            except (pa.ArrowInvalid, KeyError) as exc:  # KeyError: a column of include_columns is absent
                raise SourceError(f"source file {uri}: {exc}") from exc
        try:
            for batch in batches:
                yield _conform(batch, schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # unparseable value, wrong type
            raise SourceError(f"source file {uri}: {exc}") from exc


def _require_columns(uri: str, names: list[str], schema: pa.Schema) -> None:
    missing = [name for name in schema.names if name not in names]
    if missing:
        raise SourceError(f"source file {uri} lacks column(s) {missing}")


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([batch.column(f.name).cast(f.type) for f in schema], schema=schema)
