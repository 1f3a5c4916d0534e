"""Staging on object storage, against a real S3 API on loopback (moto's server, see
tests/support/s3.py): the pipeline's datasets round-trip through s3:// URIs with bounded
memory, appear under their final name only when complete (a writer that fails or is
SIGKILLed leaves nothing there), and a store that does not answer is a retried error, not
a corrupt dataset. Endpoint and credentials come from an Airflow connection or the AWS
environment (category_pipeline.object_store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline import object_store
from category_pipeline.failures import is_transient
from category_pipeline.storage import DatasetReadError, prune_staging, read_batches, read_metadata, read_schema, resolve, write_dataset
from tests.support.ports import free_port

SCHEMA = pa.schema([("id", pa.int64()), ("label", pa.string())])


def _batches(count: int, rows: int):
    for i in range(count):
        ids = range(i * rows, (i + 1) * rows)
        yield pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.array([f"row {j}" for j in ids])], schema=SCHEMA)


def _table(uri: str) -> pa.Table:
    return pa.Table.from_batches(list(read_batches(uri)), schema=SCHEMA)


def _aws_free_environment(monkeypatch) -> None:
    for name in [*os.environ]:
        if name.startswith("AWS_") or name in (object_store.CONN_ID_ENV, "AIRFLOW_CONN_OBJECT_STORE"):
            monkeypatch.delenv(name)
    object_store.clear_cache()


@pytest.fixture
def bucket(loopback_s3, monkeypatch) -> str:
    """A new bucket on the loopback S3, reached through the standard AWS environment."""
    _aws_free_environment(monkeypatch)
    for name, value in loopback_s3.aws_env().items():
        monkeypatch.setenv(name, value)
    yield loopback_s3.create_bucket(f"staging-{uuid.uuid4().hex[:12]}")
    object_store.clear_cache()


def _objects(loopback_s3, bucket: str) -> list[str]:
    """The visible objects, without pyarrow's empty folder markers ("a/b/")."""
    return [key for key in loopback_s3.keys(bucket) if not key.endswith("/")]


# -- the 1M-row round trip, S3 vs disk -------------------------------------------------------

ROUND_TRIP = textwrap.dedent(
    """
    import hashlib, json, resource, sys, time
    from datetime import date
    from category_pipeline import synthetic
    from category_pipeline.schema import RAW_ORDERS
    from category_pipeline.storage import read_batches, write_dataset

    def peak_rss_mb():
        # VmHWM: this process's own peak. ru_maxrss would not do: Linux carries the forking
        # parent's peak (here pytest's, hundreds of MB) over exec into the child's.
        try:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    uri, rows = sys.argv[1], int(sys.argv[2])
    written_ids, read_ids = hashlib.sha256(), hashlib.sha256()

    def batches():  # the pipeline's raw orders, generated batch by batch as extract does
        for batch in synthetic.generate_orders("garden", date(2026, 11, 20), rows, 500, batch_rows=64 * 1024):
            written_ids.update("".join(f"{v}\\\\n" for v in batch.column("order_id").to_pylist()).encode())
            yield batch

    start = time.perf_counter()
    written = write_dataset(uri, RAW_ORDERS, batches())
    write_s = time.perf_counter() - start
    read, start = 0, time.perf_counter()
    for batch in read_batches(uri):
        read_ids.update("".join(f"{v}\\\\n" for v in batch.column("order_id").to_pylist()).encode())
        read += batch.num_rows
    print(json.dumps({"written": written, "read": read, "same_ids": written_ids.digest() == read_ids.digest(),
                      "write_s": write_s, "read_s": time.perf_counter() - start,
                      "peak_rss_mb": peak_rss_mb()}))
    """
)


def _round_trip(uri: str, rows: int) -> dict:
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, uri, str(rows)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_million_rows_round_trip_through_s3_as_through_disk(loopback_s3, bucket, tmp_path, report):
    """1M raw orders written batch by batch to s3:// and read back batch by batch: every row
    comes back, in order; the peak memory of the process doing it is recorded next to the
    same round trip on local disk (one process each, so each peak is its own)."""
    rows = 1_000_000
    s3_uri = f"s3://{bucket}/staging/garden/2026-11-20/raw_orders.parquet"
    on_s3 = _round_trip(s3_uri, rows)
    on_disk = _round_trip(str(tmp_path / "raw_orders.parquet"), rows)

    for result in (on_s3, on_disk):
        assert result["written"] == result["read"] == rows
        assert result["same_ids"], "the order ids read back differ from those written"
    assert _objects(loopback_s3, bucket) == ["staging/garden/2026-11-20/raw_orders.parquet"]
    assert loopback_s3.multipart_uploads(bucket) == []
    size_mb = (tmp_path / "raw_orders.parquet").stat().st_size / 2**20
    report(
        f"staging round trip, {rows:,} raw orders ({size_mb:.0f} MB Parquet): "
        f"loopback S3 peak RSS {on_s3['peak_rss_mb']:.0f} MB, write {on_s3['write_s']:.2f} s, read {on_s3['read_s']:.2f} s; "
        f"local disk peak RSS {on_disk['peak_rss_mb']:.0f} MB, write {on_disk['write_s']:.2f} s, read {on_disk['read_s']:.2f} s"
    )


def test_uploads_are_not_queued_in_memory(bucket):
    """pyarrow's background writes queue every 10 MB part without a limit (arrow s3fs.cc
    ObjectOutputStream::Upload), so a writer faster than the network would hold the file
    in memory: staging uploads each part before it goes on."""
    filesystem, _ = resolve(f"s3://{bucket}/x.parquet")
    assert filesystem.__reduce__()[1][0]["background_writes"] is False


# -- atomic publish ----------------------------------------------------------------------------

def test_why_not_straight_to_the_final_key(loopback_s3, bucket):
    """The evidence for writing a temporary object and copying it: pyarrow's S3 output stream
    cannot be aborted from Python, and one dropped after an error (an exception unwinding
    through the writer) COMPLETES its multipart upload, publishing the part written so far.
    If a pyarrow release adds an abort, this test fails and the direct write can be reconsidered."""
    # In a process of its own: the stream's destructor uploads while holding the GIL, which
    # the loopback server (a thread of this process) would need to answer.
    dropped = subprocess.run([sys.executable, "-c", DROPPED_STREAM, f"s3://{bucket}/direct/orders.parquet"],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert dropped.returncode == 0, dropped.stderr[-3000:]
    assert dropped.stdout.split() == ["no-abort"]
    head = loopback_s3.client().head_object(Bucket=bucket, Key="direct/orders.parquet")
    assert head["ContentLength"] == 11 * 2**20, "a partial object was published under the final name"


DROPPED_STREAM = textwrap.dedent(
    """
    import gc, sys
    from category_pipeline.storage import resolve

    filesystem, path = resolve(sys.argv[1])
    stream = filesystem.open_output_stream(path)
    print("abort" if hasattr(stream, "abort") else "no-abort")
    stream.write(b"x" * (11 * 2**20))  # one 10 MB part uploaded, 1 MB buffered
    del stream  # what an exception unwinding through a writer does to it
    gc.collect()
    """
)


def test_a_write_failing_mid_dataset_leaves_no_object(loopback_s3, bucket):
    uri = f"s3://{bucket}/staging/garden/2026-11-20/clean_orders.parquet"

    def three_batches_then_error():
        yield from _batches(3, 1_000)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_dataset(uri, SCHEMA, three_batches_then_error())
    assert _objects(loopback_s3, bucket) == []
    assert loopback_s3.multipart_uploads(bucket) == []


def test_a_rerun_overwrites_whole_and_a_failed_rerun_keeps_the_previous(loopback_s3, bucket):
    uri = f"s3://{bucket}/staging/garden/2026-11-20/clean_orders.parquet"
    assert write_dataset(uri, SCHEMA, _batches(4, 1_000)) == 4_000

    seen_during_rerun = []

    def read_along(batches):
        for batch in batches:
            seen_during_rerun.append(read_metadata(uri).num_rows)
            yield batch

    assert write_dataset(uri, SCHEMA, read_along(_batches(3, 500))) == 1_500
    assert seen_during_rerun == [4_000] * 3, "a reader saw the rerun before it completed"
    assert _table(uri).equals(pa.Table.from_batches(list(_batches(3, 500))))

    def one_batch_then_error():
        yield from _batches(1, 100)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_dataset(uri, SCHEMA, one_batch_then_error())
    assert _table(uri).num_rows == 1_500
    assert _objects(loopback_s3, bucket) == ["staging/garden/2026-11-20/clean_orders.parquet"]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import pyarrow as pa
    from category_pipeline.storage import write_dataset

    uri, count, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    schema = pa.schema([("id", pa.int64()), ("value", pa.float64())])
    random = np.random.default_rng(7)

    def batches():  # random values: Parquet cannot shrink them, the parts fill up
        for i in range(count):
            yield pa.RecordBatch.from_arrays(
                [pa.array(random.integers(0, 2**62, rows)), pa.array(random.random(rows))], schema=schema)
            print(f"wrote {i + 1}", flush=True)
            time.sleep(0.05)

    write_dataset(uri, schema, batches())
    print("done", flush=True)
    """
)


def test_a_writer_killed_mid_dataset_leaves_nothing_under_the_final_name(loopback_s3, bucket):
    """A writer SIGKILLed after several 10 MB parts of its upload: the final name never
    appears, during the write or after; what is left is an incomplete multipart upload of
    the temporary object (invisible to readers), which the staging retention aborts."""
    key = "staging/garden/2026-11-20/raw_orders.parquet"
    count, rows, kill_after = 40, 250_000, 12  # ~4 MB a batch: ~48 MB, 4 parts, when killed
    client = loopback_s3.client()
    seen_final, stop = threading.Event(), threading.Event()

    def watch_final_name():
        while not stop.is_set():
            if client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0):
                seen_final.set()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_final_name, daemon=True)
    watcher.start()
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, f"s3://{bucket}/{key}", str(count), str(rows)],
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        written = 0
        for line in writer.stdout:
            if line.startswith("wrote "):
                written = int(line.split()[1])
            if written >= kill_after:
                break
        assert writer.poll() is None, f"the writer ended before it was killed (wrote {written} batches)"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        time.sleep(0.1)
    finally:
        stop.set()
        watcher.join()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    assert not seen_final.is_set(), "the final name appeared while the dataset was being written"
    assert _objects(loopback_s3, bucket) == [], "the killed writer left a visible object"
    uploads = loopback_s3.multipart_uploads(bucket)
    assert len(uploads) == 1 and uploads[0].startswith(f"{key}.") and uploads[0].endswith(".tmp"), uploads

    # The retention aborts it once a day old. (That it spares a younger one, possibly a live
    # writer, cannot be shown here: moto reports every upload as initiated in 2010.)
    pruned = prune_staging(f"s3://{bucket}/staging", 7, now=datetime.now(timezone.utc) + timedelta(days=1, hours=1))
    assert pruned.aborted_uploads == [f"{bucket}/{uploads[0]}"]
    assert loopback_s3.multipart_uploads(bucket) == []


# -- errors: the store down is retried, a corrupt dataset is not ---------------------------

READS = {"read_batches": lambda uri: list(read_batches(uri)), "read_metadata": read_metadata, "read_schema": read_schema}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_truncated_object_is_a_dataset_error_and_a_missing_one_not_found(loopback_s3, bucket, read):
    uri = f"s3://{bucket}/staging/garden/2026-11-20/clean_orders.parquet"
    write_dataset(uri, SCHEMA, _batches(3, 1_000))
    client = loopback_s3.client()
    whole = client.get_object(Bucket=bucket, Key="staging/garden/2026-11-20/clean_orders.parquet")["Body"].read()
    client.put_object(Bucket=bucket, Key="staging/garden/2026-11-20/clean_orders.parquet", Body=whole[:-100])
    with pytest.raises(DatasetReadError, match=f"staged dataset {uri} is corrupt or truncated") as corrupt:
        read(uri)
    assert not is_transient(corrupt.value)
    with pytest.raises(FileNotFoundError):
        read(f"s3://{bucket}/staging/garden/2026-11-20/missing.parquet")


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_store_that_does_not_answer_is_retried_not_a_dataset_error(monkeypatch, read):
    """Connection refused (nothing listens on the port): the read fails with pyarrow's
    OSError, which the task's retries handle; it is not a corrupt dataset."""
    _aws_free_environment(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(OSError, match="AWS Error NETWORK_CONNECTION") as down:
        read("s3://staging/garden/2026-11-20/clean_orders.parquet")
    assert not isinstance(down.value, DatasetReadError)
    assert is_transient(down.value)


def test_a_source_file_on_a_store_that_does_not_answer_is_retried(monkeypatch):
    """A category's own files on an object store: unreachable is retried, not a SourceError."""
    from category_pipeline import sources

    _aws_free_environment(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OSError, match="AWS Error NETWORK_CONNECTION") as down:
        list(sources._read_file("s3://landing/orders.parquet", SCHEMA))
    assert not isinstance(down.value, sources.SourceError) and is_transient(down.value)


# -- endpoint and credentials -----------------------------------------------------------------

def test_the_airflow_connection_gives_endpoint_and_keys(loopback_s3, monkeypatch):
    """$PIPELINE_STAGING_CONN_ID names the connection (here from AIRFLOW_CONN_<ID>, as outside
    a task: the laptop runner, the bench); the AWS environment is not consulted at all."""
    _aws_free_environment(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # would fail if used
    monkeypatch.setenv(object_store.CONN_ID_ENV, "object_store")
    monkeypatch.setenv("AIRFLOW_CONN_OBJECT_STORE", loopback_s3.airflow_connection())
    bucket = loopback_s3.create_bucket(f"staging-{uuid.uuid4().hex[:12]}")
    settings = object_store.s3_settings()
    assert (settings.scheme, settings.endpoint) == ("http", loopback_s3.endpoint.split("://")[1])
    uri = f"s3://{bucket}/staging/garden/2026-11-20/catalog.parquet"
    assert write_dataset(uri, SCHEMA, _batches(2, 10)) == 20
    assert _table(uri).num_rows == 20
    object_store.clear_cache()


def test_one_filesystem_per_store_per_process(bucket):
    first, path = resolve(f"s3://{bucket}/staging/a/2026-11-20/x.parquet")
    second, _ = resolve(f"s3://{bucket}/staging/b/2026-11-21/y.parquet")
    assert first is second
    assert path == f"{bucket}/staging/a/2026-11-20/x.parquet"


def test_web_identity_is_left_to_the_sdk_chain(monkeypatch, tmp_path):
    """IRSA puts AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE in the pod: pyarrow then gets no
    keys and no role of ours, so the AWS SDK's default chain (which includes
    STSAssumeRoleWebIdentityCredentialsProvider) exchanges the token. A real STS exchange
    cannot happen here: what is checked is that nothing overrides the chain."""
    _aws_free_environment(monkeypatch)
    token = tmp_path / "token"
    token.write_text("eyJ.fake.token")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pipeline-staging")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    filesystem, _ = resolve("s3://pipeline-staging/staging/x.parquet")
    options = filesystem.__reduce__()[1][0]
    assert options["access_key"] is None and options["secret_key"] is None and options["role_arn"] == ""
    assert options["region"] == "eu-west-1" and options["endpoint_override"] == ""
    object_store.clear_cache()


@pytest.mark.parametrize("connection, message", [
    (None, "there is no Airflow connection 'object_store'"),
    ({"conn_type": "postgres", "host": "x"}, "has conn_type 'postgres'"),
    ({"conn_type": "aws", "login": "key"}, "only one of login"),
    ({"conn_type": "aws", "extra": {"endpoint_url": "ftp://store:21"}}, "not an http"),
    ({"conn_type": "aws", "login": "k", "password": "s", "extra": {"role_arn": "arn:x"}}, "both keys and role_arn"),
])
def test_an_unusable_connection_is_named(monkeypatch, connection, message):
    _aws_free_environment(monkeypatch)
    monkeypatch.setenv(object_store.CONN_ID_ENV, "object_store")
    if connection is not None:
        monkeypatch.setenv("AIRFLOW_CONN_OBJECT_STORE", json.dumps(connection))
    with pytest.raises(object_store.ObjectStoreConfigError, match=message):
        resolve("s3://pipeline-staging/staging/x.parquet")
    object_store.clear_cache()


def test_a_connection_without_keys_leaves_them_to_the_sdk_chain(monkeypatch):
    _aws_free_environment(monkeypatch)
    monkeypatch.setenv(object_store.CONN_ID_ENV, "object_store")
    monkeypatch.setenv("AIRFLOW_CONN_OBJECT_STORE", json.dumps(
        {"conn_type": "aws", "extra": {"endpoint_url": "https://s3.example.com", "region_name": "eu-central-1"}}))
    options = resolve("s3://pipeline-staging/x.parquet")[0].__reduce__()[1][0]
    assert options["access_key"] is None and options["endpoint_override"] == "s3.example.com"
    assert (options["scheme"], options["region"]) == ("https", "eu-central-1")
    object_store.clear_cache()


def test_file_uris_need_nothing_more(tmp_path):
    uri = f"file://{tmp_path}/staging/garden/2026-11-20/x.parquet"
    assert write_dataset(uri, SCHEMA, _batches(2, 10)) == 20
    assert pq.read_table(tmp_path / "staging/garden/2026-11-20/x.parquet").num_rows == 20


def test_a_staging_uri_with_query_options_is_refused():
    with pytest.raises(object_store.ObjectStoreConfigError, match="query options"):
        resolve("s3://pipeline-staging/staging?region=eu-west-1")


# -- a category DAG run with staging on S3, the connection read inside the tasks ---------------

def test_a_category_dag_runs_with_staging_on_s3(airflow_db, loopback_s3, monkeypatch, tmp_path):
    """The whole category DAG (extract, validate, compute_metrics, load) on the real Airflow
    (dag.test) with PIPELINE_STAGING_URI=s3://...: every staged dataset lands in the bucket.
    The connection lives only in the metadata database, so the tasks can only have read it
    through the Task SDK (Connection.get inside a task), not from the environment."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    from category_pipeline.k8s import WAREHOUSE_CONN_ID
    from tests.conftest import DAGS

    _aws_free_environment(monkeypatch)
    bucket = loopback_s3.create_bucket(f"staging-{uuid.uuid4().hex[:12]}")
    conn_id = f"staging_{uuid.uuid4().hex[:8]}"
    stored = json.loads(loopback_s3.airflow_connection())
    with create_session() as session:
        session.add(Connection(conn_id=conn_id, conn_type="aws", login=stored["login"], password=stored["password"],
                               extra=json.dumps(stored["extra"])))
    monkeypatch.setenv(object_store.CONN_ID_ENV, conn_id)
    monkeypatch.setenv("PIPELINE_STAGING_URI", f"s3://{bucket}/staging")
    monkeypatch.setenv(f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}",
                       json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}))
    try:
        bag = DagBag(dag_folder=DAGS / "category_dags.py", safe_mode=True)
        dag = bag.dags["category_fashion"]
        for task in dag.tasks:
            task.retries = 0
        run = dag.test(logical_date=datetime(2026, 11, 20, tzinfo=timezone.utc))
        assert run.state == "success"
        day = "staging/fashion/2026-11-20"
        assert _objects(loopback_s3, bucket) == sorted(
            f"{day}/{name}.parquet" for name in ("raw_orders", "catalog", "clean_orders", "quarantine", "metrics"))
    finally:
        with create_session() as session:
            session.query(Connection).filter_by(conn_id=conn_id).delete()
        object_store.clear_cache()
