"""Staging retention: nothing in the staging area grows without bound. prune_staging removes
datasets written more than N days ago, temporaries of dead writers after an hour, the folders
left empty, and (S3) incomplete multipart uploads after a day; on local disk and on the
loopback S3. The S3 lifecycle rule says the same to the store itself; the staging_retention
DAG runs prune_staging daily."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from category_pipeline import object_store
from category_pipeline.storage import RETENTION_ENV, dataset_uri, prune_staging, retention_days, write_dataset

SCHEMA = pa.schema([("id", pa.int64())])
NOW = datetime.now(timezone.utc)


def _write(uri: str) -> None:
    write_dataset(uri, SCHEMA, [pa.record_batch([pa.array([1, 2, 3])], schema=SCHEMA)])


def _age(path, age: timedelta) -> None:
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))


def test_local_staging_keeps_recent_datasets_and_removes_old_ones(tmp_path):
    root = str(tmp_path / "staging")
    old = dataset_uri(root, "garden", "2026-11-01", "clean_orders")
    recent = dataset_uri(root, "garden", "2026-11-19", "clean_orders")
    backfilled = dataset_uri(root, "pets", "2020-01-01", "raw_orders")  # an old day, written today
    for uri in (old, recent, backfilled):
        _write(uri)
    _age(old, timedelta(days=8))
    _age(recent, timedelta(days=6))
    dead_writer = tmp_path / "staging/garden/2026-11-19/metrics.parquet.0123abcd.tmp"
    live_writer = tmp_path / "staging/pets/2020-01-01/catalog.parquet.4567cdef.tmp"
    dead_writer.write_bytes(b"partial")
    live_writer.write_bytes(b"partial")
    _age(dead_writer, timedelta(hours=2))
    _age(live_writer, timedelta(minutes=10))

    pruned = prune_staging(root, 7)

    assert pruned.datasets == [old]
    assert pruned.temporaries == [str(dead_writer)]
    assert pruned.folders == [str(tmp_path / "staging/garden/2026-11-01")]  # emptied; the others still hold files
    left = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "staging").rglob("*") if p.is_file())
    assert left == [
        "staging/garden/2026-11-19/clean_orders.parquet",
        "staging/pets/2020-01-01/catalog.parquet.4567cdef.tmp",
        "staging/pets/2020-01-01/raw_orders.parquet",
    ]


def test_a_missing_staging_folder_is_nothing_to_prune(tmp_path):
    assert prune_staging(str(tmp_path / "never-written"), 7).counts() == {
        "datasets": 0, "temporaries": 0, "folders": 0, "aborted_uploads": 0}


@pytest.fixture
def s3_root(loopback_s3, monkeypatch):
    for name in [*os.environ]:
        if name.startswith("AWS_") or name == object_store.CONN_ID_ENV:
            monkeypatch.delenv(name)
    for name, value in loopback_s3.aws_env().items():
        monkeypatch.setenv(name, value)
    object_store.clear_cache()
    bucket = loopback_s3.create_bucket(f"staging-{uuid.uuid4().hex[:12]}")
    yield bucket, f"s3://{bucket}/staging"
    object_store.clear_cache()


def test_s3_staging_removes_expired_objects_dead_temporaries_and_uploads(loopback_s3, s3_root):
    """Objects' ages cannot be set on the store: ``now`` moves instead."""
    bucket, root = s3_root
    _write(dataset_uri(root, "garden", "2026-11-19", "clean_orders"))
    _write(dataset_uri(root, "pets", "2026-11-19", "clean_orders"))
    client = loopback_s3.client()
    client.put_object(Bucket=bucket, Key="staging/pets/2026-11-19/metrics.parquet.89ab.tmp", Body=b"partial")
    client.create_multipart_upload(Bucket=bucket, Key="staging/pets/2026-11-19/quarantine.parquet.cdef.tmp")
    client.put_object(Bucket=bucket, Key="elsewhere/keep.parquet", Body=b"not staging")

    two_hours_on = prune_staging(root, 7, now=NOW + timedelta(hours=2))
    assert two_hours_on.datasets == []
    assert two_hours_on.temporaries == [f"{bucket}/staging/pets/2026-11-19/metrics.parquet.89ab.tmp"]
    # (moto dates every upload 2010: it is a day old at once, see test_storage_s3.)
    assert two_hours_on.aborted_uploads == [f"{bucket}/staging/pets/2026-11-19/quarantine.parquet.cdef.tmp"]
    assert loopback_s3.multipart_uploads(bucket) == []
    assert [k for k in loopback_s3.keys(bucket) if not k.endswith("/")] == [
        "elsewhere/keep.parquet",
        "staging/garden/2026-11-19/clean_orders.parquet",
        "staging/pets/2026-11-19/clean_orders.parquet",
    ]

    assert prune_staging(root, 7, now=NOW + timedelta(days=6)).datasets == []
    eight_days_on = prune_staging(root, 7, now=NOW + timedelta(days=8))
    assert sorted(eight_days_on.datasets) == [
        f"{bucket}/staging/garden/2026-11-19/clean_orders.parquet",
        f"{bucket}/staging/pets/2026-11-19/clean_orders.parquet",
    ]
    # pyarrow's empty folder markers go with the last file under them; outside the prefix, nothing.
    assert loopback_s3.keys(bucket) == ["elsewhere/keep.parquet"]


def test_the_lifecycle_rule_is_accepted_by_the_s3_api(loopback_s3, s3_root):
    bucket, _ = s3_root
    rule = object_store.lifecycle_configuration("staging", 7)
    client = loopback_s3.client()
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rule)
    (stored,) = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert stored["Filter"] == {"Prefix": "staging/"}
    assert stored["Expiration"] == {"Days": 7}
    assert stored["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert stored["Status"] == "Enabled"


def test_the_lifecycle_rule_is_printed_for_a_bucket_job(capsys):
    import json

    assert object_store.main(["lifecycle", "staging", "5"]) == 0
    assert json.loads(capsys.readouterr().out) == object_store.lifecycle_configuration("staging", 5)
    assert object_store.main(["lifecycle", "staging", "five"]) == 2


@pytest.mark.parametrize("value, expected", [(None, 7), ("3", 3), ("0", None), ("a week", None)])
def test_the_retention_is_configurable(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(RETENTION_ENV, raising=False)
    else:
        monkeypatch.setenv(RETENTION_ENV, value)
    if expected is None:
        with pytest.raises(ValueError, match=RETENTION_ENV):
            retention_days()
    else:
        assert retention_days() == expected


def test_the_maintenance_dag_prunes_the_staging_area_daily(airflow_db, monkeypatch, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS

    root = tmp_path / "staging"
    old = dataset_uri(str(root), "garden", "2026-11-01", "clean_orders")
    recent = dataset_uri(str(root), "garden", "2026-11-26", "clean_orders")
    _write(old)
    _write(recent)
    _age(old, timedelta(days=4))
    monkeypatch.setenv("PIPELINE_STAGING_URI", str(root))
    monkeypatch.setenv(RETENTION_ENV, "3")

    bag = DagBag(dag_folder=DAGS / "staging_retention.py", safe_mode=True)
    assert bag.import_errors == {}
    dag = bag.dags["staging_retention"]
    assert dag.schedule == "@daily" and not dag.catchup
    run = dag.test()
    assert run.state == "success"
    assert not os.path.exists(old) and os.path.exists(recent)
