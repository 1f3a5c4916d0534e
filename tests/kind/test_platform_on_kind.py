"""The platform on a real cluster of three nodes: `make up` finishes (every claim bound), a
category DAG run has its heavy steps run as pods from the built image on more than one node,
its rows reach the warehouse, its task logs outlive its pods (read back from the object
store), a pushed category appears through git-sync, and every generated credential survives
an upgrade.

Every check of the triggered run selects by its own run id: unpausing the DAG also lets the
scheduler start the DAG's latest scheduled run, whose pods and logs must not be mixed in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest
import yaml

from tests.kind.conftest import REPO, make

import platform_api  # noqa: E402  (scripts/, put on sys.path by conftest)

CATEGORY = "home"
DAG_ID = f"category_{CATEGORY}"
LOGICAL_DATE = "2026-11-20"
IMAGE = "airflow-platform:0.1.0"
GIT_SYNC_BOUND_S = 180
# Our own run id: a valid label value, so the executor's run_id pod label is this id as is.
RUN_ID = f"kind-suite-{uuid.uuid4().hex[:8]}"
RUN_SELECTOR = f"airflow-platform.io/category={CATEGORY},run_id={RUN_ID}"


class PodWatcher:
    """Records every pod of one run while it is in flight (pods are deleted when done)."""

    def __init__(self, selector: str, run_id: str):
        self.selector = selector
        self.run_id = run_id
        self.seen: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            listing = platform_api.kubectl("get", "pods", "-l", self.selector, "-o", "json", check=False)
            for pod in json.loads(listing or '{"items": []}')["items"]:
                # The label is a sanitised copy; the annotation is the run id itself.
                if pod["metadata"].get("annotations", {}).get("run_id") == self.run_id:
                    self.seen[pod["metadata"]["name"]] = pod
            self._stop.wait(1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_deploy_left_every_claim_bound(platform):
    """The databases' and the object store's volumes, all Bound; no staging or log claim (both
    are in the object store: a ReadWriteOnce claim would tie a run to one node)."""
    claims = json.loads(platform_api.kubectl("get", "pvc", "-o", "json"))["items"]
    names = {c["metadata"]["name"] for c in claims}
    assert names >= {"data-platform-warehouse-0", "data-platform-metadata-db-0", "data-platform-object-store-0"}, names
    assert not names & {"pipeline-staging", "airflow-logs"}, names
    unbound = {c["metadata"]["name"]: c["status"].get("phase") for c in claims if c["status"].get("phase") != "Bound"}
    assert not unbound, unbound


@pytest.fixture(scope="module")
def category_run(api):
    with PodWatcher(RUN_SELECTOR, RUN_ID) as watcher:
        run_id = api.trigger(DAG_ID, LOGICAL_DATE, run_id=RUN_ID)
        state = api.wait(DAG_ID, run_id, timeout=900)
    assert run_id == RUN_ID
    return {"run_id": run_id, "state": state, "pods": watcher.seen}


def test_category_dag_succeeds(category_run):
    assert category_run["state"] == "success"


def _node_image(reference: str, node: str) -> dict:
    """What the container runtime of kind node ``node`` (a Docker container of that name)
    holds under ``reference``."""
    found = subprocess.run(
        ["docker", "exec", node, "crictl", "inspecti", "-o", "json", reference],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(found.stdout)["status"]


def test_process_and_load_ran_as_pods_from_the_built_image(category_run):
    built_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    nodes = {pod["spec"].get("nodeName") for pod in category_run["pods"].values()} - {None}
    assert nodes, "no pod of the run was seen scheduled"
    known_digests = set()
    for node in nodes:
        node_image = _node_image(f"docker.io/library/{IMAGE}", node)
        assert node_image["id"] == built_id, f"{node} holds another image under this reference than the one built"
        known_digests |= {node_image["id"], *(d.split("@", 1)[1] for d in node_image.get("repoDigests", []))}

    steps: dict[str, list[dict]] = {}
    for pod in category_run["pods"].values():
        step = pod["metadata"]["labels"].get("airflow-platform.io/step")
        (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", [])}
        steps.setdefault(step, []).append({"image": base["image"], "status": statuses.get("base", {})})
    assert {"process", "load"} <= set(steps), sorted(steps)
    for step in ("process", "load"):
        for container in steps[step]:
            assert container["image"] == IMAGE, (step, container["image"])
            image_id = container["status"].get("imageID", "")
            if image_id:  # set once the container started
                assert image_id.rsplit("@", 1)[-1] in known_digests, (step, image_id)
    assert any(c["status"].get("imageID") for c in steps["load"]), "no load pod was seen running"


def test_the_runs_task_pods_ran_on_more_than_one_node(category_run):
    """kind-config.yaml has two worker nodes: staging and logs in object storage let one run's
    pods land anywhere (with ReadWriteOnce claims the second node's pods would never start)."""
    assert category_run["state"] == "success"
    nodes = {pod["metadata"]["name"]: pod["spec"].get("nodeName") for pod in category_run["pods"].values()}
    assert len(set(nodes.values()) - {None}) >= 2, nodes


def test_the_statsd_exporter_has_the_runs_row_metric(api, category_run):
    """One scrape of the official chart's StatsD exporter after the run: the pipeline's rows
    metric for the category (values.yaml's extraMappings), at least the run's loaded rows."""
    import re
    import urllib.request

    loaded = api.xcom(DAG_ID, category_run["run_id"], "load")["orders"]["loaded"]
    with platform_api.port_forward("svc/airflow-statsd", 9102) as port:
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    found = re.search(rf'^airflow_pipeline_rows_loaded{{[^}}]*category="{CATEGORY}"[^}}]*}} (\S+)$', scraped, re.MULTILINE)
    assert found, "no airflow_pipeline_rows_loaded series for the category:\n" + scraped[-3000:]
    # A counter since the exporter started: this run's rows are in it (earlier runs may add).
    assert float(found.group(1)) >= loaded > 0


def test_rows_reached_the_warehouse(api, category_run):
    validated = api.xcom(DAG_ID, category_run["run_id"], "process.validate")
    count = platform_api.kubectl(
        "exec", "platform-warehouse-0", "--", "psql", "-U", "warehouse", "-d", "warehouse", "-tAc",
        f"SELECT COUNT(*) FROM orders WHERE category = '{CATEGORY}' AND order_date = '{LOGICAL_DATE}'",
    )
    assert int(count.strip()) == validated["clean_rows"] > 0


def test_task_logs_are_readable_after_the_pods_are_gone(api, category_run):
    assert category_run["pods"], "no pod of the run was seen"
    deadline = time.monotonic() + 120
    while platform_api.kubectl("get", "pods", "-l", RUN_SELECTOR, "-o", "name").strip():
        if time.monotonic() > deadline:
            pytest.fail(f"the task pods of run {RUN_ID} were not deleted within 120 s")
        time.sleep(3)
    loaded = api.xcom(DAG_ID, category_run["run_id"], "load")["orders"]["loaded"]
    log = api.task_log(DAG_ID, category_run["run_id"], "load")
    # The loader's own line, with this run's row count: the log of this load, not any log.
    assert f"orders: {loaded} rows loaded" in log, log[-2000:]


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


def _kept_secrets() -> dict[str, dict[str, str]]:
    listing = json.loads(platform_api.kubectl("get", "secrets", "-o", "json"))["items"]
    return {
        s["metadata"]["name"]: s["data"]
        for s in listing
        if s["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
    }


def test_every_generated_credential_survives_an_upgrade(platform):
    before = _kept_secrets()
    assert set(before) >= {
        "warehouse-connection", "airflow-metadata-connection", "airflow-fernet-key", "airflow-api-secret-key",
        "airflow-jwt-secret", "git-credentials", "git-push-credentials", "git-dags-connection",
        "airflow-admin-credentials", "warehouse-superuser", "metadata-db-superuser", "object-store-credentials",
    }
    make("deploy")
    assert _kept_secrets() == before
