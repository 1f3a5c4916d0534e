"""Backfill one category over a range of order dates with Airflow 3's own backfill.

    python -m category_pipeline.backfill home --from 2026-11-01 --to 2026-11-07   # make backfill

Laptop mode (this module's ``main``): the same state as ``make run`` (.local/). It serializes
the DAGs, creates the Backfill with ``airflow backfill create`` and lets a real scheduler run
its DAG runs: the one of ``make airflow`` when that is up, else a scheduler and an API server
(the tasks' execution API) started on 127.0.0.1 for the duration and stopped afterwards.
That scheduler creates no scheduled runs (``use_job_schedule=False``): it only runs queued
ones, so the backfill is all it does. A cluster goes through the REST API instead
(``scripts/platform_api.py backfill``), which shares the helpers at the top of this file.

Either way a rerun of a range re-processes it (``reprocess_behavior=completed``), and each
load replaces its day's partition: a rerun gives the same rows, never twice as many.

The helpers before the laptop section use the standard library only: platform_api.py imports
them without a virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path

# Re-running a range re-processes its days (a run per day exists already): "completed"
# clears finished runs, failed or not. "none", Airflow's default, would skip every such day.
REPROCESS_BEHAVIOR = "completed"
FINISHED = ("success", "failed")
DEFAULT_TIMEOUT = 3600.0  # seconds a backfill may take before the command gives up waiting


class BackfillError(RuntimeError):
    """A backfill that could not be created or did not finish; the message says why."""


# --- shared by the laptop and the cluster (standard library only) -------------------------


def dag_id_of(category: str) -> str:
    """``home`` -> ``category_home``; a full DAG id is kept."""
    return category if category.startswith("category_") else f"category_{category}"


def parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise BackfillError(f"{name}={value!r} is not a date (YYYY-MM-DD)") from None


def date_window(start: date, end: date) -> tuple[str, str]:
    """The Backfill's from/to dates for the order dates ``start``..``end``, both included.

    A run's order date is its logical date's day; a schedule such as ``0 3 * * *`` has its
    logical dates at 03:00, so the window ends at the last second of ``end``, not its midnight.
    """
    if start > end:
        raise BackfillError(f"FROM={start} is after TO={end}")
    return f"{start.isoformat()}T00:00:00+00:00", f"{end.isoformat()}T23:59:59+00:00"


def progress_line(dag_id: str, states: Mapping[str, int], total: int) -> str:
    """``category_home: 2/3 runs done (1 success, 1 failed), 1 running``."""
    done = sum(states.get(state, 0) for state in FINISHED)
    others = ", ".join(f"{count} {state}" for state, count in sorted(states.items()) if state not in FINISHED and count)
    line = f"{dag_id}: {done}/{total} runs done ({states.get('success', 0)} success, {states.get('failed', 0)} failed)"
    return f"{line}, {others}" if others else line


def format_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """A plain text table, numbers right-aligned with thousands separators."""
    def text(value) -> str:
        if value is None:
            return "-"
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    cells = [list(columns)] + [[text(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Progress:
    """Prints a progress line each time it changes (not at every poll)."""

    def __init__(self, dag_id: str, out=None):
        self.dag_id = dag_id
        self.out = out or sys.stdout
        self.last = ""

    def update(self, states: Mapping[str, int], total: int) -> None:
        line = progress_line(self.dag_id, states, total)
        if line != self.last:
            print(line, file=self.out, flush=True)
            self.last = line


# --- laptop mode ---------------------------------------------------------------------------


def _airflow(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["airflow", *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)


def _last_lines(result: subprocess.CompletedProcess, count: int = 15) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-count:])


def _prepare(repo: Path) -> None:
    """The laptop's Airflow (``make run``'s state, user settings first), migrated, with the
    DAGs serialized: a Backfill is made from the serialized DAG."""
    from category_pipeline.local_run import laptop_env

    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    for key, value in laptop_env(repo).items():
        os.environ.setdefault(key, value)
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    for step in (("db", "migrate"), ("dags", "reserialize")):
        result = _airflow(*step)
        if result.returncode:
            raise BackfillError(f"airflow {' '.join(step)} failed:\n{_last_lines(result)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (the component and the task processes it started)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextlib.contextmanager
def scheduler_for_backfill(log_dir: Path, start_timeout: float = 120) -> Iterator[None]:
    """An ``airflow api-server`` (the execution API the tasks report to) and an
    ``airflow scheduler`` on 127.0.0.1 for the duration, each in its own process group, both
    stopped on exit. The scheduler creates no scheduled runs: it only runs queued ones."""
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    # The scheduler signs the tasks' tokens and the API server checks them: one key for both
    # (unset, each process would make up its own).
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))  # >= 64 bytes: no InsecureKeyLengthWarning
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    try:
        for component in ("api-server", "scheduler"):
            with (log_dir / f"{component}.log").open("w") as log:
                processes.append(subprocess.Popen(
                    ["airflow", component], env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                ))
            if component == "api-server":
                _wait_for_health(f"http://127.0.0.1:{port}/api/v2/monitor/health", processes[0],
                                 log_dir / "api-server.log", start_timeout)
        yield
    finally:
        for process in reversed(processes):
            _stop(process)


def _wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BackfillError(f"airflow api-server exited with {process.returncode}; see {log}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise BackfillError(f"airflow api-server did not answer {url} within {timeout:.0f} s; see {log}")


def _scheduler_alive() -> bool:
    """A live scheduler on this metadata database, e.g. ``make airflow``'s."""
    from airflow.jobs.job import most_recent_job
    from airflow.utils.session import create_session

    with create_session() as session:
        job = most_recent_job("SchedulerJob", session=session)
        return bool(job and job.is_alive())


def _set_paused(dag_id: str, paused: bool) -> bool:
    """Pause or unpause ``dag_id``; returns whether it was paused. Queued runs of a paused
    DAG, backfill runs included, are never started."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        model = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
        if model is None:
            known = sorted(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.like("category_%"))))
            raise BackfillError(f"no DAG {dag_id} (categories: {', '.join(known) or 'none'})")
        was_paused = bool(model.is_paused)
        model.is_paused = paused
    return was_paused


def create_backfill(dag_id: str, start: date, end: date) -> int:
    """``airflow backfill create`` over the order dates; the new Backfill's id."""
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from_date, to_date = date_window(start, end)
    result = _airflow("backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date,
                      "--reprocess-behavior", REPROCESS_BEHAVIOR)
    if result.returncode:
        raise BackfillError(f"airflow backfill create --dag-id {dag_id} failed:\n{_last_lines(result)}")
    with create_session() as session:
        backfill_id = session.scalar(
            select(Backfill.id).where(Backfill.dag_id == dag_id, Backfill.completed_at.is_(None))
            .order_by(Backfill.id.desc()).limit(1)
        )
    if backfill_id is None:
        raise BackfillError(f"airflow backfill create made no backfill of {dag_id}:\n{_last_lines(result)}")
    return backfill_id


def backfill_runs(backfill_id: int) -> tuple[list[dict], bool]:
    """The Backfill's runs (order date, run id, state) and whether Airflow marked it complete."""
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        completed = session.scalar(select(Backfill.completed_at).where(Backfill.id == backfill_id)) is not None
        runs = session.execute(
            select(DagRun.logical_date, DagRun.run_id, DagRun.state).where(DagRun.backfill_id == backfill_id)
            .order_by(DagRun.logical_date)
        ).all()
    return [{"order_date": logical.date(), "run_id": run_id, "state": str(state)} for logical, run_id, state in runs], completed


def watch(backfill_id: int, dag_id: str, timeout: float = DEFAULT_TIMEOUT, poll: float = 2.0, out=None) -> list[dict]:
    """Print progress until Airflow marks the Backfill complete (its scheduler checks every
    30 s); the runs as they ended."""
    from sqlalchemy.exc import OperationalError

    progress = Progress(dag_id, out)
    deadline = time.monotonic() + timeout
    while True:
        try:
            runs, completed = backfill_runs(backfill_id)
        except OperationalError as exc:  # SQLite busy under the scheduler's writes: poll again
            if "locked" not in str(exc):
                raise
        else:
            progress.update(Counter(run["state"] for run in runs), len(runs))
            if completed and all(run["state"] in FINISHED for run in runs):
                return runs
        if time.monotonic() > deadline:
            raise BackfillError(f"backfill {backfill_id} of {dag_id} did not finish within {timeout:.0f} s")
        time.sleep(poll)


def orders_per_day(warehouse, category: str, start: date, end: date) -> dict[date, int]:
    """Rows of ``orders`` per order date of the category in the warehouse (days without any: 0)."""
    placeholder = "%s" if warehouse.dialect == "postgres" else "?"
    params = [category, start, end] if warehouse.dialect == "postgres" else [category, start.isoformat(), end.isoformat()]
    connection = warehouse.connect()
    try:
        rows = connection.execute(
            f"SELECT order_date, COUNT(*) FROM orders WHERE category = {placeholder} "
            f"AND order_date BETWEEN {placeholder} AND {placeholder} GROUP BY order_date", params,
        ).fetchall()
    except Exception as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):  # nothing loaded yet, anywhere
            rows = []
        else:
            raise
    finally:
        connection.close()
    counts = {date.fromisoformat(str(day)[:10]): count for day, count in rows}
    days = (start + timedelta(days=offset) for offset in range((end - start).days + 1))
    return {day: counts.get(day, 0) for day in days}


def _warehouse():
    from airflow.models.connection import Connection

    from category_pipeline.k8s import WAREHOUSE_CONN_ID
    from category_pipeline.warehouse import Warehouse

    # The same Connection the load tasks used (JSON or URI form, or any secrets backend).
    return Warehouse.from_airflow_connection(WAREHOUSE_CONN_ID, Connection.get_connection_from_secrets(WAREHOUSE_CONN_ID))


def day_table(runs: list[dict], loaded: Mapping[date, int]) -> list[dict]:
    """One row per order date: the backfill run's state and the orders rows in the warehouse."""
    state = {run["order_date"]: run["state"] for run in runs}
    return [{"order_date": day.isoformat(), "run": state.get(day, "no run"), "orders_rows": rows}
            for day, rows in sorted(loaded.items())]


def run_laptop(repo: Path, category: str, start: date, end: date, timeout: float = DEFAULT_TIMEOUT) -> int:
    started = time.monotonic()
    dag_id = dag_id_of(category)
    date_window(start, end)  # a bad range fails before anything starts
    _prepare(repo)
    was_paused = _set_paused(dag_id, False)
    try:
        backfill_id = create_backfill(dag_id, start, end)
        if _scheduler_alive():
            print(f"backfill {backfill_id} of {dag_id}, {start}..{end}: run by the scheduler already up", flush=True)
            runner = contextlib.nullcontext()
        else:
            print(f"backfill {backfill_id} of {dag_id}, {start}..{end}: starting a scheduler for it", flush=True)
            runner = scheduler_for_backfill(Path(os.environ["AIRFLOW_HOME"]) / "backfill")
        with runner:
            runs = watch(backfill_id, dag_id, timeout=timeout)
    finally:
        if was_paused:
            _set_paused(dag_id, True)
    warehouse = _warehouse()
    name = dag_id.removeprefix("category_")
    rows = day_table(runs, orders_per_day(warehouse, name, start, end))
    print(f"\n{warehouse!r}, orders of {name} per order date:\n")
    print(format_table(rows, ("order_date", "run", "orders_rows")))
    failed = [run for run in runs if run["state"] != "success"]
    print(f"\n{len(runs) - len(failed)}/{len(runs)} backfill runs succeeded in {time.monotonic() - started:.1f} s")
    return 1 if failed or not runs else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", help="category name (home) or DAG id (category_home)")
    parser.add_argument("--from", dest="start", required=True, help="first order date, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="last order date, YYYY-MM-DD (included)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (default: .)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the backfill")
    args = parser.parse_args(argv)
    try:
        start, end = parse_day(args.start, "FROM"), parse_day(args.end, "TO")
        return run_laptop(args.repo.resolve(), args.category, start, end, timeout=args.timeout)
    except BackfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
