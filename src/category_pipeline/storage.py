"""Staging datasets addressed by URI: a local folder on a laptop, a shared volume or
object storage (s3://, gs://, ...) in a cluster. Writes are atomic: a dataset appears
under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

STAGING_ENV = "PIPELINE_STAGING_URI"
BATCH_ROWS = 256 * 1024


class DatasetReadError(ValueError):
    """A staged dataset could not be read: corrupt or truncated. Names the file; the
    original error is the cause."""


@contextlib.contextmanager
def _naming_the_dataset(uri: str) -> Iterator[None]:
    """Every read of a staged dataset: a corrupt or truncated file is named (a missing one
    stays FileNotFoundError)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise DatasetReadError(f"staged dataset {uri} is corrupt or truncated: {exc}") from exc


def staging_root() -> str:
    """Where staged datasets live: $PIPELINE_STAGING_URI, else $AIRFLOW_HOME/staging."""
    configured = os.environ.get(STAGING_ENV)
    if configured:
        return configured.rstrip("/")
    airflow_home = os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow"))
    return str(Path(airflow_home) / "staging")


def dataset_uri(root: str, scope: str, day: date | str, name: str) -> str:
    return f"{root.rstrip('/')}/{scope}/{day}/{name}.parquet"


def resolve(uri: str) -> tuple[fs.FileSystem, str]:
    if "://" in uri:
        return fs.FileSystem.from_uri(uri)
    return fs.LocalFileSystem(), str(Path(uri).absolute())


def write_dataset(uri: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream batches into a Parquet file at ``uri``; returns the number of rows."""
    writer = DatasetWriter(uri, schema)
    try:
        for batch in batches:
            writer.write(batch)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.rows


class DatasetWriter:
    """Incremental form of ``write_dataset`` for steps that fill several outputs at once.
    ``options`` go to ``pyarrow.parquet.ParquetWriter`` (e.g. ``use_dictionary``: the
    columns worth dictionary-encoding; trying it on unique values costs time for nothing)."""

    def __init__(self, uri: str, schema: pa.Schema, **options):
        self.filesystem, self.path = resolve(uri)
        self.filesystem.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        self.temporary = f"{self.path}.{uuid.uuid4().hex}.tmp"
        self.schema = schema
        self.rows = 0
        options.setdefault("compression", "zstd")
        self._writer = pq.ParquetWriter(self.temporary, schema, filesystem=self.filesystem, **options)

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def commit(self) -> None:
        self._writer.close()
        self.filesystem.move(self.temporary, self.path)

    def abort(self) -> None:
        self._writer.close()
        _delete_quietly(self.filesystem, self.temporary)


def read_batches(
    uri: str,
    batch_rows: int = BATCH_ROWS,
    columns: list[str] | None = None,
    read_dictionary: list[str] | None = None,
    use_threads: bool = True,
) -> Iterator[pa.RecordBatch]:
    """The dataset's record batches (at most ``batch_rows`` rows), a few row groups at a time.

    One reader over all the row groups of a file keeps buffers of each group it has read
    until it is done, so its memory grows with the file. Here each reader covers consecutive
    row groups of about ``batch_rows`` rows in all (or one larger group), so memory stays
    bounded however large the file, and small row groups still make full batches."""
    filesystem, path = resolve(uri)
    with _naming_the_dataset(uri), filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle, read_dictionary=read_dictionary)
        metadata = parquet.metadata
        run: list[int] = []
        rows = 0
        for group in range(metadata.num_row_groups):
            run.append(group)
            rows += metadata.row_group(group).num_rows
            if rows >= batch_rows or group == metadata.num_row_groups - 1:
                yield from parquet.iter_batches(
                    batch_size=batch_rows, row_groups=run, columns=columns, use_threads=use_threads
                )
                run, rows = [], 0


def read_metadata(uri: str) -> pq.FileMetaData:
    filesystem, path = resolve(uri)
    with _naming_the_dataset(uri), filesystem.open_input_file(path) as handle:
        return pq.ParquetFile(handle).metadata


def read_schema(uri: str) -> pa.Schema:
    filesystem, path = resolve(uri)
    with _naming_the_dataset(uri), filesystem.open_input_file(path) as handle:
        return pq.ParquetFile(handle).schema_arrow


def _delete_quietly(filesystem: fs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except (FileNotFoundError, OSError):
        pass
