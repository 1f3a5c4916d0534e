"""Cost of a category run on Kubernetes: an ESTIMATE ON PAPER (no cluster here), not a measurement.

Every input that can be read or measured here is, and the rest is an assumption listed in a table:

- the task pods and their requests/limits: the pods Airflow itself generates
  (`airflow kubernetes generate-dag-yaml`, tests/support/pod_template.generate_pods, exactly as
  tests/test_pod_contract.py gets them) from the official chart's pod template rendered with
  values.yaml and the pod overrides of src/category_pipeline/k8s.py;
- which tasks become pods: values.yaml's single KubernetesExecutor runs every task the
  scheduler sends to an executor; an EmptyOperator without callbacks/inlets/outlets never is
  (Airflow's own `TaskInstance.is_task_schedulable`, asked of the parsed DAGs);
- the scheduler/executor limits: the rendered airflow.cfg, else Airflow's default;
- the step times: one category's real step functions (extract, process.validate,
  process.compute_metrics, loader.load_partition into a throwaway PostgreSQL, else SQLite),
  each in its own process, at a stated rows/day; staging on local disk;
- the task runner's start-up in a pod: a fresh interpreter importing the task SDK's runner
  and parsing the DAG file the way the runner does (DagBag of that one file), at the real
  categories.yaml and at 100 and 1000 generated categories (one file holds all category DAGs);
- pod start-up: Kubernetes' SLO, p99 <= 5 s for stateless pods with pre-pulled images
  (excluding image pull and init containers): an assumption, as are git-sync's init
  container, teardown, the scheduler hop between tasks and the node shape.

    python bench/k8s_cost_estimate.py [--rows 20000 1000000] [--quick]

Needs the official chart (AIRFLOW_CHART_DIR or `make chart-pull`) and helm, like the pod
contract tests.
"""

from __future__ import annotations

import argparse
import configparser
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, measure, report, table  # noqa: E402

sys.path[:0] = [str(REPO / "src"), str(REPO)]
DAGS = REPO / "dags"
SUMMARY_FILE = "advanced_data_pipeline.py"
CATEGORY_FILE = "category_dags.py"
DAY = date(2026, 11, 25)
WINDOW_S = 3600.0  # "all categories finish within one hour"
SCALES = (100, 1000)

# --- assumptions (everything not read from the render or measured here) --------------------
POD_STARTUP_S = 5.0  # Kubernetes SLO: p99 pod start-up <= 5 s, pre-pulled image, stateless pod
GIT_SYNC_INIT_S = 2.0  # git-sync-init: shallow clone of the DAG repo (excluded from the SLO)
TEARDOWN_S = 1.0  # task log upload to the object store + the pod's exit and deletion
HOP_S = 2.0  # scheduler: see the task end, schedule + queue the next one, the executor's create call
LOOP_S = 1.0  # one scheduler loop under load (scheduler_idle_sleep_time is 1 s when idle)
SUMMARY_WORK_S = 0.5  # work of each summary task (reads/writes one row per category)
NODE_VCPU, NODE_GIB = 4.0, 16.0  # node allocatable
DAEMONSET_VCPU, DAEMONSET_GIB = 0.3, 0.75  # per node: kube-proxy, CNI, log shipper, node exporter
HEADROOM = 1.5  # task slots over the bare need: retries, a late day, the summary
PACKING = 0.85  # share of a node's free allocatable the scheduler actually fills

# [section, key] of the settings that bound throughput, and why each matters here.
LIMITS = [
    ("core", "parallelism", "task instances queued+running at once (per scheduler)"),
    ("core", "default_pool_task_slot_count", "slots of default_pool (every task uses one)"),
    ("core", "max_active_tasks_per_dag", "running tasks per DAG (a category runs one at a time)"),
    ("kubernetes_executor", "worker_pods_creation_batch_size", "pods created per scheduler loop"),
    ("scheduler", "max_tis_per_query", "task instances queued per scheduler loop"),
    ("scheduler", "max_dagruns_to_create_per_loop", "DAG runs created per scheduler loop"),
    ("scheduler", "max_dagruns_per_loop_to_schedule", "DAG runs examined per scheduler loop"),
    ("scheduler", "scheduler_idle_sleep_time", "scheduler's sleep when it has nothing to do (s)"),
    ("scheduler", "task_queued_timeout", "a task queued (its pod pending) longer than this is failed/requeued (s)"),
]


# --- child processes ------------------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_step(args) -> None:
    """Steps of one category (``--step a,b``: one process, --quick), as their tasks do them; the
    hand-over (XCom) via a JSON file. What the pod's runner has loaded before the task starts
    (the task SDK) is loaded before the clock and its CPU left out: the start-up child counts
    it. The step's own imports (pyarrow, some lazily, inside the work) are the step's."""
    import airflow.sdk.execution_time.task_runner  # noqa: F401

    results = {}
    for step in args.step.split(","):
        results[step] = _one_step(args, step)
    print(json.dumps(results))


def _one_step(args, step: str) -> dict:
    started, cpu_started = time.perf_counter(), _cpu_s()
    from category_pipeline import extract, loader, process
    from category_pipeline.config import load_categories
    from category_pipeline.storage import dataset_uri
    from category_pipeline.warehouse import Warehouse

    category = _category(load_categories(DAGS / "categories.yaml").categories, args.category, args.rows)
    day, root, name = date.fromisoformat(args.day), args.staging, category.name
    xcom = Path(root) / "xcom.json"
    handed = json.loads(xcom.read_text()) if xcom.exists() else {}
    imported = time.perf_counter()
    if step == "extract":
        handed["extract"] = extract.extract(category, day, root)
    elif step == "validate":
        handed["validate"] = process.validate(
            handed["extract"]["raw_uri"], handed["extract"]["catalog_uri"], name, day,
            dataset_uri(root, name, day, "clean_orders"), dataset_uri(root, name, day, "quarantine"))
    elif step == "compute_metrics":
        handed["compute_metrics"] = process.compute_metrics(
            handed["validate"]["clean_uri"], dataset_uri(root, name, day, "metrics"))
    elif step == "load":
        handed["load"] = loader.load_partition(
            Warehouse.from_uri(args.warehouse),
            {"orders": handed["validate"]["clean_uri"], "category_daily_metrics": handed["compute_metrics"]["metrics_uri"]},
            {"category": name, "order_date": day.isoformat()})
    else:
        raise SystemExit(f"unknown step {step!r}")
    done = time.perf_counter()
    xcom.write_text(json.dumps(handed, default=str))
    return {"import_s": imported - started, "work_s": done - imported, "cpu_s": _cpu_s() - cpu_started}


def child_startup(args) -> None:
    """What a task pod's runner does before the task: import the task SDK's supervisor and
    runner, then parse its DAG file (task_runner.parse: a DagBag of that one file)."""
    started = time.perf_counter()
    import airflow.sdk.execution_time.supervisor  # noqa: F401
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    bag = DagBag(dag_folder=args.dag_file, safe_mode=False, load_op_links=False)
    parsed = time.perf_counter()
    assert not bag.import_errors, bag.import_errors
    result = {"import_s": imported - started, "parse_s": parsed - imported, "cpu_s": _cpu_s(), "dags": len(bag.dags)}
    if args.classify:
        # After the clock: which tasks the scheduler hands to the executor (a pod each), of
        # this file's DAGs and the summary's.
        from airflow.models.taskinstance import TaskInstance
        from airflow.serialization.serialized_objects import create_scheduler_operator

        summary = DagBag(dag_folder=str(DAGS / SUMMARY_FILE), safe_mode=False, load_op_links=False)
        assert not summary.import_errors, summary.import_errors
        result["pods"] = {
            dag_id: {t.task_id: {"pod": TaskInstance.is_task_schedulable(create_scheduler_operator(t)),
                                 "operator": type(t).__name__, "executor": t.executor}
                     for t in dag.tasks}
            for dag_id, dag in {**bag.dags, **summary.dags}.items()
        }
    print(json.dumps(result))


def _category(categories, name: str, rows: int | None):
    (category,) = [c for c in categories if c.name == name]
    if rows is None:
        return category
    return category.model_copy(update={"source": category.source.model_copy(update={"rows_per_day": rows})})


# --- reading the render ---------------------------------------------------------------------

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "": 1}


def cpu_cores(quantity) -> float:
    match = _CPU.match(str(quantity))
    if not match:
        raise ValueError(f"cpu quantity {quantity!r} not understood")
    return float(match.group(1)) / (1000 if match.group(2) else 1)


def mem_gib(quantity) -> float:
    match = re.match(r"^(\d+(?:\.\d+)?)([KMGT]i?|)$", str(quantity))
    if not match:
        raise ValueError(f"memory quantity {quantity!r} not understood")
    return float(match.group(1)) * _MEM[match.group(2)] / 2**30


def pod_request(pod: dict, kind: str = "requests") -> tuple[float, float]:
    """What the scheduler reserves for a pod: per resource, the larger of the containers' sum
    and the largest init container (Kubernetes' effective request)."""
    def of(containers):
        return [(cpu_cores(c.get("resources", {}).get(kind, {}).get("cpu", 0)),
                 mem_gib(c.get("resources", {}).get(kind, {}).get("memory", 0))) for c in containers]
    main, init = of(pod["spec"]["containers"]), of(pod["spec"].get("initContainers", []))
    return (max(sum(c for c, _ in main), max((c for c, _ in init), default=0.0)),
            max(sum(m for _, m in main), max((m for _, m in init), default=0.0)))


def base_resources(pod: dict) -> dict:
    (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return base["resources"]


def rendered_settings() -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (value, where from): the rendered airflow.cfg, else Airflow's default."""
    from tests.support.helm import render_official

    (cfg,) = [d["data"]["airflow.cfg"] for d in render_official() if d["kind"] == "ConfigMap" and "airflow.cfg" in d.get("data", {})]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(cfg)
    from airflow.configuration import conf

    settings = {}
    for section, key, _ in LIMITS:
        if parser.has_option(section, key):
            settings[(section, key)] = (parser.get(section, key), "values.yaml (rendered airflow.cfg)")
        else:
            settings[(section, key)] = (conf.get_default_value(section, key), "Airflow default")
    return settings


def platform_requests() -> list[list]:
    """The always-on pods' requests (official chart + platform chart renders): they share the nodes."""
    from tests.support.helm import render_official, render_platform

    rows = []
    for chart, docs in (("airflow", render_official()), ("platform", render_platform())):
        for doc in docs:
            if doc["kind"] not in ("Deployment", "StatefulSet"):
                continue
            spec = doc["spec"]["template"]
            cpu, mem = pod_request(spec)
            replicas = doc["spec"].get("replicas", 1) or 1
            rows.append([chart, f"{doc['kind']}/{doc['metadata']['name']}", replicas, cpu * replicas, mem * replicas])
    return rows


# --- measuring ------------------------------------------------------------------------------


def child_env(home: Path) -> dict[str, str]:
    from category_pipeline.local_run import laptop_env

    env = {**os.environ, **laptop_env(REPO, home), "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
           "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "src"), str(REPO)])}
    env.pop("PIPELINE_CATEGORIES_FILE", None)
    return env


STEPS = ("extract", "validate", "compute_metrics", "load")


def measure_steps(home: Path, category: str, rows: int, day: date, warehouse: str, one_process: bool) -> dict[str, dict]:
    """Each step in its own process, as in a pod (``one_process``, --quick: all in one; each
    later step is then given the first step's import time, which it shares)."""
    staging = home / f"staging-{rows}"
    staging.mkdir()
    steps = {}
    for group in [",".join(STEPS)] if one_process else STEPS:
        run = measure([sys.executable, __file__, "--child", "step", "--step", group, "--category", category,
                       "--rows", str(rows), "--day", day.isoformat(), "--staging", str(staging),
                       "--warehouse", warehouse], env=child_env(home))
        for step, data in json.loads(run.stdout.strip().splitlines()[-1]).items():
            if one_process and steps:
                data["import_s"] = max(data["import_s"], steps[STEPS[0]]["import_s"])
            steps[step] = {**data, "wall_s": run.seconds, "peak_mib": run.peak_rss_mib}
            print(f"{rows:>10,} rows  {step:16} process wall {run.seconds:6.2f} s  imports {data['import_s']:5.2f} s  "
                  f"work {data['work_s']:6.2f} s  cpu {data['cpu_s']:6.2f} s  peak {run.peak_rss_mib:5.0f} MiB", flush=True)
    shutil.rmtree(staging, ignore_errors=True)
    return steps


def measure_startup(home: Path, dag_file: Path, classify: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", "startup", "--dag-file", str(dag_file)] + (["--classify"] if classify else [])
    run = measure(command, env=child_env(home))
    data = json.loads(run.stdout.strip().splitlines()[-1])
    # The interpreter's own start, before the child's clock: the rest of the wall time.
    data.update(wall_s=run.seconds, peak_mib=run.peak_rss_mib,
                interpreter_s=max(run.seconds - data["import_s"] - data["parse_s"], 0.0))
    print(f"start-up {dag_file.parent.name}/{dag_file.name}: wall {run.seconds:.2f} s (imports {data['import_s']:.2f}, "
          f"parse {data['parse_s']:.2f}), cpu {data['cpu_s']:.2f} s, {data['dags']} DAGs", flush=True)
    return data


def scaled_dag_folder(root: Path, n: int) -> Path:
    """A copy of the DAG files with ``n`` generated categories (parse_bench's folder)."""
    from parse_bench import make_project_folder

    folder = make_project_folder(root, n)
    shutil.copy(DAGS / SUMMARY_FILE, folder)
    return folder


def warehouse_uri(home: Path):
    """A throwaway PostgreSQL (the cluster's warehouse) where its binaries exist, else SQLite."""
    try:
        from tests.support.postgres import PostgresUnavailable, TemporaryPostgres, wait_until_accepting
    except ImportError:
        return None, f"sqlite:///{home / 'warehouse.db'}", "SQLite (psycopg missing)"
    try:
        server = TemporaryPostgres()
        dsn = server.start()
        wait_until_accepting(dsn)
        return server, dsn, "a throwaway PostgreSQL (fsync off)"
    except (PostgresUnavailable, subprocess.CalledProcessError, OSError) as exc:
        return None, f"sqlite:///{home / 'warehouse.db'}", f"SQLite (no PostgreSQL here: {exc})"


# --- the estimate ---------------------------------------------------------------------------


def category_day(pods: list[dict], runner: dict, steps: dict[str, dict]) -> dict:
    """One category, one day: its pods in sequence. ``pods``: [{task, step, cpu, mem}]."""
    out = {"pods": len(pods), "wall": 0.0, "overhead": 0.0, "cpu_req_s": 0.0, "gib_req_s": 0.0,
           "cpu_used_s": 0.0, "peak_cpu": 0.0, "peak_gib": 0.0, "overhead_cpu_req_s": 0.0}
    runner_s = runner["wall_s"]
    for pod in pods:
        step = steps[pod["step"]]
        task_s = step["import_s"] + step["work_s"]
        lifetime = POD_STARTUP_S + GIT_SYNC_INIT_S + runner_s + task_s + TEARDOWN_S
        out["wall"] += HOP_S + lifetime
        out["overhead"] += HOP_S + lifetime - task_s
        out["cpu_req_s"] += pod["cpu"] * lifetime
        out["overhead_cpu_req_s"] += pod["cpu"] * (lifetime - task_s)
        out["gib_req_s"] += pod["mem"] * lifetime
        # The runner's start-up and the step's own CPU (measured apart: nothing counted twice).
        out["cpu_used_s"] += runner["cpu_s"] + step["cpu_s"]
        out["peak_cpu"] = max(out["peak_cpu"], pod["cpu"])
        out["peak_gib"] = max(out["peak_gib"], pod["mem"])
    out["share"] = out["overhead"] / out["wall"]
    return out


def cluster(n: int, day: dict, summary_run_s: float, settings: dict, always_on: tuple[float, float]) -> dict:
    """``n`` categories, all due at the same time, each a sequential chain of pods."""
    create_ramp = n / int(settings[("scheduler", "max_dagruns_to_create_per_loop")][0]) * LOOP_S
    window = WINDOW_S - create_ramp
    chains_per_slot = math.floor(window / day["wall"])
    if chains_per_slot < 1:
        return {"feasible": False, "ramp": create_ramp}
    concurrent = math.ceil(n / chains_per_slot)
    # Requests: the chains start together, so at worst every running pod is in the step that
    # requests most. Use: what the pods burn on average over a chain (start-up is CPU-bound).
    cpu_req = concurrent * day["peak_cpu"]
    cpu_use = concurrent * day["cpu_used_s"] / day["wall"]
    gib = concurrent * day["peak_gib"]
    need_cpu = max(cpu_req, cpu_use) + always_on[0]
    need_gib = gib + always_on[1]
    per_node_cpu = (NODE_VCPU - DAEMONSET_VCPU) * PACKING
    per_node_gib = (NODE_GIB - DAEMONSET_GIB) * PACKING
    nodes = max(math.ceil(need_cpu / per_node_cpu), math.ceil(need_gib / per_node_gib))
    return {"feasible": True, "ramp": create_ramp, "concurrent": concurrent, "cpu_req": cpu_req, "cpu_use": cpu_use,
            "gib": gib, "nodes": nodes, "vcpu": nodes * NODE_VCPU,
            "summary_s": n * summary_run_s, "pods_per_s": n * day["pods"] / window}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", help="rows/day to measure (default: the category's, and 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="one category's pods, its own day size, no 100-category parse")
    parser.add_argument("--child", choices=["step", "startup"], help=argparse.SUPPRESS)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--category", help=argparse.SUPPRESS)
    parser.add_argument("--day", help=argparse.SUPPRESS)
    parser.add_argument("--staging", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    parser.add_argument("--dag-file", help=argparse.SUPPRESS)
    parser.add_argument("--classify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "step":
        args.rows = args.rows[0]
        child_step(args)
        return 0
    if args.child == "startup":
        child_startup(args)
        return 0
    return estimate(args)


def estimate(args) -> int:
    started = time.monotonic()
    from tests.support import helm

    try:
        helm.official_chart()
        helm.helm_binary()
    except helm.Unavailable as exc:
        raise SystemExit(f"k8s_cost_estimate needs the official chart and helm: {exc}") from None
    from category_pipeline.config import load_categories

    home = Path(tempfile.mkdtemp(prefix="k8s-cost-"))
    os.environ.update(child_env(home))  # Airflow (imported below) reads its settings once
    sys.path.insert(0, str(REPO / "plugins"))
    from tests.support import pod_template

    categories = load_categories(DAGS / "categories.yaml").categories
    raw = yaml.safe_load((DAGS / "categories.yaml").read_text())
    # The typical category: one without its own resources (the file's defaults).
    typical = next(c for c in categories if not next(e for e in raw["categories"] if e["name"] == c.name).get("resources"))
    examined = [typical] if args.quick else list(categories)
    sizes = args.rows or ([typical.source.rows_per_day] if args.quick else [typical.source.rows_per_day, 1_000_000])
    server = None
    try:
        # 1. The pods, as Airflow generates them from the rendered template and the overrides.
        subprocess.run(["airflow", "db", "migrate"], check=True, capture_output=True, env=child_env(home))
        generated = pod_template.generate_pods(home, [c.dag_id for c in examined] + [pod_template.SUMMARY_DAG])
        settings = rendered_settings()
        always_on_rows = platform_requests()
        always_on = (sum(r[3] for r in always_on_rows), sum(r[4] for r in always_on_rows))
        values = pod_template.values()

        # 2. Which tasks are pods, and the runner's start-up at this file's size.
        startup = {len(categories): measure_startup(home, DAGS / CATEGORY_FILE, classify=True)}
        schedulable = startup[len(categories)].pop("pods")
        # --quick: the summary's start-up taken as the category file's, no generated categories.
        summary_startup = startup[len(categories)] if args.quick else measure_startup(home, DAGS / SUMMARY_FILE)
        for n in () if args.quick else SCALES:
            startup[n] = measure_startup(home, scaled_dag_folder(home, n) / CATEGORY_FILE)

        # 3. The steps of one category, at each day size.
        server, warehouse, warehouse_text = warehouse_uri(home)
        steps = {rows: measure_steps(home, typical.name, rows, DAY + timedelta(days=i), warehouse, args.quick)
                 for i, rows in enumerate(sizes)}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)

    # --- the pods ---
    step_of = {"extract": "extract", "process.validate": "validate", "process.compute_metrics": "compute_metrics",
               "load": "load"}
    pod_rows, category_pods, summary_pods = [], {}, []
    for (dag_id, task_id), pod in sorted(generated.items()):
        info = schedulable[dag_id][task_id]
        cpu, mem = pod_request(pod)
        resources = base_resources(pod)
        pod_rows.append([dag_id, task_id, info["operator"], "yes" if info["pod"] else "no: EmptyOperator, set to success by the scheduler",
                         resources["requests"]["cpu"], resources["requests"]["memory"], resources["limits"]["cpu"],
                         resources["limits"]["memory"], f"{cpu:g} / {mem:g} GiB"])
        if not info["pod"]:
            continue
        if info["executor"] not in (None, values["executor"]):
            raise SystemExit(f"{dag_id}.{task_id} names executor {info['executor']!r}: this estimate assumes one")
        if dag_id == pod_template.SUMMARY_DAG:
            summary_pods.append({"task": task_id, "cpu": cpu, "mem": mem})
        else:
            category_pods.setdefault(dag_id, []).append({"task": task_id, "step": step_of[task_id], "cpu": cpu, "mem": mem})
    limits_by_step = {p["step"]: mem_gib(base_resources(generated[(typical.dag_id, p["task"])])["limits"]["memory"])
                      for p in category_pods[typical.dag_id]}

    # --- per category and day ---
    per_day, day_rows = {}, []
    for rows in sizes:
        for scale in sorted(startup):
            for dag_id, pods in category_pods.items():
                if scale != len(categories) and dag_id != typical.dag_id:
                    continue
                result = category_day(pods, startup[scale], steps[rows])
                per_day[(rows, scale, dag_id)] = result
                day_rows.append([f"{rows:,}", scale, dag_id, result["pods"], result["wall"], result["overhead"],
                                 f"{result['share']:.0%}", result["cpu_req_s"], f"{result['overhead_cpu_req_s'] / result['cpu_req_s']:.0%}",
                                 result["cpu_used_s"], result["gib_req_s"]])
    summary_lifetime = POD_STARTUP_S + GIT_SYNC_INIT_S + summary_startup["wall_s"] + SUMMARY_WORK_S + TEARDOWN_S
    summary_run_s = len(summary_pods) * (HOP_S + summary_lifetime)
    summary_cpu_req_s = sum(p["cpu"] for p in summary_pods) * summary_lifetime

    # --- the cluster ---
    cluster_rows, verdicts = [], []
    parallelism = int(settings[("core", "parallelism")][0])
    batch = int(settings[("kubernetes_executor", "worker_pods_creation_batch_size")][0])
    pool = int(settings[("core", "default_pool_task_slot_count")][0])
    per_loop = int(settings[("scheduler", "max_tis_per_query")][0])
    for rows in sizes:
        for n in SCALES:
            scale = n if n in startup else max(startup)  # --quick: the real file's start-up (an underestimate)
            day = per_day[(rows, scale, typical.dag_id)]
            c = cluster(n, day, summary_run_s, settings, always_on)
            used = f"{startup[scale]['wall_s']:.1f} s ({scale:,})"
            if not c["feasible"]:
                cluster_rows.append([f"{rows:,}", n, used, "-", "one chain is longer than the hour", "", "", "", "", "", ""])
                continue
            slots = c["concurrent"] + 1  # + the summary's one running task
            bottleneck = []
            if slots > min(parallelism, pool):
                bottleneck.append(f"[core] parallelism {parallelism} caps the tasks running at once (needs >= {slots})")
            if c["pods_per_s"] > min(batch, per_loop) / LOOP_S:
                bottleneck.append(f"pod creation: {min(batch, per_loop)} a scheduler loop is below the {c['pods_per_s']:.1f} pods/s needed")
            if c["summary_s"] > WINDOW_S:
                bottleneck.append(f"summary: up to {n} runs x {summary_run_s:.0f} s = {c['summary_s'] / 3600:.1f} h (worst case), "
                                  "because every category load makes a run unless it lands in the same scheduler tick "
                                  "as another, and the runs go one at a time (max_active_runs=1)")
            cluster_rows.append([f"{rows:,}", n, used, c["concurrent"], f"{slots} / {parallelism}", c["cpu_req"], c["cpu_use"],
                                 c["gib"], c["nodes"], c["vcpu"], "; ".join(bottleneck) or "none"])
            verdicts.append((rows, n, c, slots, bottleneck))

    # --- the section ---
    runner = startup[len(categories)]
    big = startup[max(startup)]
    measured_rows = []
    for rows in sizes:
        for step, s in steps[rows].items():
            measured_rows.append([f"{rows:,}", step, s["wall_s"], s["import_s"], s["work_s"], s["cpu_s"], s["peak_mib"],
                                  f"{limits_by_step[step] * 1024:.0f}"])
    startup_rows = [[n, startup[n]["dags"], startup[n]["interpreter_s"], startup[n]["import_s"], startup[n]["parse_s"],
                     startup[n]["wall_s"], startup[n]["cpu_s"], startup[n]["peak_mib"]] for n in sorted(startup)]
    if not args.quick:
        startup_rows.append([f"{len(categories)} ({SUMMARY_FILE})", summary_startup["dags"], summary_startup["interpreter_s"],
                             summary_startup["import_s"], summary_startup["parse_s"], summary_startup["wall_s"],
                             summary_startup["cpu_s"], summary_startup["peak_mib"]])
    limit_rows = [[f"[{s}] {k}", settings[(s, k)][0], settings[(s, k)][1], why] for s, k, why in LIMITS]
    assumptions = [
        ["pod start-up (scheduled -> containers started)", f"{POD_STARTUP_S:g} s", "Kubernetes SLO: p99 <= 5 s, stateless pod, image pre-pulled (p50 is lower: conservative)"],
        ["image pull", "0 s", "pullPolicy IfNotPresent and the image pre-pulled on every node (a cold pull of the platform image costs tens of seconds, once per node)"],
        ["git-sync-init container", f"{GIT_SYNC_INIT_S:g} s", "shallow clone (depth 1) of the DAG repo from the in-cluster server; the SLO excludes init containers"],
        ["task runner start-up", ", ".join(f"{startup[n]['wall_s']:.2f} s ({n:,} categories)" for n in sorted(startup)), "MEASURED here: interpreter + task SDK imports + DagBag of the DAG file; the execution-API round trips are not included"],
        ["teardown", f"{TEARDOWN_S:g} s", "task log upload to the object store, container exit, pod deletion (requests held until then)"],
        ["scheduler hop between two tasks", f"{HOP_S:g} s", "no pod exists meanwhile: counted in wall time, not in requested CPU-s"],
        ["scheduler loop under load", f"{LOOP_S:g} s", "one pod-creation batch and one max_dagruns_to_create_per_loop per loop"],
        ["staging", "local disk", "the cluster stages in S3: transfer time not included (see the staging section)"],
        ["step times of other categories", f"those of `{typical.name}`", "measured for one category at the stated rows/day, applied to every category"],
        ["CPU-s used", "runner start-up CPU + the step's CPU", "measured; the kubelet's, the container runtime's and git-sync's CPU are not included"],
        ["warehouse", warehouse_text, "the load step's time; the cluster's PostgreSQL is remote and shared"],
        ["summary task work", f"{SUMMARY_WORK_S:g} s each", "not measured: reads/writes one row per category"],
        ["summary runs per day", "one per category load", "Airflow creates a run for each pending partition at the next scheduler tick (scheduler_job_runner._create_dagruns_for_partitioned_asset_dags), QUEUED whatever max_active_runs; loads coalesce only within one tick"],
        ["all categories due at once", "@daily at 00:00", "the defaults' schedule; chains start together, so at worst every running pod is in its most-requesting step"],
        ["node shape", f"{NODE_VCPU:g} vCPU / {NODE_GIB:g} GiB allocatable", f"minus {DAEMONSET_VCPU:g} vCPU / {DAEMONSET_GIB:g} GiB daemonsets, filled to {PACKING:.0%}"],
        ["always-on pods", f"{always_on[0]:.2f} vCPU / {always_on[1]:.1f} GiB", "requests of the airflow + platform chart renders (Deployments, StatefulSets), added to the cluster"],
        ["machine", f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", "measured times are of this shared machine, one run each"],
    ]
    verdict_lines = []
    for rows, n, c, slots, bottleneck in verdicts:
        categories_part = (f"the category runs fit on {c['nodes']} node(s) ({c['vcpu']:g} vCPU) with {slots} of "
                           f"{parallelism} task slots")
        if bottleneck:
            verdict_lines.append(f"- {rows:,} rows/day, {n} categories: goal missed (on paper): {categories_part}, but "
                                 f"{'; '.join(bottleneck)}; what it would take: "
                                 f"{_fix(bottleneck, slots, summary_run_s, n)}.")
        else:
            verdict_lines.append(f"- {rows:,} rows/day, {n} categories: goal met (on paper): {categories_part}.")
        if slots <= parallelism < math.ceil(slots * HEADROOM):
            verdict_lines.append(f"  - {slots} of {parallelism} task slots leaves no room for retries or a late day: "
                                 f"set config.core.parallelism >= {math.ceil(slots * HEADROOM)} in values.yaml.")
    for rows in sizes:
        for step, s in steps[rows].items():
            if s["peak_mib"] > limits_by_step[step] * 1024:
                verdict_lines.append(f"- {rows:,} rows/day: the {step} step peaked at {s['peak_mib']:.0f} MiB here, over its pod's "
                                     f"memory limit ({limits_by_step[step] * 1024:.0f} MiB): it would be OOM-killed; raise that "
                                     "category's limit in categories.yaml (resources) before such days.")
    big_text = (f" With {max(startup):,} categories in one file every pod parses all {max(startup):,} DAGs "
                f"({big['parse_s']:.1f} s here, against {runner['parse_s']:.1f} s for {len(categories)})."
                if max(startup) > len(categories) else "")
    typical_day = per_day[(sizes[0], len(categories), typical.dag_id)]
    body = f"""**ESTIMATE, NOT A MEASUREMENT**: there is no cluster here. The pod specs come from Airflow's own
`generate-dag-yaml` on the official chart rendered with values.yaml (as tests/test_pod_contract.py gets
them); the step times and the task runner's start-up were measured on this machine; everything else
is an assumption, listed at the end. Made in {time.monotonic() - started:.0f} s{' (--quick: one category, one day size)' if args.quick else ''}.

**Pods** (KubernetesExecutor, values.yaml `executor: {values['executor']}`, no task names another executor):
a task is a pod unless it is an EmptyOperator without callbacks, inlets or outlets, which the
scheduler marks successful without an executor (`TaskInstance.is_task_schedulable`). Effective
request = max(sum of containers, largest init container: git-sync-init).

{table(["DAG", "task", "operator", "pod?", "cpu req", "mem req", "cpu lim", "mem lim", "effective req (cpu / mem)"], pod_rows)}

**Scheduler and executor limits** (rendered airflow.cfg, else Airflow's default):

{table(["setting", "value", "from", "what it bounds"], limit_rows)}

**Measured: one category's steps** (`{typical.name}`, {"--quick: all four in ONE process, so the process wall and peak are the four's, and each later step is given the first one's import time" if args.quick else "each step in a fresh process"}, real step functions,
staging on local disk, load into {warehouse_text}; one run each). Process wall = interpreter + task SDK
imports (already loaded in a pod: not counted here) + the step's imports + work; the estimate uses imports + work,
CPU s is theirs alone.

{table(["rows/day", "step", "process wall s", "imports s", "work s", "CPU s", "peak RSS MiB", "pod mem limit MiB"], measured_rows)}

**Measured: a task runner's start-up** (fresh interpreter, task SDK imports, DagBag of the one DAG file,
as `task_runner.parse` does; the category DAG file holds every category):

{table(["categories in the file", "DAGs", "interpreter s", "imports s", "parse s", "total s", "CPU s", "peak RSS MiB"], startup_rows)}

**Estimate per category and day** (pods in sequence; a pod's life = start-up {POD_STARTUP_S:g} s + git-sync
{GIT_SYNC_INIT_S:g} s + runner start-up + step + teardown {TEARDOWN_S:g} s; plus a {HOP_S:g} s scheduler hop before each):

{table(["rows/day", "categories in file", "DAG", "pods", "wall s", "overhead s", "overhead share of wall", "CPU-s requested", "of it during start-up", "CPU-s used (measured)", "GiB-s requested"], day_rows)}

Summary DAG (`{pod_template.SUMMARY_DAG}`): {len(summary_pods)} pods a run ({", ".join(p["task"] for p in summary_pods)}),
{summary_run_s:.0f} s and {summary_cpu_req_s:.0f} CPU-s requested a run; up to one run per category load, so up to
{len(summary_pods)} x N pods a day, run one after the other (`max_active_runs=1`).

**Cluster for N categories finishing within one hour** (typical category; `concurrent` = category chains
running at once; CPU by requests = concurrent x the largest step request; CPU by use = concurrent x measured
CPU-s per chain / chain wall; nodes include the always-on pods, {always_on[0]:.2f} vCPU / {always_on[1]:.1f} GiB):

{table(["rows/day", "N", "runner start-up (categories in file)", "concurrent", "task slots needed / parallelism", "vCPU by requests", "vCPU by use", "GiB requested", "nodes", "total vCPU", "bottleneck"], cluster_rows)}

**Verdicts** (on paper):
{chr(10).join(verdict_lines)}

What it says: at {sizes[0]:,} rows/day a category's day is {typical_day['pods']} pods and ~{typical_day['wall']:.0f} s, of which
{typical_day['share']:.0%} is start-up overhead (pod start, git-sync, the runner's imports and DAG parse), not work. The
requests ({", ".join(f"{p['task']} {p['cpu']:g}" for p in category_pods[typical.dag_id])} CPU) are far below what a pod burns
while it starts: the runner's start-up alone is ~{runner['cpu_s']:.1f} CPU-s in ~{runner['wall_s']:.1f} s, i.e. about one core.
A cluster sized by requests would throttle start-ups; size it by use, or raise the requests.{big_text} Pod creation is
not the limit: {batch} pods per loop against ~{max(v[2]['pods_per_s'] for v in verdicts) if verdicts else 0:.1f} pods/s needed on average.
The scheduler starts up to parallelism ({parallelism}) tasks at once whatever the cluster holds: on a cluster sized
for fewer, the extra pods wait Pending (their task QUEUED, holding a slot), which is harmless while the wait stays
under task_queued_timeout ({settings[("scheduler", "task_queued_timeout")][0]} s). The cluster table is for the typical
category's requests; a category with larger ones (electronics' process pods request twice as much) needs
proportionally more. The summary, not the cluster, is what misses the hour: it runs once per category load, one run at
a time, and each run re-summarises everything loaded so far, so all but the day's last run are redundant work.

**Assumptions** (everything here that is not read from the render or measured):

{table(["assumption", "value", "basis"], assumptions)}
"""
    report("k8s_cost", "Cost of a category run on Kubernetes (estimate)", body)
    return 0


def _fix(bottleneck: list[str], slots: int, summary_run_s: float, n: int) -> str:
    fixes = []
    for item in bottleneck:
        if item.startswith("[core] parallelism"):
            fixes.append(f"config.core.parallelism >= {math.ceil(slots * HEADROOM)} (x{HEADROOM:g} for retries and late runs), "
                         "default_pool slots at least as many")
        elif item.startswith("pod creation"):
            fixes.append("a larger worker_pods_creation_batch_size")
        elif item.startswith("summary"):
            fixes.append(f"fewer summary runs: coalesce them (e.g. a time-based schedule after the categories' hour, or "
                         f"a guard that skips a run when a newer one for the same day is queued: each run re-summarises "
                         f"everything loaded); more than {math.floor(WINDOW_S / summary_run_s)} runs of {summary_run_s:.0f} s "
                         "cannot fit in one hour one at a time")
    return "; ".join(fixes)


if __name__ == "__main__":
    sys.exit(main())
