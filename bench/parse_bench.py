"""DAG parse cost: the generated category DAGs vs the seed's plain pattern, at N categories.

The seed pattern (the original dynamic_dag_generator.py, ported to Airflow 3): a globals()
loop making start -> process -> end per category from a hard-coded list. The project's
file builds, per validated categories.yaml entry, start -> extract -> process.validate ->
process.compute_metrics -> load -> end with pod overrides. Measured per task, since the
project's DAGs have twice the tasks:

- DagBag parse: a fresh interpreter times DagBag(folder) after importing what Airflow's DAG
  processor pre-imports (the airflow.* modules a DAG file names);
- `airflow dags reserialize`: the whole CLI (parse + serialize + write to the metadata DB),
  net of the same command on an empty folder (interpreter and Airflow start-up).

    python bench/parse_bench.py [--sizes 10 100 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, measure, report, table  # noqa: E402

GOAL = 1.5  # project time per task <= 1.5x the seed pattern's

SEED_TEMPLATE = '''"""The seed's dynamic DAG pattern, ported to Airflow 3 (benchmark baseline)."""
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

CATEGORIES = {categories!r}


def process(category):
    print(f"processing {{category}}")


for category in CATEGORIES:
    with DAG(
        dag_id=f"seed_{{category}}",
        schedule="@daily",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args={{"owner": "data-platform", "retries": 2}},
    ) as dag:
        start = EmptyOperator(task_id="start")
        work = PythonOperator(task_id="process", python_callable=process, op_kwargs={{"category": category}})
        end = EmptyOperator(task_id="end")
        start >> work >> end
    globals()[dag.dag_id] = dag
'''

# As Airflow's DAG processor does (parsing_pre_import_modules, on by default): the airflow.*
# modules a DAG file names are imported once in the long-lived parent, before each parse.
PARSE_PROBE = """
import importlib, json, pathlib, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports
for path in pathlib.Path(sys.argv[1]).glob("*.py"):
    for module in iter_airflow_imports(str(path)):
        importlib.import_module(module)
t = time.perf_counter()
bag = DagBag(sys.argv[1], safe_mode=True)
seconds = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": seconds, "dags": len(bag.dags), "tasks": sum(len(d.tasks) for d in bag.dags.values())}))
"""


def _names(n: int) -> list[str]:
    return [f"cat{i:04d}" for i in range(n)]


def make_project_folder(root: Path, n: int) -> Path:
    folder = root / f"project-{n}"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "category_dags.py", folder)
    config = yaml.safe_load((REPO / "dags" / "categories.yaml").read_text())
    config["categories"] = [{"name": name} for name in _names(n)]
    (folder / "categories.yaml").write_text(yaml.safe_dump(config))
    return folder


def make_seed_folder(root: Path, n: int) -> Path:
    folder = root / f"seed-{n}"
    folder.mkdir()
    (folder / "seed_dags.py").write_text(SEED_TEMPLATE.format(categories=_names(n)))
    return folder


def airflow_env(home: Path, dags: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        "PYTHONPATH": str(REPO / "plugins"),
    }


def parse_seconds(home: Path, folder: Path) -> tuple[float, int]:
    result = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(folder)],
        env=airflow_env(home, folder), capture_output=True, text=True, check=True,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return data["seconds"], data["tasks"]


def reserialize_seconds(home: Path, folder: Path, template_db: Path) -> float:
    shutil.copy(template_db, home / "airflow.db")  # the same migrated, empty metadata DB each time
    return measure(["airflow", "dags", "reserialize"], env=airflow_env(home, folder)).seconds


# What the profile showed where the goal is missed (fixed costs at small N), kept with the verdict.
WHY_MISSED = (
    "Why: fixed costs, not per-task ones. The project's file validates its YAML with pydantic "
    "and builds Kubernetes pod overrides; importing the config module and the first models is "
    "~10 ms, which at 10 categories is most of the difference. For `reserialize`, any DAG with "
    "a `pod_override` makes Airflow import the Kubernetes client and the provider's "
    "`pod_generator` (~0.5-0.9 s) to serialize it; Airflow's DAG processor pre-imports them "
    "in its parent (the DAG file names them: `parsing_pre_import_modules`), the CLI does not. "
    "Done to get here: one shared Kubernetes client configuration (1000 categories: 4.6 s -> "
    "1.9 s), data-step imports inside the tasks, libyaml, one Secret env per parse, "
    "pre-importable Airflow modules."
)


def _marginal(rows: list[list], sizes: list[int]) -> dict[str, float]:
    if len(sizes) < 2:
        return {}
    small, large = sorted(sizes)[-2:]
    by = {(r[0], r[1]): r for r in rows if r[1] in ("seed", "project")}
    result = {}
    for column, label in ((3, "parse"), (5, "reserialize")):
        slope = {
            kind: (by[(large, kind)][column] - by[(small, kind)][column]) / (by[(large, kind)][2] - by[(small, kind)][2])
            for kind in ("seed", "project")
        }
        result[label] = slope["project"] / slope["seed"] if slope["seed"] > 0 else float("inf")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="parse-bench-"))
    home = root / "home"
    home.mkdir()
    empty = root / "empty"
    empty.mkdir()
    subprocess.run(["airflow", "db", "migrate"], env=airflow_env(home, empty), check=True, capture_output=True)
    template_db = root / "migrated.db"
    shutil.copy(home / "airflow.db", template_db)
    startup = statistics.median(reserialize_seconds(home, empty, template_db) for _ in range(args.repeat))

    rows, worst = [], 0.0
    try:
        for n in args.sizes:
            folders = {"project": make_project_folder(root, n), "seed": make_seed_folder(root, n)}
            per_task = {}
            for label in ("seed", "project"):  # interleaved repeats spread the machine's noise
                parses, tasks = [], 0
                reserializes = []
                for _ in range(args.repeat):
                    seconds, tasks = parse_seconds(home, folders[label])
                    parses.append(seconds)
                    reserializes.append(reserialize_seconds(home, folders[label], template_db) - startup)
                parse, reserialize = statistics.median(parses), max(statistics.median(reserializes), 0.0)
                per_task[label] = (parse / tasks * 1000, reserialize / tasks * 1000)
                rows.append([n, label, tasks, parse, per_task[label][0], reserialize, per_task[label][1]])
            parse_ratio = per_task["project"][0] / per_task["seed"][0]
            worst = max(worst, parse_ratio)
            if per_task["seed"][1] > 0:
                reserialize_ratio = per_task["project"][1] / per_task["seed"][1]
                worst = max(worst, reserialize_ratio)
                reserialize_cell = f"**{reserialize_ratio:.2f}x**"
            else:  # the seed's net time is lost in the noise of the command's start-up
                reserialize_cell = "n/a (seed within start-up noise)"
            rows.append([n, "**ratio project/seed**", "", "", f"**{parse_ratio:.2f}x**", "", reserialize_cell])
            print(rows[-3:], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    # The cost of one more task: the slope between the two largest sizes, free of the fixed
    # start-up costs (module imports) that dominate at small N.
    marginal = _marginal(rows, args.sizes)
    worst_marginal = max(marginal.values()) if marginal else worst
    met = worst <= GOAL
    verdict = (
        f"goal met: at most {worst:.2f}x the seed pattern per task (goal <= {GOAL}x)"
        if met
        else f"goal missed at some sizes: up to {worst:.2f}x the seed pattern per task (goal <= {GOAL}x); "
        f"per additional task (slope between the two largest sizes) {worst_marginal:.2f}x"
    )
    body = (
        f"Goal: per task, <= {GOAL}x the seed's plain pattern. Median of {args.repeat} runs each; "
        f"`airflow dags reserialize` is net of its start-up on an empty folder ({startup:.2f} s).\n\n"
        + table(
            ["categories", "DAG file", "tasks", "DagBag parse s", "parse ms/task", "reserialize s (net)", "reserialize ms/task"],
            rows,
        )
        + "\n\nPer additional task (slope between the two largest sizes), project/seed: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in marginal.items())
        + f"\n\n**Verdict:** {verdict}.\n"
        + ("" if met else "\n" + WHY_MISSED + "\n")
    )
    report("parse", "DAG parse: generated category DAGs vs the seed pattern", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
