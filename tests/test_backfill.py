"""`make backfill`: Airflow 3's backfill of one category over a range of order dates.

Laptop mode end to end: `make backfill CATEGORY=home FROM=2026-11-01 TO=2026-11-03` on a
throwaway AIRFLOW_HOME and SQLite warehouse, twice. A real Backfill is created by
`airflow backfill create`, a real scheduler (started for it) runs its DAG runs, progress is
printed, the per-day table equals the warehouse's counts, and the rerun replaces the days'
partitions: the same counts, not twice as many.

The cluster client (scripts/platform_api.py) against a real `airflow api-server` on that same
metadata database: it lists the laptop's backfills and reads what each run's load reported
(the rerun's loads replaced exactly the first loads' rows), and creates a backfill through
POST /api/v2/backfills. Its runs stay queued there (no scheduler runs them: that part is the
laptop run's above, through the same Backfill model).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
from datetime import date
from pathlib import Path

import pytest

from category_pipeline import backfill
from tests.support.airflow_server import ApiServer

REPO = Path(__file__).resolve().parent.parent
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


# --- the shared helpers --------------------------------------------------------------------


def test_the_window_covers_whole_order_days():
    # A "0 3 * * *" category has its logical dates at 03:00: the window must reach past it.
    assert backfill.date_window(date(2026, 11, 1), date(2026, 11, 3)) == (
        "2026-11-01T00:00:00+00:00", "2026-11-03T23:59:59+00:00")


def test_bad_ranges_are_refused_naming_the_value():
    with pytest.raises(backfill.BackfillError, match=r"FROM=2026-11-05 is after TO=2026-11-01"):
        backfill.date_window(date(2026, 11, 5), date(2026, 11, 1))
    with pytest.raises(backfill.BackfillError, match=r"TO='2026-13-01' is not a date"):
        backfill.parse_day("2026-13-01", "TO")


def test_progress_line_counts_done_and_failed_runs():
    line = backfill.progress_line("category_home", {"success": 2, "failed": 1, "running": 1, "queued": 3}, 7)
    assert line == "category_home: 3/7 runs done (2 success, 1 failed), 3 queued, 1 running"


def test_make_backfill_refuses_a_bad_range_before_starting_anything(tmp_path):
    result = _make_backfill(tmp_path, "home", "2026-11-05", "2026-11-01", check=False)
    assert result.returncode != 0
    assert "error: FROM=2026-11-05 is after TO=2026-11-01" in result.stdout + result.stderr
    assert not (tmp_path / "airflow").exists()


# --- laptop mode, end to end -----------------------------------------------------------------


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {
        **env,
        "AIRFLOW_HOME": str(state / "airflow"),
        "PIPELINE_STAGING_URI": str(state / "staging"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(state / "warehouse.db")}),
    }


def _make_backfill(state: Path, category: str, start: str, end: str, check: bool = True):
    import subprocess

    venv = Path(sys.prefix)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "backfill", f"CATEGORY={category}", f"FROM={start}",
         f"TO={end}", f"VENV={venv}", "-o", f"{venv}/.installed"],
        capture_output=True, text=True, env=_env(state), timeout=900,
    )
    if check:
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def _table(output: str) -> dict[str, tuple[str, int]]:
    """The per-day table printed at the end: order date -> (run state, orders rows)."""
    rows = re.findall(r"^(\d{4}-\d\d-\d\d)\s+(\w+)\s+([\d,]+)$", output, re.MULTILINE)
    return {day: (state, int(count.replace(",", ""))) for day, state, count in rows}


def _warehouse_counts(state: Path) -> dict[str, int]:
    with sqlite3.connect(state / "warehouse.db") as connection:
        return dict(connection.execute(
            "SELECT order_date, COUNT(*) FROM orders WHERE category = 'home' GROUP BY order_date").fetchall())


@pytest.fixture(scope="module")
def laptop(tmp_path_factory):
    """The state after `make backfill` ran twice over the same three days; both outputs."""
    state = tmp_path_factory.mktemp("backfill-laptop")
    first = _make_backfill(state, "home", DAYS[0], DAYS[-1]).stdout
    counts_after_first = _warehouse_counts(state)
    second = _make_backfill(state, "home", DAYS[0], DAYS[-1]).stdout
    return {"state": state, "first": first, "second": second, "counts_after_first": counts_after_first}


def test_laptop_backfill_shows_progress_and_the_rows_of_each_day(laptop):
    output = laptop["first"]
    assert "backfill 1 of category_home, 2026-11-01..2026-11-03: starting a scheduler for it" in output
    progress = [line for line in output.splitlines() if line.startswith("category_home: ")]
    assert progress[0].startswith("category_home: 0/3 runs done"), progress
    assert progress[-1] == "category_home: 3/3 runs done (3 success, 0 failed)", progress
    assert "3/3 backfill runs succeeded" in output

    table = _table(output)
    counts = laptop["counts_after_first"]
    assert list(table) == DAYS
    assert all(state == "success" for state, _ in table.values())
    assert {day: rows for day, (_, rows) in table.items()} == counts
    assert all(rows > 0 for rows in counts.values())


def test_the_backfill_is_airflows_own_and_leaves_the_dag_as_it_was(laptop):
    with sqlite3.connect(laptop["state"] / "airflow" / "airflow.db") as db:
        backfills = db.execute("SELECT id, dag_id, completed_at FROM backfill ORDER BY id").fetchall()
        runs = db.execute("SELECT date(logical_date), run_type, state FROM dag_run WHERE dag_id = 'category_home' "
                          "ORDER BY logical_date").fetchall()
        paused = db.execute("SELECT is_paused FROM dag WHERE dag_id = 'category_home'").fetchone()[0]
    assert [(b[0], b[1]) for b in backfills] == [(1, "category_home"), (2, "category_home")]
    assert all(b[2] is not None for b in backfills), "a backfill was left incomplete"
    # One run per day, re-used by the rerun; and no scheduled run besides (use_job_schedule off).
    assert runs == [(day, "backfill", "success") for day in DAYS]
    assert paused == 1  # DAGs start paused; the backfill unpaused it only for its duration


def test_rerun_replaces_the_days_instead_of_adding_to_them(laptop):
    assert "backfill 2 of category_home" in laptop["second"]
    assert _table(laptop["second"]) == _table(laptop["first"])
    assert _warehouse_counts(laptop["state"]) == laptop["counts_after_first"]


# --- the cluster client against a real api-server ------------------------------------------------


@pytest.fixture(scope="module")
def api(laptop, tmp_path_factory):
    """scripts/platform_api.py's client, logged in to a real `airflow api-server` on the
    laptop run's metadata database."""
    sys.path.insert(0, str(REPO / "scripts"))
    import platform_api

    state = laptop["state"]
    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({"admin": "backfill-test-password"}))
    env = {
        **_env(state),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    server = ApiServer(argv=["airflow", "api-server"], env=env, cwd=state, log=state / "api-server.log").start()
    try:
        yield platform_api.AirflowApi(server.base, "admin", "backfill-test-password"), platform_api
    finally:
        server.stop()


def test_cluster_client_reads_each_days_load_from_the_api(api, laptop):
    client, _ = api
    backfills = client.backfills("category_home")
    assert [b["id"] for b in backfills] == [1, 2]
    assert all(b["completed_at"] for b in backfills)

    runs = client.backfill_runs(client.backfill(2))
    assert [(run["order_date"], run["state"]) for run in runs] == [(day, "success") for day in DAYS]
    table = client.rows_loaded("category_home", runs)
    counts = laptop["counts_after_first"]
    # The rerun's loads: the day's rows loaded, and exactly the first backfill's rows replaced.
    assert [(row["order_date"], row["orders_loaded"], row["replaced"]) for row in table] == [
        (day, counts[day], counts[day]) for day in DAYS]


def test_cluster_client_creates_a_backfill_through_the_rest_api(api, capsys):
    client, platform_api = api
    assert platform_api.run_backfill(client, "category_home", "2026-11-04", "2026-11-05", wait=False) == 0
    assert re.search(r"backfill (\d+) of category_home, 2026-11-04..2026-11-05: created", capsys.readouterr().out)

    (created,) = [b for b in client.backfills("category_home") if b["completed_at"] is None]
    assert created["from_date"].startswith("2026-11-04T00:00:00")
    assert created["to_date"].startswith("2026-11-05T23:59:59")
    assert created["reprocess_behavior"] == "completed"
    runs = client.backfill_runs(created)
    assert [(run["order_date"], run["state"]) for run in runs] == [("2026-11-04", "queued"), ("2026-11-05", "queued")]
    # Queued runs of a paused DAG never start: the client unpaused it.
    assert client.get("/api/v2/dags/category_home")["is_paused"] is False

    # Airflow allows one active backfill per DAG: a second is refused, saying so.
    with pytest.raises(platform_api.shared.BackfillError, match=r"refused \(409\).*already a running backfill for dag category_home"):
        client.create_backfill("category_home", "2026-11-06", "2026-11-06")
