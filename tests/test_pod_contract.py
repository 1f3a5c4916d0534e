"""Pod contract: the worker pods the KubernetesExecutor would launch for every category DAG
and the summary DAG, built by Airflow itself (`airflow kubernetes generate-dag-yaml`) from the
pod template and each task's pod override, carry the right image, command, resources, labels,
non-root settings, and exactly the env and volumes a task needs: no Airflow secret (metadata
DB, Fernet, API or JWT key), no ServiceAccount token, the warehouse credential on load pods
only. They are valid Kubernetes objects."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from category_pipeline.config import load_categories
from tests.conftest import DAGS
from tests.support import pod_template
from tests.support.kube import KUBERNETES_VERSION

CATEGORIES = load_categories(DAGS / "categories.yaml").categories
VALUES = pod_template.values()
IMAGE = f"{VALUES['images']['airflow']['repository']}:{VALUES['images']['airflow']['tag']}"
STEP_OF_TASK = {"process.validate": "process", "process.compute_metrics": "process", "load": "load"}
# The tasks that get the warehouse connection: the loads, and the summary's extract, which
# reads what the categories loaded (a step=load pod).
WAREHOUSE_TASKS = {"load", "processing_tasks.extract"}
SUMMARY_DAG = pod_template.SUMMARY_DAG

# What any task container holds: the pod template's env (values.yaml `env` included) and what
# the executor adds. Nothing else; load pods add the warehouse connection.
TASK_ENV = {
    "AIRFLOW__CORE__EXECUTOR", "AIRFLOW_HOME", "CONNECTION_CHECK_MAX_COUNT", "AIRFLOW_IS_K8S_EXECUTOR_POD",
    *(e["name"] for e in VALUES["env"]),
}
LOAD_ENV = TASK_ENV | {"AIRFLOW_CONN_WAREHOUSE_DEFAULT"}
# The git-sync init container: its settings and the read-only git credential.
GIT_SYNC_SECRET_KEYS = {"GITSYNC_USERNAME", "GITSYNC_PASSWORD", "GIT_SYNC_USERNAME", "GIT_SYNC_PASSWORD"}
# No claim: staging and logs are in the object store, so a task pod may run on any node.
TASK_VOLUMES = {"dags": "emptyDir", "logs": "emptyDir", "config": "configMap", "tmp": "emptyDir"}
AIRFLOW_SECRETS = {"airflow-metadata-connection", "airflow-fernet-key", "airflow-api-secret-key", "airflow-jwt-secret"}


@pytest.fixture(scope="module")
def pods(task_pods) -> dict[tuple[str, str], dict]:
    """Every task pod of every category DAG and of the summary DAG (conftest's task_pods)."""
    return task_pods


def _base(pod: dict) -> dict:
    (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return base


def _category_pods(pods: dict) -> dict:
    return {key: pod for key, pod in pods.items() if key[0] != SUMMARY_DAG}


def test_a_pod_for_every_task_of_every_category(pods):
    expected = {(c.dag_id, t) for c in CATEGORIES for t in ("start", "extract", *STEP_OF_TASK, "end")}
    assert set(_category_pods(pods)) == expected
    assert (SUMMARY_DAG, "load") in pods


def test_pods_run_the_platform_image_and_the_task_sdk_command(pods):
    for (dag_id, task_id), pod in pods.items():
        base = _base(pod)
        assert base["image"] == IMAGE
        assert base["args"][:3] == ["python", "-m", "airflow.sdk.execution_time.execute_workload"]
        workload = json.loads(base["args"][base["args"].index("--json-string") + 1])
        assert workload["ti"]["task_id"] == task_id
        assert workload["dag_rel_path"] == ("advanced_data_pipeline.py" if dag_id == SUMMARY_DAG else "category_dags.py")


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
def test_heavy_steps_get_resources_and_labels_of_their_category(pods, category):
    for task_id, step in STEP_OF_TASK.items():
        pod = pods[(category.dag_id, task_id)]
        expected = getattr(category.resources, step)
        assert _base(pod)["resources"] == {"requests": expected.requests.model_dump(), "limits": expected.limits.model_dump()}
        labels = pod["metadata"]["labels"]
        assert labels["airflow-platform.io/category"] == category.name
        assert labels["airflow-platform.io/step"] == step
        assert labels["component"] == "worker" and labels["tier"] == "airflow"


def test_an_image_digest_pins_every_container_of_the_task_pods(airflow_db, tmp_path):
    """images.airflow.digest (values.yaml) reaches the pods Airflow launches, not only the
    chart's own Deployments: the executor's repository:tag settings must not override it."""
    digest = "sha256:" + "ab" * 32
    generated = pod_template.generate_pods(tmp_path, [CATEGORIES[0].dag_id], "--set", f"images.airflow.digest={digest}")
    assert generated
    repository = VALUES["images"]["airflow"]["repository"]
    for pod in generated.values():
        assert _base(pod)["image"] == f"{repository}@{digest}"


def test_light_steps_keep_the_template_defaults(pods):
    for category in CATEGORIES:
        pod = pods[(category.dag_id, "extract")]
        assert _base(pod)["resources"] == VALUES["workers"]["kubernetes"]["resources"]
        assert "airflow-platform.io/step" not in pod["metadata"]["labels"]


def test_task_containers_hold_exactly_the_env_a_task_needs(pods):
    """No metadata DB connection, Fernet key, API secret key or JWT secret; the warehouse
    connection, from its Secret, in load pods only (the summary's load included)."""
    for (dag_id, task_id), pod in pods.items():
        env = {e["name"]: e for e in _base(pod)["env"]}
        expected = LOAD_ENV if task_id in WAREHOUSE_TASKS else TASK_ENV
        assert set(env) == expected, f"{dag_id}.{task_id}: unexpected {set(env) ^ expected}"
        assert env["CONNECTION_CHECK_MAX_COUNT"]["value"] == "0"
        for variable in env.values():
            assert "postgresql://" not in str(variable.get("value", "")), f"{task_id}: literal connection string"
        if task_id in WAREHOUSE_TASKS:
            ref = env["AIRFLOW_CONN_WAREHOUSE_DEFAULT"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "warehouse-connection", "key": "uri"}
        assert not _base(pod).get("envFrom"), f"{dag_id}.{task_id}: envFrom brings in unlisted variables"


def test_task_pods_reference_no_airflow_secret_and_no_token(pods):
    for (dag_id, task_id), pod in pods.items():
        referenced = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        } | {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
        expected = {"git-credentials"} | ({"warehouse-connection"} if task_id in WAREHOUSE_TASKS else set())
        assert referenced == expected, f"{dag_id}.{task_id}: Secrets {referenced}"
        assert not referenced & AIRFLOW_SECRETS
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert not any("projected" in v for v in pod["spec"]["volumes"]), "a projected (token) volume"


def test_task_pods_mount_exactly_their_volumes(pods):
    for (dag_id, task_id), pod in pods.items():
        volumes = {v["name"]: next(k for k in v if k != "name") for v in pod["spec"]["volumes"]}
        assert volumes == TASK_VOLUMES, f"{dag_id}.{task_id}"
        mounts = {m["mountPath"]: m["name"] for m in _base(pod)["volumeMounts"]}
        assert mounts == {
            "/opt/airflow/logs": "logs", "/opt/airflow/airflow.cfg": "config",
            "/opt/airflow/config/airflow_local_settings.py": "config", "/opt/airflow/dags": "dags",
            "/tmp": "tmp",
        }
        (init,) = pod["spec"]["initContainers"]
        assert init["name"] == "git-sync-init"
        assert {e["name"] for e in init["env"] if "valueFrom" in e} == GIT_SYNC_SECRET_KEYS
        assert {m["name"] for m in init["volumeMounts"]} == {"dags"}


def test_pods_run_as_non_root_with_the_task_service_account(pods):
    for pod in pods.values():
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 50000
        assert _base(pod)["securityContext"]["allowPrivilegeEscalation"] is False
        assert _base(pod)["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["serviceAccountName"] == "airflow-task-runner"


def test_pods_are_valid_kubernetes_objects(pods):
    for pod in pods.values():
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_validation_is_strict_enough_to_catch_a_typo(pods):
    pod = json.loads(json.dumps(next(iter(pods.values()))))
    pod["spec"]["containers"][0]["resourcez"] = pod["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
