"""Laptop mode: the same DAGs on Airflow's embedded defaults (SQLite, no cluster).

    python -m category_pipeline.local_run run [--date YYYY-MM-DD] [--staging s3]   # make run [STAGING=s3]
    python -m category_pipeline.local_run standalone [--port 8080] [--host 127.0.0.1] # make airflow [PORT=] [HOST=]

``--staging s3`` stages the datasets in object storage, as the cluster does: an S3 API on
127.0.0.1 for the run (moto's server, a dev dependency), bucket pipeline-staging, reached
through the Airflow connection ``object_store`` exactly as the task pods reach theirs.

Everything lives under ``.local/`` of the repository (git-ignored): AIRFLOW_HOME with
Airflow's SQLite database, the SQLite warehouse and the staged datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psutil  # an Airflow dependency


# svcs (a dependency of Airflow's execution API) imports fastapi.testclient, and Starlette
# warns there that it wants the `httpx2` package instead of `httpx`: nothing of ours uses the
# test client, and Airflow 3.3.2 pins neither. Silenced by its exact text, in this process
# (before Airflow is imported) and, through PYTHONWARNINGS, in every `airflow` process we start.
STARLETTE_HTTPX_WARNING = "Using `httpx` with `starlette.testclient` is deprecated"


# Airflow 3.3.2's DagRun.serialized_dag relationship (uselist=False) finds several rows when a
# DAG file has more than one serialized version (every rerun of `make run` after an edit):
# SQLAlchemy warns, and Airflow takes the first. Nothing of ours; silenced by its exact text.
SERIALIZED_DAG_WARNING = "Multiple rows returned with uselist=False for lazily-loaded attribute 'DagRun.serialized_dag'"


def quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=re.escape(STARLETTE_HTTPX_WARNING))
    warnings.filterwarnings("ignore", message=re.escape(SERIALIZED_DAG_WARNING))
    pythonwarnings = f"ignore:{STARLETTE_HTTPX_WARNING}"
    if pythonwarnings not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), pythonwarnings]))


def laptop_env(repo: Path, state: Path | None = None) -> dict[str, str]:
    """Airflow's embedded defaults on this checkout; all state under ``state`` (.local/)."""
    local = state or repo / ".local"
    return {
        "AIRFLOW_HOME": str(local / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Default parallelism makes `airflow standalone` take ~5 GiB; 4 is plenty here.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "False",
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(local / "warehouse.db")}),
        "PIPELINE_STAGING_URI": str(local / "staging"),
    }


def _apply_env(repo: Path) -> None:
    # Explicit settings from the user's shell win over the laptop defaults.
    for key, value in laptop_env(repo).items():
        os.environ.setdefault(key, value)
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)


def _migrate() -> None:
    result = subprocess.run(["airflow", "db", "migrate"], capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit("airflow db migrate failed")


STAGING_BUCKET = "pipeline-staging"
STAGING_CONN_ID = "object_store"


def _loopback_object_store():
    """An S3 API on 127.0.0.1 for this process (the DAG runs are in-process), with the staging
    bucket; the environment points staging at it through the connection `object_store`."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise SystemExit(f"--staging s3 needs moto and boto3 (the dev dependencies: make venv): {exc}") from exc
    import logging
    import socket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # Throwaway keys of a throwaway server: nothing real is behind them.
    keys = {"aws_access_key_id": "laptop", "aws_secret_access_key": "laptop-secret", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **keys).create_bucket(Bucket=STAGING_BUCKET)
    os.environ[f"AIRFLOW_CONN_{STAGING_CONN_ID.upper()}"] = json.dumps({
        "conn_type": "aws", "login": keys["aws_access_key_id"], "password": keys["aws_secret_access_key"],
        "extra": {"endpoint_url": endpoint, "region_name": keys["region_name"]},
    })
    os.environ["PIPELINE_STAGING_CONN_ID"] = STAGING_CONN_ID
    os.environ["PIPELINE_STAGING_URI"] = f"s3://{STAGING_BUCKET}/staging"
    print(f"staging: s3://{STAGING_BUCKET}/staging on a loopback S3 API at {endpoint}")
    return server


def run(repo: Path, day: date, staging: str = "local") -> int:
    # Keep the terminal for the result; task errors are still printed (level ERROR).
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    _apply_env(repo)
    started = time.monotonic()
    object_store = _loopback_object_store() if staging == "s3" else None
    try:
        return _run_all(day, started)
    finally:
        if object_store is not None:
            object_store.stop()


def _run_all(day: date, started: float) -> int:
    _migrate()
    # Airflow reads its configuration on import: import only once the env is set.
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.connection import Connection

    from category_pipeline.k8s import WAREHOUSE_CONN_ID
    from category_pipeline.report import daily_report, format_table
    from category_pipeline.warehouse import Warehouse

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    for path, error in sorted(bag.import_errors.items()):
        print(f"IMPORT ERROR in {Path(path).name}:\n{error}", file=sys.stderr)
    dag_ids = sorted(d for d in bag.dag_ids if d.startswith("category_")) + ["advanced_data_pipeline"]
    logical_date = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    with task_logs_to_files(), dag_bundle_parsed_once():
        failed = _test_dags(bag, dag_ids, logical_date)

    # The same Connection the load tasks used (JSON or URI form, or any secrets backend).
    connection = Connection.get_connection_from_secrets(WAREHOUSE_CONN_ID)
    warehouse = Warehouse.from_airflow_connection(WAREHOUSE_CONN_ID, connection)
    # The repr hides a password; the target itself may hold one.
    print(f"\n{warehouse!r}, order date {day}:\n")
    print(format_table(daily_report(warehouse, day)))
    print(f"\n{len(dag_ids) - len(failed)}/{len(dag_ids)} DAG runs succeeded in {time.monotonic() - started:.1f} s")
    if bag.import_errors:
        print(f"{len(bag.import_errors)} DAG file(s) failed to import (see above)", file=sys.stderr)
    return 1 if failed or bag.import_errors else 0


def _test_dags(bag, dag_ids: list[str], logical_date: datetime) -> list[str]:
    """One dag.test() run per DAG; the ids of those that did not succeed."""
    failed = []
    for dag_id in dag_ids:
        dag = bag.get_dag(dag_id)
        if dag is None:
            failed.append(dag_id)
            print(f"{dag_id}: not loaded", file=sys.stderr)
            continue
        t0 = time.monotonic()
        started_at = datetime.now(timezone.utc)
        dag_run = dag.test(logical_date=logical_date)
        _record_real_start(dag_run, started_at)
        state = str(dag_run.state)
        print(f"{dag_id:<28} {state:<8} {time.monotonic() - t0:6.1f} s")
        if state != "success":
            failed.append(dag_id)
    return failed


@contextlib.contextmanager
def dag_bundle_parsed_once():
    """Each dag.test() parses the DAG folder and writes its DAGs to the metadata DB once per
    `make run`, not once per DAG run.

    dag.test() (Airflow 3.3.2) parses the whole bundle and syncs every DAG of it on each call
    (apache/airflow#64884: so that sibling DAGs exist): with N categories, N runs each parse
    and write N+ DAGs, and a run's overhead grows with N (100 categories: a median run of
    2.6 s instead of 0.7 s, 85% of it in that sync). The files do not change while `make run`
    runs: the first call parses and syncs as Airflow does; later calls get the same bag,
    already written (the sync is idempotent per DAG, it only costs)."""
    from airflow.dag_processing import dagbag

    parse, sync = dagbag.BundleDagBag, dagbag.sync_bag_to_db
    parsed: dict[str, object] = {}
    synced: list = []  # the bags already written (kept alive here: compared by identity)

    def parse_once(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = parse(*args, **kwargs)
        return parsed[key]

    def sync_once(bag, *args, **kwargs):
        if not any(bag is done for done in synced):
            sync(bag, *args, **kwargs)
            synced.append(bag)

    # dag.test() imports both from the module on each call: patching the module reaches it.
    dagbag.BundleDagBag, dagbag.sync_bag_to_db = parse_once, sync_once
    try:
        yield
    finally:
        dagbag.BundleDagBag, dagbag.sync_bag_to_db = parse, sync


@contextlib.contextmanager
def task_logs_to_files():
    """Each task that dag.test() runs writes its log where the UI's log reader looks for it.

    dag.test() (Airflow 3.3.2) runs each task in-process through run_task_in_process, whose
    task log goes to the console only; a worker's supervisor writes it as JSON lines of
    structlog events to {base_log_folder}/{log_filename_template}. While a task runs, its
    events go to that file too: the stdlib loggers' (ours: the loader's "rows loaded") from
    INFO, Airflow's structlog events (the task runner's, e.g. a task's failure) at the level
    the console shows. The console keeps its level."""
    import logging

    import structlog

    from airflow.sdk.execution_time import supervisor

    in_process = supervisor.run_task_in_process
    current: list = []  # the running task's file logger: dag.test() runs one task at a time

    def tee(_logger, method_name, event_dict):
        if current:
            level = {"exception": logging.ERROR}.get(method_name) or logging.getLevelNamesMapping().get(
                method_name.upper(), logging.INFO)
            current[0].log(level, **dict(event_dict))
        return event_dict

    def run_task_with_log_file(ti, task, client=None):
        with _task_log_file(ti) as file_logger:
            current.append(file_logger)
            try:
                return in_process(ti=ti, task=task, client=client)
            finally:
                current.clear()

    processors = structlog.get_config()["processors"]
    processors.insert(0, tee)  # in place: loggers already bound share this list
    supervisor.run_task_in_process = run_task_with_log_file
    try:
        yield
    finally:
        supervisor.run_task_in_process = in_process
        processors.remove(tee)


@contextlib.contextmanager
def _task_log_file(ti):
    """A structlog logger writing the worker's JSON lines to ``ti``'s log file, and a stdlib
    handler on the root logger feeding it while the block runs."""
    import logging

    import structlog

    from airflow.sdk.log import init_log_file, logging_processors
    from airflow.utils.helpers import log_filename_template_renderer

    path = init_log_file(log_filename_template_renderer()(ti=ti))
    with path.open("ab") as output:
        file_logger = structlog.wrap_logger(
            structlog.BytesLogger(output), processors=list(logging_processors(json_output=True)),
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG), logger_name="task")

        class ToFile(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                extra = {"exc_info": record.exc_info} if record.exc_info else {}
                file_logger.log(record.levelno, record.getMessage(), logger=record.name, **extra)

        root = logging.getLogger()
        handler, level = ToFile(logging.INFO), root.level
        root.addHandler(handler)
        # The console handler keeps its own level; the file gets INFO, as on a worker.
        root.setLevel(min(level, logging.INFO))
        try:
            yield file_logger
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


# What `airflow standalone` starts (scheduler, API server, DAG processor, triggerer, their
# workers and log servers) gets this long to stop after a graceful signal, then SIGKILL: all
# of it is gone within the 10 s a user (or a service manager) waits.
GRACE_SECONDS = 8.0
TERMINATE_AFTER_SECONDS = 2.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _record_real_start(dag_run, started_at: datetime) -> None:
    """dag.test() (Airflow 3.3.2) records the run as started at its logical date, so the UI
    shows the days since then as the run's duration: record when it really started."""
    from sqlalchemy import update

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.id == dag_run.id).values(start_date=started_at))


def standalone_env(port: int, host: str) -> dict[str, str]:
    """Settings that put the API server, the UI and task execution on ``host``:``port``.

    Tasks reach the execution API at [core] execution_api_server_url; left unset it is derived
    from [api] base_url or else http://localhost:8080, so a port set in [api] port alone gives
    a UI on that port and tasks failing with "Connection refused" to 8080."""
    if not 0 < port < 65536:
        raise SystemExit(f"--port {port}: not a TCP port (1-65535)")
    # Listening on every interface still serves this machine on loopback.
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base_url = f"http://{local_host}:{port}"
    return {
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
    }


def standalone(repo: Path, port: int = 8080, host: str = "127.0.0.1") -> int:
    """`airflow standalone` under a supervisor that stops all of it on SIGTERM, SIGHUP or SIGINT.

    `airflow standalone` stops its components only on SIGINT (KeyboardInterrupt), and a
    background job of a shell starts with SIGINT ignored: killed any other way it leaves the
    scheduler, API server, DAG processor and triggerer running and holding their ports."""
    _apply_env(repo)
    env = {**os.environ, **standalone_env(port, host)}
    home = Path(env["AIRFLOW_HOME"])
    print(
        f"Airflow UI: {env['AIRFLOW__API__BASE_URL']}  (listening on {host}:{port}; "
        "Ctrl-C, SIGTERM or SIGHUP stops everything)\n"
        f"Log in as 'admin'; the password is in {home / 'simple_auth_manager_passwords.json.generated'}\n"
        "(written on first start, and also printed in the startup output below).\n"
        "DAGs start paused: unpause one with its toggle in the UI, or `airflow dags unpause DAG_ID`.",
        flush=True,
    )
    return supervise(["airflow", "standalone"], env)


def supervise(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` in a process group of its own until it exits or we get a stop signal;
    then stop it and every process it started (see :func:`stop_tree`)."""
    received: list[int] = []

    def on_stop_signal(signum, _frame):
        received.append(signum)

    # Set explicitly, SIGINT included: a shell starts a background job with SIGINT ignored,
    # and Python keeps an inherited "ignore". Handled (not ignored) signals are reset to the
    # default in the child on exec, so `airflow standalone` gets its KeyboardInterrupt back.
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_stop_signal)
    _become_subreaper()
    # Its own process group: a Ctrl-C on the terminal reaches us, not the components; we
    # stop them in order instead of all at once.
    child = subprocess.Popen(command, env=env, process_group=0)
    while not received and child.poll() is None:
        time.sleep(0.2)
    if received:
        print(f"\nlocal_run: {signal.Signals(received[0]).name}: stopping Airflow ...", file=sys.stderr, flush=True)
    stop_tree(child)
    return 0 if received else child.returncode


def _become_subreaper() -> None:
    """On Linux, orphans of our descendants (a component whose parent died first) are
    re-parented to us instead of init, so stop_tree still finds them; and the death of our
    parent (make) stops us."""
    if sys.platform != "linux":
        return
    import ctypes

    PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        # GNU make does not pass a SIGTERM on to its recipe: `kill <make pid>` ends make, and
        # its death reaches us as a SIGTERM.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _descendants(child: subprocess.Popen) -> dict[int, psutil.Process]:
    """Every live process we started: our descendants (orphans included, see
    _become_subreaper) and whatever still runs in the child's process group."""
    found = {}
    with contextlib.suppress(psutil.Error):
        for process in psutil.Process().children(recursive=True):
            found[process.pid] = process
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile
            if process.pid not in found and os.getpgid(process.pid) == child.pid:
                found[process.pid] = process
    return {pid: p for pid, p in found.items() if _alive(p)}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(child: subprocess.Popen) -> None:
    child.poll()
    for process in psutil.Process().children():
        if process.pid != child.pid:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(process.pid, os.WNOHANG)


def stop_tree(child: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """Stop ``child`` and everything it started, in three steps:

    1. SIGINT to `airflow standalone` only: its own clean stop, which terminates each
       component (each then stops its workers and log server) and relays their last lines.
       Signalling every process at once is worse: a LocalExecutor worker killed before the
       scheduler has told it to stop leaves the scheduler waiting for it.
    2. SIGTERM to whatever still runs after TERMINATE_AFTER_SECONDS: the components' own
       children are gone within about a second, but the components themselves (Airflow
       3.3.2) exit only on a second SIGTERM.
    3. SIGKILL to whatever still runs after ``grace``.
    Nothing we started survives us, and no port stays held."""
    started = time.monotonic()
    processes = _descendants(child)
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGINT)
    terminated = False
    while processes and time.monotonic() - started < grace:
        time.sleep(0.2)
        _reap(child)
        processes.update(_descendants(child))
        processes = {pid: p for pid, p in processes.items() if _alive(p)}
        if not terminated and time.monotonic() - started >= TERMINATE_AFTER_SECONDS:
            terminated = True
            for process in processes.values():
                with contextlib.suppress(psutil.Error):
                    process.terminate()
    names = []
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            names.append(f"{process.pid} {' '.join(process.cmdline()[:3])}")
            process.kill()
    if names:
        print(f"local_run: killed what still ran after {grace:.0f} s: {'; '.join(names)}", file=sys.stderr, flush=True)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=1)
    _reap(child)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "standalone"])
    parser.add_argument("--date", type=date.fromisoformat, help="logical date (default: yesterday, UTC)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (default: .)")
    parser.add_argument("--staging", choices=["local", "s3"], default="local",
                        help="where datasets are staged: .local/staging (default) or a loopback S3 API")
    parser.add_argument("--port", type=int, default=8080, help="standalone: UI, API and execution API port (8080)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="standalone: the address to listen on (127.0.0.1; 0.0.0.0 for every interface)")
    args = parser.parse_args(argv)
    quiet_known_warnings()
    repo = args.repo.resolve()
    if args.command == "standalone":
        return standalone(repo, port=args.port, host=args.host)
    return run(repo, args.date or (datetime.now(timezone.utc).date() - timedelta(days=1)), staging=args.staging)


if __name__ == "__main__":
    sys.exit(main())
