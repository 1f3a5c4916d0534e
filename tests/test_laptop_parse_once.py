"""`make run` parses the DAG folder once, not once per DAG run: Airflow 3.3's dag.test()
re-parses (and re-writes) the whole folder on every call, which made a laptop run grow with
the square of the number of categories (local_run.dag_bundle_parsed_once).

Real Airflow, real dag.test() runs in a fresh interpreter, on a throwaway DAG folder of
three DAGs and the tests' metadata database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

DAG_FILE = textwrap.dedent(
    """
    from datetime import datetime, timezone

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, task

    for name in ("first", "second", "third"):
        with DAG(f"parse_once_{name}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            @task
            def work():
                return 1

            EmptyOperator(task_id="start") >> work()
        globals()[name] = dag
    """
)

RUNS = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timezone

    from airflow.dag_processing import dagbag

    from category_pipeline.local_run import dag_bundle_parsed_once

    parses = []
    real_parse = dagbag.BundleDagBag

    def counted(*args, **kwargs):
        parses.append(1)
        return real_parse(*args, **kwargs)

    dagbag.BundleDagBag = counted  # before the context: it wraps what dag.test() would call
    bag = dagbag.DagBag(dag_folder=sys.argv[2])
    ids = sorted(i for i in bag.dag_ids if i.startswith("parse_once_"))
    def run_all():
        return [bag.get_dag(i).test(logical_date=datetime(2026, 4, 1, tzinfo=timezone.utc)).state for i in ids]
    if sys.argv[1] == "once":
        with dag_bundle_parsed_once():
            states = run_all()
    else:
        states = run_all()
    print(json.dumps({"parses": len(parses), "states": states, "restored": dagbag.BundleDagBag is counted}))
    """
)


@pytest.mark.parametrize("mode,parses", [("once", 1), ("plain", 3)], ids=["make run's loop", "plain dag.test()"])
def test_the_dag_folder_is_parsed_once_per_make_run(tmp_path, airflow_db, mode, parses):
    """Three DAG runs: one parse of the folder with the context manager; three without it
    (what Airflow does, so this test would notice the fix going stale)."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "parse_once.py").write_text(DAG_FILE)
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    done = subprocess.run([sys.executable, "-c", RUNS, mode, str(dags)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["states"] == ["success"] * 3
    assert result["parses"] == parses
    assert result["restored"]  # Airflow's own function is back after the loop
