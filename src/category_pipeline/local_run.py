"""Laptop mode: the same DAGs on Airflow's embedded defaults (SQLite, no cluster).

    python -m category_pipeline.local_run run [--date YYYY-MM-DD] [--staging s3]   # make run [STAGING=s3]
    python -m category_pipeline.local_run standalone                                # make airflow

``--staging s3`` stages the datasets in object storage, as the cluster does: an S3 API on
127.0.0.1 for the run (moto's server, a dev dependency), bucket pipeline-staging, reached
through the Airflow connection ``object_store`` exactly as the task pods reach theirs.

Everything lives under ``.local/`` of the repository (git-ignored): AIRFLOW_HOME with
Airflow's SQLite database, the SQLite warehouse and the staged datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path


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
    failed = []
    for dag_id in dag_ids:
        dag = bag.get_dag(dag_id)
        if dag is None:
            failed.append(dag_id)
            print(f"{dag_id}: not loaded", file=sys.stderr)
            continue
        t0 = time.monotonic()
        dag_run = dag.test(logical_date=logical_date)
        state = str(dag_run.state)
        print(f"{dag_id:<28} {state:<8} {time.monotonic() - t0:6.1f} s")
        if state != "success":
            failed.append(dag_id)

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


def standalone(repo: Path) -> None:
    _apply_env(repo)
    home = Path(os.environ["AIRFLOW_HOME"])
    print(
        "Airflow UI: http://localhost:8080  (Ctrl-C stops it; it stops cleanly only on SIGINT)\n"
        f"Log in as 'admin'; the password is in {home / 'simple_auth_manager_passwords.json.generated'}\n"
        "(written on first start, and also printed in the startup output below).",
        flush=True,
    )
    os.execvp("airflow", ["airflow", "standalone"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "standalone"])
    parser.add_argument("--date", type=date.fromisoformat, help="logical date (default: yesterday, UTC)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (default: .)")
    parser.add_argument("--staging", choices=["local", "s3"], default="local",
                        help="where datasets are staged: .local/staging (default) or a loopback S3 API")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    if args.command == "standalone":
        standalone(repo)
        return 0
    return run(repo, args.date or (datetime.now(timezone.utc).date() - timedelta(days=1)), staging=args.staging)


if __name__ == "__main__":
    sys.exit(main())
