"""Concurrent FIRST loads into an empty warehouse: real parallel processes (spawned, not
threads), released together by a barrier, each round against a fresh database (a new
PostgreSQL database on the throwaway server, a new SQLite file). Every load must succeed
and the tables must end with exactly the expected rows.

Per round, four processes load ``orders`` and ``category_daily_metrics``: two of them the
same partition (home, with different data), the others one category each (fashion, toys).
The home partition must hold exactly one of the two home loads, in both tables alike (the
loads are atomic and queue up), the other partitions exactly their load.
"""

from __future__ import annotations

import multiprocessing
import time
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from category_pipeline.schema import CLEAN_ORDERS, PRODUCT_METRICS
from category_pipeline.storage import write_dataset

ROUNDS = 20
WORKERS = 4
DAY = date(2026, 4, 1)
# Worker -> (category, variant): workers 0 and 1 race for one partition.
LOADS = [("home", "a"), ("home", "b"), ("fashion", "a"), ("toys", "a")]
BARRIER_TIMEOUT = 60


def _orders(category: str, variant: str, rows: int) -> pa.Table:
    offset = 0 if variant == "a" else 7  # overlapping ids, different values: a mix would show
    return pa.Table.from_pylist(
        [
            {
                "category": category,
                "order_date": DAY,
                "order_id": f"O{i + offset:05d}",
                "ordered_at": None,
                "customer_id": f"C{variant}{i}",
                "product_id": f"P{i % 5}",
                "quantity": i % 3 + 1,
                "unit_price": 1.5,
                "amount": 1.5 * (i % 3 + 1),
            }
            for i in range(rows)
        ],
        CLEAN_ORDERS,
    )


def _metrics(category: str, variant: str, products: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"category": category, "order_date": DAY, "product_id": f"{variant}{i}", "orders": i,
             "units": i, "revenue": 2.0 * i}
            for i in range(products)
        ],
        PRODUCT_METRICS,
    )


def _stage(tmp_path) -> list[dict[str, str]]:
    datasets = []
    for worker, (category, variant) in enumerate(LOADS):
        uris = {}
        for table, data in (("orders", _orders(category, variant, 200 + 10 * worker)),
                            ("category_daily_metrics", _metrics(category, variant, 5 + worker))):
            uri = str(tmp_path / f"{table}_{worker}.parquet")
            write_dataset(uri, data.schema, data.to_batches())
            uris[table] = uri
        datasets.append(uris)
    return datasets


def _worker(index: int, targets: list[str], datasets: dict[str, str], barrier, results) -> None:
    """One process: per round, wait for the others, then load into that round's database."""
    from category_pipeline.loader import load_partition
    from category_pipeline.warehouse import Warehouse

    category = LOADS[index][0]
    for round_, target in enumerate(targets):
        try:
            barrier.wait(BARRIER_TIMEOUT)
        except Exception as exc:  # a broken barrier: report it and stop
            results.put((round_, index, f"barrier: {exc!r}"))
            return
        try:
            load_partition(Warehouse.from_uri(target), datasets, {"category": category, "order_date": DAY.isoformat()})
            results.put((round_, index, None))
        except BaseException as exc:  # reported by the test
            results.put((round_, index, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"))


def _run_rounds(targets: list[str], datasets: list[dict[str, str]]) -> dict[int, list[str]]:
    """Failures per round (round -> messages), after all workers ran all rounds."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=_worker, args=(i, targets, datasets[i], barrier, results), daemon=True)
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outcomes, deadline = [], time.monotonic() + 300
    try:
        while len(outcomes) < WORKERS * len(targets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"the loads did not finish within 300 s: {len(outcomes)} outcomes")
            try:
                outcomes.append(results.get(timeout=min(remaining, 5)))
            except Exception:  # queue.Empty: check the workers are alive
                if not any(p.is_alive() for p in processes):
                    pytest.fail(f"the workers ended early: {len(outcomes)} outcomes: {outcomes[-4:]}")
            else:
                if outcomes[-1][2] and outcomes[-1][2].startswith("barrier:"):
                    pytest.fail(f"worker {outcomes[-1][1]} lost the barrier: {outcomes[-1][2]}")
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    failures: dict[int, list[str]] = {}
    for round_, index, error in outcomes:
        if error:
            failures.setdefault(round_, []).append(f"worker {index} ({LOADS[index][0]}): {error}")
    return failures


def _expected(datasets: list[dict[str, str]], table: str, worker: int) -> list[tuple]:
    rows = pq.read_table(datasets[worker][table]).to_pylist()
    return sorted(tuple(str(v) if v is not None else None for v in row.values()) for row in rows)


def _check_contents(rows_of, datasets: list[dict[str, str]]) -> None:
    """``rows_of(table)``: every row of the table as a tuple of str (None for NULL)."""
    winners = set()
    for table in ("orders", "category_daily_metrics"):
        rows = rows_of(table)
        by_category: dict[str, list[tuple]] = {}
        for row in rows:
            by_category.setdefault(row[0], []).append(row)
        assert sorted(by_category) == ["fashion", "home", "toys"], table
        assert sorted(by_category["fashion"]) == _expected(datasets, table, 2), table
        assert sorted(by_category["toys"]) == _expected(datasets, table, 3), table
        home = sorted(by_category["home"])
        matches = [w for w in (0, 1) if home == _expected(datasets, table, w)]
        assert matches, f"{table}: the home partition is not exactly one of the two loads (a mix?)"
        winners.add(matches[0])
    assert len(winners) == 1, "orders and metrics of the home partition come from different loads"


def _report_failures(failures: dict[int, list[str]], dialect: str) -> str:
    failed = sum(len(messages) for messages in failures.values())
    lines = [f"{dialect}: {len(failures)} of {ROUNDS} rounds had a failed load "
             f"({failed} of {ROUNDS * WORKERS} loads failed)"]
    for round_, messages in sorted(failures.items())[:5]:
        lines += [f"  round {round_}: {message.splitlines()[0][:300]}" for message in messages]
    return "\n".join(lines)


@pytest.mark.postgres
def test_concurrent_first_loads_into_fresh_postgres_databases(tmp_path, new_postgres_database, report):
    import psycopg

    datasets = _stage(tmp_path)
    uris = [new_postgres_database("first") for _ in range(ROUNDS)]
    started = time.monotonic()
    failures = _run_rounds(uris, datasets)
    report(f"concurrent first loads, PostgreSQL: {ROUNDS} rounds x {WORKERS} processes in "
           f"{time.monotonic() - started:.1f} s, {len(failures)} rounds with a failure")
    assert not failures, _report_failures(failures, "PostgreSQL")
    for uri in uris:
        with psycopg.connect(uri) as connection:
            def rows_of(table, connection=connection):
                return [tuple(str(v) if v is not None else None for v in row)
                        for row in connection.execute(f"SELECT * FROM {table}").fetchall()]
            _check_contents(rows_of, datasets)


def test_concurrent_first_loads_into_fresh_sqlite_files(tmp_path, report):
    import sqlite3

    datasets = _stage(tmp_path)
    files = [tmp_path / f"round_{i}" / "warehouse.db" for i in range(ROUNDS)]
    started = time.monotonic()
    failures = _run_rounds([f"sqlite:///{path}" for path in files], datasets)
    report(f"concurrent first loads, SQLite: {ROUNDS} rounds x {WORKERS} processes in "
           f"{time.monotonic() - started:.1f} s, {len(failures)} rounds with a failure")
    assert not failures, _report_failures(failures, "SQLite")
    for path in files:
        connection = sqlite3.connect(path)
        try:
            def rows_of(table, connection=connection):
                return [tuple(str(v) if v is not None else None for v in row)
                        for row in connection.execute(f"SELECT * FROM {table}").fetchall()]
            _check_contents(rows_of, datasets)
        finally:
            connection.close()
