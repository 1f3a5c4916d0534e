"""The platform on a real cluster: a category DAG runs with its heavy steps as pods from the
built image, rows reach the warehouse, a pushed category appears through git-sync, task logs
outlive their pods, and credentials survive an upgrade."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest
import yaml

from tests.kind.conftest import REPO, make

import platform_api  # noqa: E402  (scripts/, put on sys.path by conftest)

CATEGORY = "home"
DAG_ID = f"category_{CATEGORY}"
LOGICAL_DATE = "2026-11-20"
IMAGE = "airflow-platform:0.1.0"
GIT_SYNC_BOUND_S = 180


class PodWatcher:
    """Records every pod of a category while a run is in flight (pods are deleted when done)."""

    def __init__(self, category: str):
        self.selector = f"airflow-platform.io/category={category}"
        self.seen: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            listing = platform_api.kubectl("get", "pods", "-l", self.selector, "-o", "json", check=False)
            for pod in json.loads(listing or '{"items": []}')["items"]:
                self.seen[pod["metadata"]["name"]] = pod
            self._stop.wait(1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def category_run(api):
    with PodWatcher(CATEGORY) as watcher:
        run_id = api.trigger(DAG_ID, LOGICAL_DATE)
        state = api.wait(DAG_ID, run_id, timeout=900)
    return {"run_id": run_id, "state": state, "pods": watcher.seen}


def test_category_dag_succeeds(category_run):
    assert category_run["state"] == "success"


def test_process_and_load_ran_as_pods_from_the_built_image(category_run):
    steps = {}
    for pod in category_run["pods"].values():
        labels = pod["metadata"]["labels"]
        (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
        steps.setdefault(labels["airflow-platform.io/step"], []).append(base["image"])
    assert set(steps) == {"process", "load"}
    assert all(image.endswith(IMAGE) for images in steps.values() for image in images)


def test_rows_reached_the_warehouse(api, category_run):
    validated = api.xcom(DAG_ID, category_run["run_id"], "process.validate")
    count = platform_api.kubectl(
        "exec", "platform-warehouse-0", "--", "psql", "-U", "warehouse", "-d", "warehouse", "-tAc",
        f"SELECT COUNT(*) FROM orders WHERE category = '{CATEGORY}' AND order_date = '{LOGICAL_DATE}'",
    )
    assert int(count.strip()) == validated["clean_rows"] > 0


def test_task_logs_are_readable_after_the_pod_is_gone(api, category_run):
    deadline = time.monotonic() + 120
    while category_run["pods"] and time.monotonic() < deadline:
        remaining = platform_api.kubectl("get", "pods", "-l", f"airflow-platform.io/category={CATEGORY}", "-o", "name")
        if not remaining.strip():
            break
        time.sleep(3)
    else:
        pytest.fail("task pods were not deleted within 120 s")
    log = api.task_log(DAG_ID, category_run["run_id"], "load")
    assert "rows replaced" in log or "Loading" in log


def test_a_pushed_category_appears_through_git_sync(api, tmp_path):
    dags = tmp_path / "dags"
    shutil.copytree(REPO / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((dags / "categories.yaml").read_text())
    config["categories"].append({"name": "toys", "description": "added by the kind suite"})
    (dags / "categories.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert not api.dag_exists("category_toys")

    pushed = time.monotonic()
    subprocess.run([str(REPO / "scripts" / "dags-push.sh"), "kind suite: add toys"], check=True,
                   env={**os.environ, "DAGS_DIR": str(dags)}, timeout=120)
    while not api.dag_exists("category_toys"):
        assert time.monotonic() - pushed < GIT_SYNC_BOUND_S, f"category_toys not visible after {GIT_SYNC_BOUND_S} s"
        time.sleep(5)
    print(f"category_toys visible {time.monotonic() - pushed:.0f} s after the push")


def test_generated_passwords_survive_an_upgrade(platform):
    before = platform_api.secret_value("warehouse-connection", "password")
    make("deploy")
    assert platform_api.secret_value("warehouse-connection", "password") == before
