"""Isolation on a real cluster (the security model of the README, issue 8):

- a task pod asking, through a DAG's pod_override, for `privileged: true` is refused by the
  cluster (Pod Security "restricted" on the namespace, and the platform's
  ValidatingAdmissionPolicy), and so are a foreign ServiceAccount, a token, a foreign image,
  another Secret, another component's labels and a database's volume (which also proves that
  Kubernetes compiles the policy's CEL, which the unit tests evaluate with cel-python);
- a task pod cannot open a TCP connection to the metadata database, while the same pod
  reaches the API server's execution API (so the refusal is the NetworkPolicy, not a
  broken pod).

The pods are made from the cluster's own pod template (the airflow-config ConfigMap) and sent
as the scheduler's ServiceAccount (`kubectl --as`), exactly the request the KubernetesExecutor
makes for a task with that pod_override.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time

import pytest
import yaml

from tests.kind.conftest import NAMESPACE

import platform_api  # noqa: E402  (scripts/, put on sys.path by conftest)

SCHEDULER = f"system:serviceaccount:{NAMESPACE}:airflow-scheduler"
PROBE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def task_pod(platform) -> dict:
    """The pod template the KubernetesExecutor starts every task pod from, as deployed."""
    template = platform_api.kubectl("get", "configmap", "airflow-config", "-o", "jsonpath={.data.pod_template_file\\.yaml}")
    pod = yaml.safe_load(template)
    pod["metadata"] = {"generateName": "isolation-probe-", "labels": pod["metadata"]["labels"]}
    return pod


def _create_as_scheduler(pod: dict, tmp_path, dry_run: bool) -> subprocess.CompletedProcess:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    return subprocess.run(
        ["kubectl", "-n", NAMESPACE, "create", "-f", str(manifest), "--as", SCHEDULER, "-o", "name",
         *(["--dry-run=server"] if dry_run else [])],
        capture_output=True, text=True, timeout=60,
    )


def _base(pod: dict) -> dict:
    (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return base


def test_the_unchanged_task_pod_is_admitted(task_pod, tmp_path):
    admitted = _create_as_scheduler(task_pod, tmp_path, dry_run=True)
    assert admitted.returncode == 0, admitted.stderr


@pytest.mark.parametrize("change, refused_by", [
    (lambda pod: _base(pod).setdefault("securityContext", {}).update(privileged=True), "PodSecurity"),
    (lambda pod: pod["spec"].update(hostNetwork=True), "PodSecurity"),
    (lambda pod: pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "PodSecurity"),
    (lambda pod: pod["spec"].update(serviceAccountName="default"), "ValidatingAdmissionPolicy"),
    (lambda pod: pod["spec"].update(automountServiceAccountToken=True), "ValidatingAdmissionPolicy"),
    (lambda pod: _base(pod).update(image="docker.io/library/busybox:1.36"), "ValidatingAdmissionPolicy"),
    (lambda pod: _base(pod).setdefault("env", []).append(
        {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "airflow-metadata-connection", "key": "connection"}}}),
     "ValidatingAdmissionPolicy"),
    (lambda pod: pod["metadata"]["labels"].update(component="scheduler"), "ValidatingAdmissionPolicy"),
    (lambda pod: pod["spec"]["volumes"].append(
        {"name": "db", "persistentVolumeClaim": {"claimName": "data-platform-metadata-db-0"}}),
     "ValidatingAdmissionPolicy"),
], ids=["privileged", "host-network", "host-path", "other-service-account", "token", "foreign-image",
        "metadata-db-secret", "scheduler-label", "database-volume"])
def test_a_pod_override_beyond_the_task_contract_is_refused(task_pod, tmp_path, change, refused_by):
    pod = copy.deepcopy(task_pod)
    change(pod)
    refused = _create_as_scheduler(pod, tmp_path, dry_run=True)
    assert refused.returncode != 0, f"the cluster admitted it: {refused.stdout}"
    assert "forbidden" in refused.stderr.lower() and refused_by.lower() in refused.stderr.lower(), refused.stderr


PROBE = """
import json, socket
result = {}
for name, host, port in [("metadata-db", "platform-metadata-db", 5432), ("api-server", "airflow-api-server", 8080)]:
    try:
        socket.create_connection((host, port), timeout=10).close()
        result[name] = "connected"
    except OSError as exc:
        result[name] = f"refused: {exc}"
print("PROBE " + json.dumps(result))
"""


def test_a_task_pod_cannot_reach_the_metadata_database(task_pod, tmp_path):
    pod = copy.deepcopy(task_pod)
    base = _base(pod)
    base["command"] = ["python", "-c", PROBE]
    created = _create_as_scheduler(pod, tmp_path, dry_run=False)
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip().split("/", 1)[1]
    try:
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (phase := platform_api.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")) not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, f"probe pod {name} still {phase} after {PROBE_TIMEOUT_S} s"
            time.sleep(3)
        logs = platform_api.kubectl("logs", name, "-c", "base")
    finally:
        platform_api.kubectl("delete", "pod", name, "--wait=false", check=False)
    (line,) = [line for line in logs.splitlines() if line.startswith("PROBE ")]
    result = json.loads(line.removeprefix("PROBE "))
    assert result["api-server"] == "connected", result
    assert result["metadata-db"].startswith("refused"), result
