"""`make run WAREHOUSE=postgresql://...`: the laptop runner end to end against a real
PostgreSQL (the throwaway server), report included, with no password in its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def test_make_run_against_postgres_prints_the_report_and_no_password(new_postgres_database, tmp_path):
    # The throwaway server trusts loopback, so any password connects: one that must not leak.
    password = "NotToBePrinted0123456789"
    warehouse = new_postgres_database("laptop").replace("@", f":{password}@", 1)
    env = {
        **os.environ,
        # The laptop state in a folder of this test, not the developer's .local/.
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "PIPELINE_STAGING_URI": str(tmp_path / "staging"),
    }
    venv = Path(sys.prefix)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "run", "DATE=2026-11-20", f"WAREHOUSE={warehouse}",
         f"VENV={venv}", "-o", f"{venv}/.installed"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "4/4 DAG runs succeeded" in output
    assert "Warehouse(postgres, postgresql://" in output
    assert password not in output
    with psycopg.connect(warehouse) as connection:
        per_category = dict(connection.execute(
            "SELECT category, COUNT(*) FROM orders WHERE order_date = '2026-11-20' GROUP BY category").fetchall())
    assert set(per_category) == {"electronics", "fashion", "home"}
    for category, rows in per_category.items():
        line = next(line for line in output.splitlines() if line.startswith(category + " "))
        assert f"{rows:,}" in line  # the report's order_rows column, read back from PostgreSQL


def _make_run(tmp_path: Path, name: str, *make_args: str) -> str:
    state = tmp_path / name
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(state / "airflow"),
        "PIPELINE_STAGING_URI": str(state / "staging"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": f'{{"conn_type": "sqlite", "host": "{state / "warehouse.db"}"}}',
    }
    venv = Path(sys.prefix)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "run", "DATE=2026-11-20", *make_args,
         f"VENV={venv}", "-o", f"{venv}/.installed"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "4/4 DAG runs succeeded" in output
    return output


def _report(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("category "))
    return lines[start:start + 5]


def test_make_run_with_staging_on_s3_gives_the_same_report(tmp_path):
    """`make run STAGING=s3`: every dataset staged on a loopback S3 API (moto's server,
    started by the runner), none on disk, and the warehouse gets what local staging gives."""
    on_s3 = _make_run(tmp_path, "s3", "STAGING=s3")
    assert "staging: s3://pipeline-staging/staging on a loopback S3 API" in on_s3
    assert not (tmp_path / "s3" / "staging").exists(), "datasets were staged on local disk"
    on_disk = _make_run(tmp_path, "disk")
    assert any((tmp_path / "disk" / "staging").rglob("*.parquet"))
    assert _report(on_s3) == _report(on_disk)
