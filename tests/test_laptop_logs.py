"""`make run` runs (dag.test(), each task in-process) leave their task logs where Airflow's
log reader looks: a real `airflow api-server` on the same AIRFLOW_HOME serves a category
task's log, the loader's lines included, through the REST log endpoint.

Real runner, real api-server (SimpleAuthManager, all users admin), a throwaway AIRFLOW_HOME
and SQLite warehouse; no mock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from tests.support.airflow_server import ApiServer, request

REPO = Path(__file__).resolve().parent.parent
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def test_make_run_task_log_is_served_by_the_api(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "PIPELINE_STAGING_URI": str(tmp_path / "staging"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}),
    }
    result = subprocess.run(
        [sys.executable, "-m", "category_pipeline.local_run", "run", "--date", "2026-11-20", "--repo", str(REPO)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = next(line.split()[6] for line in result.stdout.splitlines() if line.startswith("home "))

    # The api-server reads the same AIRFLOW_HOME (SQLite database and logs/) as `make airflow`.
    from category_pipeline.local_run import laptop_env
    server_env = {**laptop_env(REPO, tmp_path), **env,
                  "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                  "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    server = ApiServer(argv=["airflow", "api-server"], env=server_env, cwd=tmp_path, log=tmp_path / "api-server.log")
    server.start()
    try:
        status, body = request("GET", f"{server.base}/auth/token")
        assert status in (200, 201), body
        token = body["access_token"]
        status, runs = request("GET", f"{server.base}/api/v2/dags/category_home/dagRuns", token=token)
        assert status == 200 and runs["total_entries"] == 1, runs
        run_id = quote(runs["dag_runs"][0]["dag_run_id"], safe="")
        status, log = request("GET", f"{server.base}/api/v2/dags/category_home/dagRuns/{run_id}"
                              f"/taskInstances/load/logs/1?full_content=true", token=token)
    finally:
        server.stop()
    assert status == 200, log
    events = [entry.get("event", "") for entry in log["content"] if isinstance(entry, dict)]
    assert any(event.startswith(f"orders: {rows.replace(',', '')} rows loaded") for event in events), \
        json.dumps(log["content"], indent=1)[-3000:]
    assert not any("Log file not found" in event or "Could not read served logs" in event for event in events)
