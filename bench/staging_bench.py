"""Process step with staging on S3 vs on local disk: what the object-store path costs.

The same raw_orders.parquet and catalog.parquet (made once with ``category_pipeline.synthetic``
and ``storage.write_dataset``, shared with process_bench: 40 products, 2% bad rows) are put
on local disk and in a bucket of a loopback S3 API that this benchmark starts (moto's
``ThreadedMotoServer`` on 127.0.0.1, a thread of this process). The project's process step,
exactly as the DAG runs it (``process.validate`` then ``process.compute_metrics``), then runs
with inputs and outputs on disk, and with inputs and outputs on ``s3://``: the child finds
the store as a task does, through ``PIPELINE_STAGING_CONN_ID=object_store`` and the connection
in ``AIRFLOW_CONN_OBJECT_STORE`` (see category_pipeline.object_store).

Each run is its own child process (``--run``), so that its peak RSS is its own. Rows/s come
from the child's work time (interpreter start and imports excluded, for both). After every
pair of runs the outputs are compared: identical clean orders and quarantine counts per
reason, identical metrics but revenue within 0.01 (compute_metrics sums in threads: the last
bit of a sum varies from run to run, on disk too). The S3 run must leave exactly its three
objects (no temporary object, no unfinished multipart upload; the empty folder marker
pyarrow's move leaves is not counted). The benchmark fails if not.

The loopback store has no network latency: the ratio is the cost of the S3 protocol path
(HTTP, request signing, multipart upload, the server-side copy on publish), not of a network.

    python bench/staging_bench.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, measure, report, table, version
from process_bench import (
    BAD_ROW_RATIO,
    CATEGORY,
    DAY,
    PRODUCTS,
    load_average,
    make_data,
    run_project,
)

OUT = RESULTS / "staging-out"
STORAGES = ("disk", "s3")
OUTPUTS = ("clean_orders", "quarantine", "metrics")
BUCKET = "pipeline-staging"
CONN_ID = "object_store"
# The loopback store's keys (moto accepts any): the child gets them only through the connection.
ACCESS_KEY = "loopback-access-key"
SECRET_KEY = "loopback-secret-key"
REGION = "us-east-1"

# Imported before the clock starts, for both: airflow.sdk is what reads the connection.
PRELOAD = ["category_pipeline.process", "category_pipeline.object_store", "pyarrow.acero", "pandas", "airflow.sdk"]


# --- the loopback store ----------------------------------------------------------------------


class LoopbackS3:
    """moto's S3 server in this process, on 127.0.0.1 (as tests/support/s3.py, not imported:
    the benchmarks do not depend on the tests)."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def __enter__(self) -> Self:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def connection(self) -> str:
        return json.dumps({"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
                           "extra": {"endpoint_url": self.endpoint, "region_name": REGION}})


def child_env(store: LoopbackS3) -> dict[str, str]:
    """The same environment for both runs: the staging connection, and no AWS_* variables
    (the store must be found through the connection, as in a task pod)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PIPELINE_STAGING_CONN_ID"] = CONN_ID
    env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = store.connection()
    return env


# --- runs, checks and the report -------------------------------------------------------------


def run_child(storage: str, inputs: dict[str, str], store: LoopbackS3, env: dict) -> tuple[dict, float, float, float, Path]:
    """One run; its result, wall s, peak RSS MiB, the store's CPU s and a local copy of its outputs."""
    local = OUT / storage
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    out = str(local) if storage == "disk" else f"s3://{BUCKET}/{prefix}"
    store_cpu = time.process_time()  # this process only serves S3 (moto's threads) meanwhile
    measured = measure([sys.executable, __file__, "--run", inputs["raw"], inputs["catalog"], out], env=env)
    store_cpu = time.process_time() - store_cpu
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    if storage == "s3":
        client = store.client()
        listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))
        # pyarrow's move re-creates the emptied parent's folder marker (an empty "<prefix>/").
        markers = [key for key in listed if key.endswith("/")]
        keys = [key for key in listed if not key.endswith("/")]
        expected = sorted(f"{prefix}/{name}.parquet" for name in OUTPUTS)
        uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
        if keys != expected or uploads or set(markers) - {f"{prefix}/"}:
            raise SystemExit(f"FAILED: the S3 run left {listed} and {len(uploads)} unfinished uploads, not {expected}")
        for key in keys:
            client.download_file(BUCKET, key, str(local / key.rsplit("/", 1)[1]))
        for key in listed:
            client.delete_object(Bucket=BUCKET, Key=key)  # moto keeps objects in memory
    return result, measured.seconds, measured.peak_rss_mib, store_cpu, local


def check_same_results(rows: int, outputs: dict[str, Path], results: dict[str, dict]) -> None:
    """Fail loudly unless both runs wrote the same thing."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE

    problems, tables, reasons = [], {}, {}
    for storage, out in outputs.items():
        for file, schema in (("clean_orders", CLEAN_ORDERS), ("quarantine", QUARANTINE), ("metrics", PRODUCT_METRICS)):
            written = pq.read_schema(out / f"{file}.parquet")
            if not written.equals(schema, check_metadata=False):
                problems.append(f"{storage}: {file}.parquet has schema\n{written}\nnot\n{schema}")
        tables[storage] = {file: pq.read_table(out / f"{file}.parquet") for file in ("clean_orders", "metrics")}
        counts = pc.value_counts(pq.read_table(out / "quarantine.parquet", columns=["reason"]).column("reason"))
        reasons[storage] = dict(sorted((c["values"], c["counts"]) for c in counts.to_pylist()))
        result = results[storage]
        if reasons[storage] != result["quarantine_reasons"]:
            problems.append(f"{storage}: reports reasons {result['quarantine_reasons']}, wrote {reasons[storage]}")
        clean_rows = tables[storage]["clean_orders"].num_rows
        if clean_rows != result["clean_rows"] or clean_rows + sum(reasons[storage].values()) != rows:
            problems.append(f"{storage}: {clean_rows} clean + {sum(reasons[storage].values())} quarantined != {rows}")
        if tables[storage]["metrics"].num_rows != result["metrics_rows"]:
            problems.append(f"{storage}: reports {result['metrics_rows']} metrics rows, wrote {tables[storage]['metrics'].num_rows}")

    a, b = STORAGES
    if reasons[a] != reasons[b]:
        problems.append(f"quarantine counts per reason differ: {a} {reasons[a]} vs {b} {reasons[b]}")
    if not tables[a]["clean_orders"].equals(tables[b]["clean_orders"]):
        problems.append(f"clean orders differ: {a} {tables[a]['clean_orders'].num_rows:,} rows vs {b} {tables[b]['clean_orders'].num_rows:,}")
    # Revenue within 0.01, as process_bench: compute_metrics sums in threads, so the last bit
    # of a sum (and of its rounding) varies from run to run on the same file, disk or S3.
    metrics = {storage: {row.pop("product_id"): row for row in tables[storage]["metrics"].to_pylist()} for storage in STORAGES}
    if metrics[a].keys() != metrics[b].keys():
        problems.append(f"products differ: {sorted(metrics[a].keys() ^ metrics[b].keys())}")
    for product in sorted(metrics[a].keys() & metrics[b].keys()):
        x, y = metrics[a][product], metrics[b][product]
        if {k: v for k, v in x.items() if k != "revenue"} != {k: v for k, v in y.items() if k != "revenue"}:
            problems.append(f"{product}: {a} {x} vs {b} {y}")
        elif abs(x["revenue"] - y["revenue"]) > 0.01:
            problems.append(f"{product}: revenue {a} {x['revenue']} vs {b} {y['revenue']}")
    if problems:
        raise SystemExit(f"FAILED at {rows:,} rows: disk and S3 runs disagree\n" + "\n".join(problems[:20]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per storage")
    parser.add_argument("--run", nargs=3, metavar=("RAW", "CATALOG", "OUTROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run:  # child mode: the process step once; its result as JSON on the last line
        for module in PRELOAD:
            importlib.import_module(module)
        print(json.dumps(run_project(*args.run)))
        return 0

    rows = args.rows
    began = time.perf_counter()
    raw, catalog = make_data(rows)
    with LoopbackS3() as store:
        client = store.client()
        client.create_bucket(Bucket=BUCKET)
        staged = f"staging/{CATEGORY}/{DAY}"
        for path, name in ((raw, "raw_orders"), (catalog, "catalog")):
            client.upload_file(str(path), BUCKET, f"{staged}/{name}.parquet")
        inputs = {
            "disk": {"raw": str(raw), "catalog": str(catalog)},
            "s3": {"raw": f"s3://{BUCKET}/{staged}/raw_orders.parquet", "catalog": f"s3://{BUCKET}/{staged}/catalog.parquet"},
        }
        env = child_env(store)
        runs = {storage: [] for storage in STORAGES}
        load = load_average()
        for i in range(args.repeat):
            order = STORAGES if i % 2 == 0 else STORAGES[::-1]  # spread cache and noise
            results, outputs = {}, {}
            for storage in order:
                result, wall, peak, store_cpu, outputs[storage] = run_child(storage, inputs[storage], store, env)
                results[storage] = result
                runs[storage].append((result["seconds"], result["cpu"], wall, store_cpu, peak))
                print(
                    f"{rows:>12,} {storage:5} work {result['seconds']:6.2f} s  cpu {result['cpu']:6.2f} s  "
                    f"wall {wall:6.2f} s  store cpu {store_cpu:6.2f} s  peak {peak:6.0f} MiB",
                    flush=True,
                )
            check_same_results(rows, outputs, results)

    stats = {}
    for storage in STORAGES:
        work, cpu, wall, store_cpu = (statistics.median(r[k] for r in runs[storage]) for k in range(4))
        stats[storage] = {"rps": rows / work, "work": work, "cpu": cpu, "wall": wall, "store_cpu": store_cpu,
                          "peak": max(r[4] for r in runs[storage])}
    ratio = stats["s3"]["rps"] / stats["disk"]["rps"]
    rss_ratio = stats["s3"]["peak"] / stats["disk"]["peak"]
    table_rows = [
        [rows, storage, args.repeat, f"{st['rps']:,.0f}", st["work"], st["cpu"], st["wall"], f"{st['peak']:,.0f}",
         st["store_cpu"], "", ""]
        for storage, st in stats.items()
    ]
    table_rows[-1][-2:] = [f"**{ratio:.2f}x**", f"{rss_ratio:.2f}x"]

    body = (
        f"The process step (`process.validate` then `process.compute_metrics`, as the DAG runs them) on "
        f"{rows:,} synthetic raw orders ({PRODUCTS} products, {BAD_ROW_RATIO:.0%} bad rows) with its inputs "
        f"and outputs staged on local disk vs on S3: a bucket of a loopback S3 API (moto "
        f"{version('moto')} `ThreadedMotoServer` on 127.0.0.1, in the benchmark's process), reached by "
        f"pyarrow {version('pyarrow')}'s S3 filesystem through `PIPELINE_STAGING_CONN_ID=object_store` "
        f"and `AIRFLOW_CONN_OBJECT_STORE`, as a task finds it.\n\n"
        f"**The loopback S3 has no network latency**: the ratio is the cost of the S3 protocol path "
        f"(HTTP, request signing, multipart upload, the server-side copy of each output on publish), not "
        f"of a real network; a remote store adds its round trips and bandwidth on top. The store is moto "
        f"(a Python server in the benchmark process): its CPU (store CPU s, the benchmark process while the "
        f"child runs) competes with the child for the {os.cpu_count()} cores, so the ratio is, if "
        f"anything, pessimistic for the protocol path itself.\n\n"
        f"Each run is a fresh child process; rows/s from the child's work time (interpreter start and "
        f"imports excluded; wall time includes them); CPU s is the child's CPU time over the work (all "
        f"threads); medians of the runs, peak RSS the maximum. After every pair of runs both outputs are "
        f"checked equal (clean orders identical, quarantine counts per reason, metrics with revenue within "
        f"0.01, schemas) and "
        f"the S3 run must leave exactly its three objects (no temporary, no unfinished multipart upload; "
        f"pyarrow's folder marker aside).\n\n"
        + table(
            ["rows", "staging", "runs", "rows/s", "work s", "CPU s", "wall s", "peak RSS MiB", "store CPU s",
             "S3/disk rows/s", "S3/disk peak RSS"],
            table_rows,
        )
        + f"\n\nMachine load (1-min load average) at the start: {load:.2f} on {os.cpu_count()} cores. "
        f"Total benchmark time: {time.perf_counter() - began:.0f} s."
    )
    report("staging", "Process step: staging on S3 (loopback) vs local disk", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
