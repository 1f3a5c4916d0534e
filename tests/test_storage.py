"""Staged datasets are published atomically: a dataset appears under its final name only
once it is complete (storage.DatasetWriter writes a temporary file and moves it on commit),
so a reader never sees a partial dataset, whether the writer is killed, fails or reruns."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline.storage import DatasetReadError, read_batches, read_metadata, read_schema, write_dataset

SCHEMA = pa.schema([("id", pa.int64()), ("label", pa.string())])


def _batch(start: int, rows: int) -> pa.RecordBatch:
    ids = pa.array(range(start, start + rows), pa.int64())
    return pa.RecordBatch.from_arrays([ids, pa.array([f"row {i}" for i in range(start, start + rows)])], schema=SCHEMA)


def _batches(count: int, rows: int):
    for i in range(count):
        yield _batch(i * rows, rows)


def _rows(path) -> int:
    return pq.read_metadata(path).num_rows


SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from category_pipeline.storage import write_dataset

    uri, count, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])

    def batches():
        for i in range(count):
            ids = range(i * rows, (i + 1) * rows)
            yield pa.RecordBatch.from_arrays(
                [pa.array(ids, pa.int64()), pa.array([f"row {j}" for j in ids])], schema=schema)
            print(f"wrote {i + 1}", flush=True)  # the batch has gone to the writer
            time.sleep(0.05)

    write_dataset(uri, schema, batches())
    print("done", flush=True)
    """
)


def test_writer_killed_mid_write_never_shows_the_final_name(tmp_path):
    """A writer process SIGKILLed in the middle of a dataset leaves nothing under the
    dataset's final name, neither during the write nor after the kill."""
    final = tmp_path / "orders.parquet"
    count, rows, kill_after = 60, 20_000, 10  # about 3 s to write in full; killed after ~0.5 s

    seen_final = threading.Event()
    stop = threading.Event()

    def watch_final_name():
        while not stop.is_set():
            if final.exists():
                seen_final.set()
            time.sleep(0.001)

    watcher = threading.Thread(target=watch_final_name, daemon=True)
    watcher.start()
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(final), str(count), str(rows)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        written = 0
        for line in writer.stdout:  # ends when the writer exits early (then the asserts say why)
            if line.startswith("wrote "):
                written = int(line.split()[1])
            if written >= kill_after:
                break
        assert writer.poll() is None, f"the writer ended before it was killed (wrote {written} batches)"
        assert kill_after <= written < count  # in the middle of the dataset
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        time.sleep(0.05)  # a few more looks at the final name after the kill
    finally:
        stop.set()
        watcher.join()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL

    assert not seen_final.is_set(), "the final name appeared while the dataset was being written"
    assert not final.exists()
    # The killed writer could not clean up: its temporary file may be left over, but never
    # under the final name (a later rerun writes a new temporary and replaces the dataset).
    leftovers = list(tmp_path.iterdir())
    assert all(path.name != final.name and path.name.endswith(".tmp") for path in leftovers), leftovers


def test_writer_failing_mid_write_leaves_no_file(tmp_path):
    """A write whose batches raise part way leaves neither the final file nor its temporary."""
    final = tmp_path / "orders.parquet"

    def three_batches_then_error():
        yield from _batches(3, 1_000)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_dataset(str(final), SCHEMA, three_batches_then_error())
    assert list(tmp_path.iterdir()) == []


def test_failed_rerun_leaves_the_previous_dataset_whole(tmp_path):
    """A rerun that fails part way keeps the previous complete dataset under the final name."""
    final = tmp_path / "orders.parquet"
    write_dataset(str(final), SCHEMA, _batches(4, 1_000))

    def two_batches_then_error():
        yield from _batches(2, 500)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_dataset(str(final), SCHEMA, two_batches_then_error())
    assert [path.name for path in tmp_path.iterdir()] == [final.name]
    assert pq.read_table(final).equals(pa.Table.from_batches(list(_batches(4, 1_000))))


def test_completed_write_appears_whole_and_rerun_replaces_it_whole(tmp_path):
    """A completed write shows every row under the final name; a rerun over it replaces it
    whole: a reader during the rerun sees the old complete dataset, after it the new one."""
    final = tmp_path / "orders.parquet"

    def watched(batches):
        for batch in batches:
            assert not final.exists(), "the final name appeared before the write completed"
            yield batch

    assert write_dataset(str(final), SCHEMA, watched(_batches(5, 2_000))) == 10_000
    assert _rows(final) == 10_000
    assert pq.read_table(final).equals(pa.Table.from_batches(list(_batches(5, 2_000))))

    seen_during_rerun = []

    def new_data_read_along():
        for batch in _batches(3, 1_000):
            seen_during_rerun.append(pq.read_table(final).num_rows)  # a reader mid-rerun
            yield batch
        seen_during_rerun.append(pq.read_table(final).num_rows)  # all batches written, not committed

    assert write_dataset(str(final), SCHEMA, new_data_read_along()) == 3_000
    assert seen_during_rerun == [10_000] * 4
    assert pq.read_table(final).equals(pa.Table.from_batches(list(_batches(3, 1_000))))
    assert [path.name for path in tmp_path.iterdir()] == [final.name]


@pytest.mark.parametrize("read", [lambda uri: list(read_batches(uri)), read_metadata, read_schema],
                         ids=["read_batches", "read_metadata", "read_schema"])
def test_every_read_of_a_truncated_dataset_names_the_file(tmp_path, read):
    """Process and load both read staged datasets through these: a corrupt one is named."""
    path = tmp_path / "clean_orders.parquet"
    write_dataset(str(path), SCHEMA, _batches(3, 1000))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetReadError, match=f"staged dataset {path} is corrupt or truncated"):
        read(str(path))
    with pytest.raises(FileNotFoundError):
        read(str(tmp_path / "missing.parquet"))
