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
