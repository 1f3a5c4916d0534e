"""Staging datasets addressed by URI: a local folder on a laptop, a shared volume or
object storage (s3://, gs://, ...) in a cluster. Writes are atomic: a dataset appears
under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from category_pipeline import object_store

STAGING_ENV = "PIPELINE_STAGING_URI"
BATCH_ROWS = 256 * 1024


class DatasetReadError(ValueError):
    """A staged dataset could not be read: corrupt or truncated. Names the file; the
    original error is the cause."""


@contextlib.contextmanager
def _naming_the_dataset(uri: str) -> Iterator[None]:
    """Every read of a staged dataset: a corrupt or truncated file is named (a missing one
    stays FileNotFoundError, an object store that fails to answer its OSError)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        if object_store.is_store_unavailable(exc):
            raise  # the store did not answer (network, 5xx, throttling): a retry may fix it
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
    """The filesystem of a staged URI (cached per store, see object_store) and its path there."""
    if "://" in uri:
        return object_store.resolve(uri)
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
        if isinstance(self.filesystem, fs.LocalFileSystem):
            # Object stores have no folders: creating one would only add marker objects.
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
        # On S3 the temporary is its own object and the move a server-side CopyObject, which
        # makes the final key appear whole at once (copies are limited to 5 GB per object).
        # Writing straight to the final key is not safe with pyarrow: its S3 output stream
        # has no abort in Python, and closing it, or letting it be collected, after an error
        # COMPLETES the multipart upload with the part written so far
        # (tests/test_storage_s3.py shows it).
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


# -- retention: staged datasets do not pile up ----------------------------------------------

RETENTION_ENV = "PIPELINE_STAGING_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 7
# A writer's temporary file this old belongs to a writer that died (a write takes minutes).
ABANDONED_TEMPORARY = timedelta(hours=1)
# An incomplete multipart upload this old: a writer killed mid-upload (never visible as an object).
ABANDONED_UPLOAD = timedelta(days=1)


@dataclass
class Pruned:
    """What ``prune_staging`` removed (paths as the store names them)."""

    datasets: list[str] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    aborted_uploads: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in vars(self).items()}


def retention_days() -> int:
    """$PIPELINE_STAGING_RETENTION_DAYS (default 7): how long a staged dataset is kept."""
    raw = os.environ.get(RETENTION_ENV, str(DEFAULT_RETENTION_DAYS)).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{RETENTION_ENV}={raw!r}: expected a whole number of days, at least 1")
    return int(raw)


def prune_staging(root: str, older_than_days: int, now: datetime | None = None) -> Pruned:
    """Remove staged files written more than ``older_than_days`` days before ``now``, a
    writer's temporary files older than an hour, folders left empty, and (on S3) multipart
    uploads left incomplete for more than a day.

    By the time a file was written, not by the date folder in its name: a backfill of an old
    day writes today, and its datasets must outlive the run (the same rule as an S3 lifecycle
    expiration, see object_store.lifecycle_configuration)."""
    if older_than_days < 1:
        raise ValueError(f"older_than_days={older_than_days}: at least 1 (a running task's datasets are today's)")
    now = now or datetime.now(timezone.utc)
    expired_before = now - timedelta(days=older_than_days)
    if root.lower().startswith("s3://"):
        return _prune_s3(root, expired_before, now)
    return _prune_filesystem(root, expired_before, now)


def _is_temporary(path: str) -> bool:
    return path.endswith(".tmp")


def _expired(path: str, modified: datetime, expired_before: datetime, now: datetime) -> bool:
    if _is_temporary(path) and modified < now - ABANDONED_TEMPORARY:
        return True
    return modified < expired_before


def _prune_filesystem(root: str, expired_before: datetime, now: datetime) -> Pruned:
    filesystem, base = resolve(root)
    pruned = Pruned()
    entries = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    folders = []
    for entry in entries:
        if entry.type == fs.FileType.Directory:
            folders.append(entry.path)
        elif entry.type == fs.FileType.File and _expired(entry.path, entry.mtime, expired_before, now):
            _delete_quietly(filesystem, entry.path)
            (pruned.temporaries if _is_temporary(entry.path) else pruned.datasets).append(entry.path)
    if isinstance(filesystem, fs.LocalFileSystem):
        for folder in sorted(folders, key=len, reverse=True):  # the deepest first
            with contextlib.suppress(OSError):  # not empty (kept files, or a writer just began)
                Path(folder).rmdir()  # never recursive: a file written meanwhile stays
                pruned.folders.append(folder)
    return pruned


def _prune_s3(root: str, expired_before: datetime, now: datetime) -> Pruned:
    """On S3 through boto3: bulk deletes (pyarrow deletes one object at a time, and then
    re-creates the parent's folder marker), and multipart uploads, which pyarrow cannot list."""
    bucket, prefix = object_store.split_s3_uri(root)
    prefix = f"{prefix}/" if prefix else ""
    client = object_store.s3_settings().boto3_client()
    pruned = Pruned()
    kept, markers, doomed = set(), [], []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                markers.append(key)
            elif _expired(key, obj["LastModified"], expired_before, now):
                doomed.append(key)
                (pruned.temporaries if _is_temporary(key) else pruned.datasets).append(f"{bucket}/{key}")
            else:
                kept.add(key)
    # A folder marker (an empty object "a/b/", written by pyarrow) goes with its last file.
    for marker in markers:
        if marker != prefix and not any(key.startswith(marker) for key in kept):
            doomed.append(marker)
            pruned.folders.append(f"{bucket}/{marker}")
    for start in range(0, len(doomed), 1000):  # DeleteObjects takes up to 1000 keys
        chunk = doomed[start:start + 1000]
        result = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        if result.get("Errors"):
            raise OSError(f"pruning {root}: could not delete {result['Errors'][:3]}")
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            if upload["Initiated"] < now - ABANDONED_UPLOAD:
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                pruned.aborted_uploads.append(f"{bucket}/{upload['Key']}")
    return pruned
