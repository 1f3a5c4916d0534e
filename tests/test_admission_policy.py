"""The platform chart's ValidatingAdmissionPolicy for task pods, its CEL evaluated offline.

The scheduler creates every task pod with its `pods create` right, and a DAG author's
executor_config pod_override is merged into that pod. The policy (templates/admission-policy.yaml)
admits, for the scheduler's requests only, pods that run as the task ServiceAccount without an
API token, from the allowed image repositories, without hostPath volumes or host namespaces,
referencing only the allowed Secrets (the kubelet resolves a pod's Secret references whatever
its ServiceAccount may read), and labelled as task pods: component=worker, tier, release, none
of the platform servers' labels and no other NetworkPolicy client's (the NetworkPolicies and
Services select pods by labels, which a pod_override may set).

The expressions are taken from the chart as `helm template` renders it, never copied, and
evaluated with cel-python (tests/support/cel_policy.py says where that is and is not the API
server: no type-checking against the Pod schema, no Kubernetes CEL extensions, no defaulting
before admission). The policy uses only standard CEL (has, all, map, filter, size, matches with an
RE2 regex; cel-python 0.5.0 runs `matches` on google-re2 too), so nothing of it is left
unevaluated. The allowed pods are the ones Airflow itself builds (PodGenerator.construct_pod,
as the KubernetesExecutor does) from the official chart's pod template; the forbidden ones are
the same pods with a DAG author's pod_override, or edited by hand where the API server's form
differs (fields absent, ephemeral containers, updates).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess

import pytest

try:
    import celpy  # noqa: F401  cel-python==0.5.0 (dev extra)
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("cel-python is not installed (pip install cel-python==0.5.0)", allow_module_level=True)

from category_pipeline.config import load_categories
from category_pipeline.k8s import load_pod_override, pod_override
from tests.conftest import DAGS
from tests.support import pod_template
from tests.support.cel_policy import Decision, PolicyEvaluator
from tests.support.helm import REPO, helm, render_platform, unavailable
from tests.support.kube import KUBERNETES_VERSION

CHART = REPO / "charts" / "airflow-platform"
SCHEDULER = "system:serviceaccount:airflow:airflow-scheduler"
TASK_SA = "airflow-task-runner"
DIGEST = "sha256:" + "0123456789abcdef" * 4
PLATFORM_IMAGE = "airflow-platform:0.1.0"
GIT_SYNC_IMAGE = "registry.k8s.io/git-sync/git-sync:v4.4.2"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def policy_objects(*args: str, namespace: str = "airflow") -> dict[str, dict]:
    """kind -> the rendered policy object (of the two kinds only)."""
    return {obj["kind"]: obj for obj in render_platform(*args, namespace=namespace) if obj["kind"] in POLICY_KINDS}


def evaluator(*args: str, namespace: str = "airflow") -> PolicyEvaluator:
    return PolicyEvaluator(policy_objects(*args, namespace=namespace)["ValidatingAdmissionPolicy"])


@pytest.fixture(scope="module")
def policy() -> PolicyEvaluator:
    return evaluator()


# -- the pods Airflow builds -------------------------------------------------------------------


def executor_pod(
    override: dict | None = None, *, kube_image: str = PLATFORM_IMAGE, category_step: str | None = None,
    summary_load: bool = False, template: dict | None = None,
) -> dict:
    """The pod the KubernetesExecutor would send: Airflow's PodGenerator.construct_pod (its
    run_next call) on the official chart's pod template (or `template`), with `override` as a
    DAG's executor_config pod_override (a dict, deserialized as Airflow does), or this repo's
    own pod_override of a category's heavy step, or of the summary's load."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import ApiClient

    if category_step:
        category = load_categories(DAGS / "categories.yaml").categories[0]
        override_pod = pod_override(category, category_step)
    elif summary_load:
        override_pod = load_pod_override()
    else:
        if override:
            # V1PodSpec requires containers: a DAG author names the task container, "base".
            override = {**override, "spec": {"containers": [{"name": "base"}], **override.get("spec", {})}}
        override_pod = PodGenerator.deserialize_model_dict(override) if override else None
    pod = PodGenerator.construct_pod(
        dag_id="category_books", task_id="load", pod_id="category-books-load", try_number=1,
        kube_image=kube_image, date=None, run_id="manual__2026-01-01", map_index=-1,
        args=["airflow", "tasks", "run", "category_books", "load", "manual__2026-01-01"],
        pod_override_object=override_pod,
        base_worker_pod=PodGenerator.deserialize_model_dict(copy.deepcopy(template or chart_pod_template())),
        namespace="airflow", scheduler_job_id="1", with_mutation_hook=False,
    )
    return ApiClient().sanitize_for_serialization(pod)


@functools.cache
def chart_pod_template(*helm_args: str) -> dict:
    # Rendered once per set of arguments: every executor_pod needs it.
    return pod_template.from_chart(*helm_args)


TASK_LABELS = {"tier": "airflow", "component": "worker", "release": "airflow"}


def hand_made_pod(labels: dict | None = None, **spec) -> dict:
    """A minimal allowed task pod, for the fields whose API-server form the executor never
    produces (absent fields, ephemeral containers); `spec` overrides its spec (None removes),
    `labels` replaces the task pod's labels."""
    pod_spec = {
        "serviceAccountName": TASK_SA,
        "automountServiceAccountToken": False,
        "initContainers": [{"name": "git-sync-init", "image": GIT_SYNC_IMAGE}],
        "containers": [{"name": "base", "image": PLATFORM_IMAGE}],
        "volumes": [{"name": "dags", "emptyDir": {}}],
    }
    pod_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "task", "labels": TASK_LABELS if labels is None else labels},
            "spec": {key: value for key, value in pod_spec.items() if value is not None}}


def test_the_executors_task_pods_are_admitted(policy):
    for step in (None, "process", "load"):
        pod = executor_pod(category_step=step)
        # The premise: the chart's pod template is what the policy is about.
        assert pod["spec"]["serviceAccountName"] == TASK_SA
        assert [c["image"] for c in pod["spec"]["initContainers"]] == [GIT_SYNC_IMAGE]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["base"]
        assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[]), step


def test_every_task_pod_of_the_real_dags_is_admitted(policy, task_pods):
    """What `airflow kubernetes generate-dag-yaml` makes of every task of the category DAGs and
    the summary DAG (conftest's task_pods): their pod_overrides, labels and Secrets included."""
    assert task_pods
    for (dag_id, task_id), pod in task_pods.items():
        assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[]), (dag_id, task_id)
    # The premise: the load tasks hold the warehouse's Secret, every task git-sync's, and none
    # the object store's (a task gets the connection object_store from the API server), nor any
    # claim (staging is the object store's bucket, the logs an emptyDir).
    for (dag_id, task_id), pod in task_pods.items():
        expected = {"git-credentials", "warehouse-connection"} if task_id in ("load", "processing_tasks.extract") else {"git-credentials"}
        assert referenced_secrets(pod) == expected, (dag_id, task_id)
        assert "AIRFLOW_CONN_OBJECT_STORE" not in env_names(pod), (dag_id, task_id)
        assert claims(pod) == set(), (dag_id, task_id)


def test_a_task_pod_by_digest_is_admitted(policy):
    pod = executor_pod(kube_image=f"airflow-platform@{DIGEST}")
    assert pod["spec"]["containers"][0]["image"] == f"airflow-platform@{DIGEST}"
    assert policy.review(pod, SCHEDULER).denials == []


# -- a DAG author's pod_override, through the executor's merge ---------------------------------

FORBIDDEN_OVERRIDES = {
    "privileged-with-host-root": (
        {"spec": {
            "containers": [{"name": "base", "securityContext": {"privileged": True},
                            "volumeMounts": [{"name": "host-root", "mountPath": "/host"}]}],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/"}}],
        }},
        # privileged itself is Pod Security's to refuse (restricted profile on the namespace).
        ["hostPath volume host-root is not allowed in a task pod"],
    ),
    "host-network": (
        {"spec": {"hostNetwork": True}},
        ["task pods must not use the host's network namespace (spec.hostNetwork)"],
    ),
    "host-pid": (
        {"spec": {"hostPID": True}},
        ["task pods must not use the host's PID namespace (spec.hostPID)"],
    ),
    "host-ipc": (
        {"spec": {"hostIPC": True}},
        ["task pods must not use the host's IPC namespace (spec.hostIPC)"],
    ),
    "scheduler-service-account": (
        {"spec": {"serviceAccountName": "airflow-scheduler"}},
        ["task pods must run as ServiceAccount airflow-task-runner, not airflow-scheduler (spec.serviceAccountName)"],
    ),
    "token-automounted": (
        {"spec": {"automountServiceAccountToken": True}},
        ["task pods must set spec.automountServiceAccountToken: false explicitly (no Kubernetes API token)"],
    ),
    "projected-token": (
        {"spec": {"volumes": [{"name": "token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": "https://kubernetes.default.svc"}}]}}]}},
        ["task pods must not mount a ServiceAccount token through a projected volume (serviceAccountToken source)"],
    ),
    "foreign-task-image": (
        {"spec": {"containers": [{"name": "base", "image": "evil/airflow-platform:1"}]}},
        ["image evil/airflow-platform:1 is not from an allowed repository "
         "(airflow-platform, registry.k8s.io/git-sync/git-sync)"],
    ),
    "foreign-sidecar": (
        {"spec": {"containers": [{"name": "base"}, {"name": "miner", "image": "docker.io/xmrig/xmrig:6"}]}},
        ["image docker.io/xmrig/xmrig:6 is not from an allowed repository "
         "(airflow-platform, registry.k8s.io/git-sync/git-sync)"],
    ),
    "foreign-init-container": (
        {"spec": {"initContainers": [{"name": "fetch", "image": "busybox:1.37"}]}},
        ["image busybox:1.37 is not from an allowed repository (airflow-platform, registry.k8s.io/git-sync/git-sync)"],
    ),
}


@pytest.mark.parametrize("case", sorted(FORBIDDEN_OVERRIDES))
def test_a_dag_authors_forbidden_pod_override_is_denied(policy, case):
    override, denials = FORBIDDEN_OVERRIDES[case]
    pod = executor_pod(override)
    assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=denials)
    # The same pod from anyone else is not this policy's business (Pod Security's, RBAC's).
    assert policy.review(pod, "system:serviceaccount:airflow:someone-else") == Decision(applies=False)


def test_an_override_breaking_every_rule_gets_every_denial(policy):
    pod = executor_pod({
        "metadata": {"labels": {"component": "scheduler", "app.kubernetes.io/name": "airflow-platform"}},
        "spec": {
            "serviceAccountName": "default", "automountServiceAccountToken": True,
            "hostNetwork": True, "hostPID": True, "hostIPC": True,
            "containers": [{"name": "base", "image": "evil:1",
                            "envFrom": [{"secretRef": {"name": "airflow-fernet-key"}}]}],
            "volumes": [{"name": "docker-sock", "hostPath": {"path": "/var/run/docker.sock"}},
                        {"name": "db", "persistentVolumeClaim": {"claimName": "data-platform-metadata-db-0"}}],
        },
    })
    denials = policy.review(pod, SCHEDULER).denials
    # 7 of the pod spec, 1 claim, 1 Secret, and the labels: identity, platform server, 2 foreign clients.
    assert len(denials) == 13, denials
    assert "image evil:1 " in denials[2] and "hostPath volume docker-sock " in denials[3]
    assert denials[7] == claim_denial("data-platform-metadata-db-0")
    assert denials[8].startswith("Secret airflow-fernet-key ") and "not component=scheduler" in denials[9]


# -- fields as the API server may see them -----------------------------------------------------


@pytest.mark.parametrize(
    "spec, denial",
    [
        ({"automountServiceAccountToken": None},
         "task pods must set spec.automountServiceAccountToken: false explicitly (no Kubernetes API token)"),
        # What the client sent, and what the ServiceAccount admission plugin makes of it.
        ({"serviceAccountName": None},
         "task pods must run as ServiceAccount airflow-task-runner, not (none) (spec.serviceAccountName)"),
        ({"serviceAccountName": "default"},
         "task pods must run as ServiceAccount airflow-task-runner, not default (spec.serviceAccountName)"),
        ({"ephemeralContainers": [{"name": "debugger", "image": "busybox:1.37"}]},
         "image busybox:1.37 is not from an allowed repository (airflow-platform, registry.k8s.io/git-sync/git-sync)"),
    ],
    ids=["token-automount-absent", "service-account-absent", "service-account-default", "ephemeral-container"],
)
def test_absent_and_api_server_forms_are_denied(policy, spec, denial):
    assert policy.review(hand_made_pod(**spec), SCHEDULER).denials == [denial]


def test_explicit_false_host_namespaces_and_no_volumes_are_admitted(policy):
    pod = hand_made_pod(hostNetwork=False, hostPID=False, hostIPC=False, volumes=None, initContainers=None)
    assert policy.review(pod, SCHEDULER).denials == []


def test_updates_are_checked_too(policy):
    allowed = hand_made_pod()
    swapped = hand_made_pod(containers=[{"name": "base", "image": "evil/airflow-platform:1"}])
    assert policy.review(swapped, SCHEDULER, operation="UPDATE", old_pod=allowed).denials == [
        "image evil/airflow-platform:1 is not from an allowed repository "
        "(airflow-platform, registry.k8s.io/git-sync/git-sync)"
    ]
    debugged = hand_made_pod(ephemeralContainers=[{"name": "debugger", "image": "busybox:1.37"}])
    decision = policy.review(
        debugged, SCHEDULER, operation="UPDATE", resource="pods/ephemeralcontainers", old_pod=allowed
    )
    assert len(decision.denials) == 1 and "busybox:1.37" in decision.denials[0]
    # A relabel of an allowed pod (what the executor does on adoption) passes.
    assert policy.review(allowed, SCHEDULER, operation="UPDATE", old_pod=allowed) == Decision(applies=True)


def test_deletes_and_status_updates_are_not_matched(policy):
    bad = hand_made_pod(hostNetwork=True)
    assert policy.review(bad, SCHEDULER, operation="DELETE") == Decision(applies=False)
    assert policy.review(bad, SCHEDULER, operation="UPDATE", resource="pods/status") == Decision(applies=False)


# -- images by repository ----------------------------------------------------------------------

ALLOWED_IMAGES = [
    "airflow-platform:0.1.0",
    "airflow-platform",
    f"airflow-platform@{DIGEST}",
    f"airflow-platform:0.1.0@{DIGEST}",
    "registry.k8s.io/git-sync/git-sync:v4.4.2",
    f"registry.k8s.io/git-sync/git-sync@{DIGEST}",
]
FORBIDDEN_IMAGES = [
    "airflow-platform-evil:1",
    "airflow-platformx:1",
    "evil/airflow-platform:1",
    "airflow-platform/evil:1",
    "docker.io/library/airflow-platform:0.1.0",  # the same image maybe, but not the same name
    "localhost:5000/airflow-platform:1",  # not allowed by default
    "AIRFLOW-PLATFORM:0.1.0",
    "airflow-platform:",
    "airflow-platform:1:2",
    "airflow-platform@sha256:abc",  # not a digest
    "airflow-platform:0.1.0 ",
    "registryxk8s.io/git-sync/git-sync:v4.4.2",  # the dots are literal
    "registry.k8s.io/git-sync/git-sync-evil:v4.4.2",
    "registry.k8s.io/git-sync/git-sync/evil:v4.4.2",
    "registry.k8s.io.evil.example/git-sync/git-sync:v4.4.2",
    "evil.example/registry.k8s.io/git-sync/git-sync:v4.4.2",
    "registry.k8s.io/git-sync:v4.4.2",
]


@pytest.mark.parametrize("image", ALLOWED_IMAGES)
def test_allowed_repositories_in_every_form(policy, image):
    assert policy.review(hand_made_pod(containers=[{"name": "base", "image": image}]), SCHEDULER).denials == []


@pytest.mark.parametrize("image", FORBIDDEN_IMAGES)
def test_look_alike_repositories_are_denied(policy, image):
    denials = policy.review(hand_made_pod(containers=[{"name": "base", "image": image}]), SCHEDULER).denials
    assert denials == [
        f"image {image} is not from an allowed repository (airflow-platform, registry.k8s.io/git-sync/git-sync)"
    ]


def test_a_registry_with_a_port_is_parsed_by_repository():
    policy = evaluator("--set-json", 'admissionPolicy.allowedImageRepositories=["localhost:5000/airflow-platform"]')
    def denied(image: str) -> bool:
        return bool(policy.review(hand_made_pod(containers=[{"name": "base", "image": image}], initContainers=None),
                                  SCHEDULER).denials)
    for image in ("localhost:5000/airflow-platform:1", "localhost:5000/airflow-platform",
                  f"localhost:5000/airflow-platform@{DIGEST}"):
        assert not denied(image), image
    for image in ("localhost:5000/airflow-platform-evil:1", "localhost:5001/airflow-platform:1",
                  "localhost/airflow-platform:1", "localhost:5000:1", "airflow-platform:0.1.0"):
        assert denied(image), image


# -- Secrets: only those a task pod needs ------------------------------------------------------

ALLOWED_SECRETS_TEXT = "git-credentials, warehouse-connection, git-dags-connection"


def secret_denial(name: str) -> str:
    return f"Secret {name} is not one a task pod may reference (allowed: {ALLOWED_SECRETS_TEXT})"


def env_names(pod: dict) -> set[str]:
    spec = pod["spec"]
    return {env["name"] for container in spec["containers"] + spec.get("initContainers", [])
            for env in container.get("env") or []}


def referenced_secrets(pod: dict) -> set[str]:
    """The Secrets the env of a pod's containers names (the premise of the allowed cases)."""
    spec = pod["spec"]
    return {
        env["valueFrom"]["secretKeyRef"]["name"]
        for container in spec["containers"] + spec.get("initContainers", [])
        for env in container.get("env") or []
        if (env.get("valueFrom") or {}).get("secretKeyRef")
    }


def test_the_secrets_the_task_pods_need_are_admitted(policy):
    # The load steps read the warehouse; git-sync's init container clones with git-credentials.
    # No task pod references object-store-credentials, by default or on a single node: a task
    # gets the connection object_store from the API server's execution API.
    for template in (None, single_node_template()):
        for pod in (executor_pod(category_step="load", template=template),
                    executor_pod(summary_load=True, template=template)):
            assert referenced_secrets(pod) == {"git-credentials", "warehouse-connection"}
            assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[])
        assert referenced_secrets(executor_pod(category_step="process", template=template)) == {"git-credentials"}


def test_the_dag_bundle_overlays_task_pods_are_admitted(policy):
    # values-dag-bundle.yaml: no git-sync, the task container clones with git-dags-connection.
    template = chart_pod_template("-f", str(REPO / "values-dag-bundle.yaml"))
    for step in (None, "load"):
        pod = executor_pod(template=template, category_step=step)
        assert "git-dags-connection" in referenced_secrets(pod)
        assert "git-credentials" not in referenced_secrets(pod)
        assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[]), step


def base_container(**fields) -> dict:
    return {"name": "base", **fields}


# Every path by which a pod references a Secret, each with a Secret of the platform a task
# must never hold.
FORBIDDEN_SECRET_OVERRIDES = {
    "env-secret-key-ref": (
        {"containers": [base_container(env=[{"name": "X", "valueFrom": {
            "secretKeyRef": {"name": "airflow-metadata-connection", "key": "connection"}}}])]},
        "airflow-metadata-connection",
    ),
    "env-from-secret-ref": (
        {"containers": [base_container(envFrom=[{"secretRef": {"name": "airflow-fernet-key"}}])]},
        "airflow-fernet-key",
    ),
    "secret-volume": (
        {"volumes": [{"name": "jwt", "secret": {"secretName": "airflow-jwt-secret"}}]},
        "airflow-jwt-secret",
    ),
    "projected-secret-source": (
        {"volumes": [{"name": "keys", "projected": {"sources": [
            {"configMap": {"name": "airflow-config"}},
            {"secret": {"name": "airflow-api-secret-key"}}]}}]},
        "airflow-api-secret-key",
    ),
    "csi-node-publish-secret": (
        {"volumes": [{"name": "store", "csi": {"driver": "secrets-store.csi.k8s.io",
                                               "nodePublishSecretRef": {"name": "airflow-admin-credentials"}}}]},
        "airflow-admin-credentials",
    ),
    # The init container's env: a pod_override's init container with the push credential.
    "init-container-env": (
        {"initContainers": [{"name": "push", "image": PLATFORM_IMAGE, "env": [{"name": "P", "valueFrom": {
            "secretKeyRef": {"name": "git-push-credentials", "key": "password"}}}]}]},
        "git-push-credentials",
    ),
    "init-container-env-from": (
        {"initContainers": [{"name": "push", "image": PLATFORM_IMAGE,
                             "envFrom": [{"prefix": "DB_", "secretRef": {"name": "airflow-metadata-connection"}}]}]},
        "airflow-metadata-connection",
    ),
}


@pytest.mark.parametrize("case", sorted(FORBIDDEN_SECRET_OVERRIDES))
def test_a_pod_override_referencing_another_secret_is_denied(policy, case):
    spec, secret = FORBIDDEN_SECRET_OVERRIDES[case]
    pod = executor_pod({"spec": spec})
    assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[secret_denial(secret)])


@pytest.mark.parametrize(
    "spec",
    [
        {"containers": [base_container(image=PLATFORM_IMAGE, envFrom=[{"secretRef": {"name": "warehouse-connection"}}])]},
        {"volumes": [{"name": "git", "secret": {"secretName": "git-credentials"}}]},
        {"volumes": [{"name": "git", "projected": {"sources": [{"secret": {"name": "git-dags-connection"}}]}}]},
        {"volumes": [{"name": "store", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "git-credentials"}}}]},
        # The kubelet pulls with it; no container sees it, and the images are restricted anyway.
        {"imagePullSecrets": [{"name": "airflow-metadata-connection"}]},
        # Secret-free references of the same shapes.
        {"containers": [base_container(image=PLATFORM_IMAGE, envFrom=[{"configMapRef": {"name": "c"}}],
                                       env=[{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])]},
    ],
    ids=["env-from-allowed", "secret-volume-allowed", "projected-allowed", "csi-allowed", "image-pull-secret",
         "no-secret"],
)
def test_allowed_secrets_by_every_path_are_admitted(policy, spec):
    assert policy.review(hand_made_pod(**spec), SCHEDULER).denials == []


def test_an_ephemeral_containers_secret_is_denied(policy):
    debugger = {"name": "debugger", "image": PLATFORM_IMAGE,
                "envFrom": [{"secretRef": {"name": "airflow-jwt-secret"}}]}
    pod = hand_made_pod(ephemeralContainers=[debugger])
    assert policy.review(pod, SCHEDULER, operation="UPDATE", resource="pods/ephemeralcontainers",
                         old_pod=hand_made_pod()).denials == [secret_denial("airflow-jwt-secret")]


def test_a_secret_reference_without_a_name_is_denied(policy):
    # The API server rejects such a pod anyway; here it must not slip through as "no reference".
    pod = hand_made_pod(volumes=[{"name": "s", "projected": {"sources": [{"secret": {}}]}}])
    assert policy.review(pod, SCHEDULER).denials == [secret_denial("(no name)")]


def test_the_first_foreign_secret_is_named_among_allowed_ones(policy):
    pod = hand_made_pod(
        containers=[base_container(image=PLATFORM_IMAGE, env=[
            {"name": "W", "valueFrom": {"secretKeyRef": {"name": "warehouse-connection", "key": "uri"}}},
            {"name": "F", "valueFrom": {"secretKeyRef": {"name": "airflow-fernet-key", "key": "fernet-key"}}},
        ])],
        volumes=[{"name": "jwt", "secret": {"secretName": "airflow-jwt-secret"}}],
    )
    assert policy.review(pod, SCHEDULER).denials == [secret_denial("airflow-fernet-key")]


def test_allowed_secrets_are_a_value():
    # The default: what the task pods need, not the object store's credentials.
    default = policy_objects()["ValidatingAdmissionPolicy"]
    assert ALLOWED_SECRETS_TEXT in json.dumps(default) and "object-store-credentials" not in json.dumps(default)
    only_git = evaluator("--set-json", 'admissionPolicy.allowedSecrets=["git-credentials"]')
    assert only_git.review(executor_pod(category_step="process"), SCHEDULER).denials == []
    assert only_git.review(executor_pod(category_step="load"), SCHEDULER).denials == [
        "Secret warehouse-connection is not one a task pod may reference (allowed: git-credentials)"
    ]
    none = evaluator("--set-json", "admissionPolicy.allowedSecrets=[]")
    assert none.review(executor_pod(), SCHEDULER).denials == [
        "Secret git-credentials is not one a task pod may reference (allowed: none)"
    ]


# -- claims: the staging and log volumes only ------------------------------------------------


def claim_denial(name: str) -> str:
    return f"PersistentVolumeClaim {name} is not one a task pod may mount (allowed: pipeline-staging, airflow-logs)"


@pytest.mark.parametrize("claim", ["data-platform-metadata-db-0", "data-platform-warehouse-0", "platform-git"])
def test_a_pod_override_mounting_another_claim_is_denied(policy, claim):
    pod = executor_pod({"spec": {"volumes": [{"name": "steal", "persistentVolumeClaim": {"claimName": claim}}]}})
    assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[claim_denial(claim)])


def claims(pod: dict) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v}


def single_node_template() -> dict:
    """The pod template of the single-node option (values-single-node.yaml over values.yaml):
    staging and task logs on the platform chart's volumes."""
    return chart_pod_template("-f", str(REPO / "values-single-node.yaml"))


def test_the_default_task_pods_mount_no_claim(policy):
    # Object storage: staging is s3://pipeline-staging/staging, the logs an emptyDir uploaded
    # to the log bucket; no pod depends on a node's ReadWriteOnce volume.
    for pod in (executor_pod(), executor_pod(category_step="process"), executor_pod(category_step="load"),
                executor_pod(summary_load=True)):
        assert claims(pod) == set()
        assert {v["name"]: "emptyDir" in v for v in pod["spec"]["volumes"]}["logs"] is True
        assert policy.review(pod, SCHEDULER).denials == []


def test_the_task_pods_claims_are_admitted(policy):
    # The single-node option: its pods mount the two claims, which the policy keeps allowing,
    # by default and as the platform chart's single-node values render it.
    single_node_policy = evaluator("-f", str(CHART / "values-single-node.yaml"))
    for step in (None, "process", "load"):
        pod = executor_pod(category_step=step, template=single_node_template())
        assert claims(pod) == {"pipeline-staging", "airflow-logs"}, step
        assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[]), step
        assert single_node_policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[]), step


def test_allowed_claims_are_a_value():
    none = evaluator("--set-json", "admissionPolicy.allowedVolumeClaims=[]")
    # The default task pods need no claim; the single-node ones are denied their first.
    assert none.review(executor_pod(category_step="load"), SCHEDULER).denials == []
    assert none.review(executor_pod(template=single_node_template()), SCHEDULER).denials == [
        "PersistentVolumeClaim airflow-logs is not one a task pod may mount (allowed: none)"
    ]
    logs_only = evaluator("--set-json", 'admissionPolicy.allowedVolumeClaims=["airflow-logs"]')
    assert logs_only.review(executor_pod(template=single_node_template()), SCHEDULER).denials == [
        "PersistentVolumeClaim pipeline-staging is not one a task pod may mount (allowed: airflow-logs)"
    ]


# -- labels: a task pod's NetworkPolicy identity -----------------------------------------------

METADATA_CLIENT = ("task pods must not carry the labels of the metadata database's clients "
                   "(metadataDatabase.networkPolicy.clients)")
KUBERNETES_API_CLIENT = ("task pods must not carry the labels of the Kubernetes API's clients "
                         "(networkPolicies.kubernetesApi.clients)")
PLATFORM_SERVER = ("task pods must not be labelled app.kubernetes.io/name=airflow-platform "
                   "(the platform's server pods: their Services and NetworkPolicies select it)")


def identity_denial(key: str, expected: str, actual: str | None) -> str:
    found = f"{key}={actual}" if actual is not None else f"without label {key}"
    return f"task pods must be labelled {key}={expected} (their NetworkPolicy identity), not {found}"


# Every label of templates/_networkpolicy.tpl and networkpolicies.yaml that grants more than a
# task flow, as a pod_override would set it.
SPOOFED_LABELS = {
    "scheduler": ({"component": "scheduler"}, [
        identity_denial("component", "worker", "scheduler"), METADATA_CLIENT, KUBERNETES_API_CLIENT]),
    "api-server": ({"component": "api-server"}, [
        identity_denial("component", "worker", "api-server"), METADATA_CLIENT, KUBERNETES_API_CLIENT]),
    **{
        component: ({"component": component}, [identity_denial("component", "worker", component), METADATA_CLIENT])
        for component in ("dag-processor", "triggerer", "run-airflow-migrations", "create-user-job")
    },
    # Any other component is no task pod either (statsd, pgbouncer: the official chart's Services).
    "statsd": ({"component": "statsd"}, [identity_denial("component", "worker", "statsd")]),
    "tier": ({"tier": "platform"}, [identity_denial("tier", "airflow", "platform")]),
    "release": ({"release": "other"}, [identity_denial("release", "airflow", "other")]),
    # The platform's server pods: a task pod with these would be the metadata DB Service's endpoint.
    "metadata-db-server": (
        {"app.kubernetes.io/name": "airflow-platform", "app.kubernetes.io/instance": "platform",
         "app.kubernetes.io/component": "metadata-db"},
        [PLATFORM_SERVER],
    ),
    "platform-name-only": ({"app.kubernetes.io/name": "airflow-platform"}, [PLATFORM_SERVER]),
}


@pytest.mark.parametrize("case", sorted(SPOOFED_LABELS))
def test_a_pod_override_spoofing_labels_is_denied(policy, case):
    labels, denials = SPOOFED_LABELS[case]
    pod = executor_pod({"metadata": {"labels": labels}})
    assert all(pod["metadata"]["labels"][key] == value for key, value in labels.items())  # the merge kept them
    assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=denials)


def test_the_task_labels_and_the_load_step_label_are_admitted(policy):
    pod = executor_pod({"metadata": {"labels": {
        "airflow-platform.io/step": "load", "airflow-platform.io/category": "books",
        "app.kubernetes.io/part-of": "airflow-platform", "app.kubernetes.io/name": "my-task", "team": "data",
    }}})
    assert pod["metadata"]["labels"]["component"] == "worker"
    assert policy.review(pod, SCHEDULER).denials == []
    load = executor_pod(category_step="load")
    assert load["metadata"]["labels"]["airflow-platform.io/step"] == "load"
    assert load["metadata"]["labels"]["app.kubernetes.io/part-of"] == "airflow-platform"


@pytest.mark.parametrize(
    "labels, denials",
    [
        (None, [identity_denial("component", "worker", None)]),  # the first of the three
        ({"tier": "airflow", "release": "airflow"}, [identity_denial("component", "worker", None)]),
        ({"component": "worker", "release": "airflow"}, [identity_denial("tier", "airflow", None)]),
        ({"component": "worker", "tier": "airflow"}, [identity_denial("release", "airflow", None)]),
    ],
    ids=["no-labels", "no-component", "no-tier", "no-release"],
)
def test_absent_identity_labels_are_denied(policy, labels, denials):
    pod = hand_made_pod(labels=labels or {})
    if labels is None:
        del pod["metadata"]["labels"]
    assert policy.review(pod, SCHEDULER).denials == denials


def test_the_release_is_network_policies_airflow_release():
    policy = evaluator("--set", "networkPolicies.airflowRelease=etl")
    etl = {**TASK_LABELS, "release": "etl"}
    assert policy.review(hand_made_pod(labels=etl), SCHEDULER).denials == []
    assert policy.review(hand_made_pod(), SCHEDULER).denials == [identity_denial("release", "etl", "airflow")]
    # The scheduler of release etl, spoofed: the foreign-client rules follow the release too.
    assert policy.review(hand_made_pod(labels={**etl, "component": "scheduler"}), SCHEDULER).denials == [
        identity_denial("component", "worker", "scheduler"), METADATA_CLIENT, KUBERNETES_API_CLIENT]


def matches(selector: dict, labels: dict) -> bool:
    """Kubernetes' label selector semantics (the reference the rendered CEL is held to)."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        if not {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels,
                "DoesNotExist": key not in labels}[operator]:
            return False
    return True


# Each with matchExpressions (the schema wants at least one term, and helm merges a set
# selector into the default one: a set list replaces the default's).
SELECTORS = [
    {"matchLabels": {"db-access": "yes"},
     "matchExpressions": [{"key": "component", "operator": "In", "values": ["worker", "scheduler"]}]},
    {"matchExpressions": [{"key": "db-access", "operator": "In", "values": ["yes", "always"]}]},
    {"matchExpressions": [{"key": "db-access", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "component", "operator": "NotIn", "values": ["worker"]}]},
    {"matchExpressions": [{"key": "sandbox", "operator": "DoesNotExist"}]},
    {"matchLabels": {"example.com/team": "data"},
     "matchExpressions": [{"key": "sandbox", "operator": "DoesNotExist"},
                          {"key": "tier-class", "operator": "NotIn", "values": ["low"]}]},
]
LABEL_SETS = [
    {}, {"db-access": "yes"}, {"db-access": "always"}, {"db-access": "no"}, {"db-access": ""},
    {"example.com/team": "data"}, {"example.com/team": "data", "sandbox": "1"}, {"sandbox": ""},
    {"example.com/team": "data", "tier-class": "low"}, {"example.com/team": "data", "tier-class": "high"},
]


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: str(s)[:60])
def test_foreign_client_selectors_follow_the_values(selector):
    """Whatever metadataDatabase.networkPolicy.clients says, a task pod it would select is
    denied, and one it would not is admitted (selectors narrowed to tier and release, as the
    NetworkPolicies narrow them)."""
    setting = json.dumps(selector)
    policy = evaluator("--set-json", f"metadataDatabase.networkPolicy.clients={setting}")
    for extra in LABEL_SETS:
        labels = {**TASK_LABELS, **extra}
        expected = [METADATA_CLIENT] if matches(selector, labels) else []
        assert policy.review(hand_made_pod(labels=labels), SCHEDULER).denials == expected, (selector, labels)
    # Kubernetes API clients likewise.
    policy = evaluator("--set-json", f"networkPolicies.kubernetesApi.clients={setting}")
    for extra in LABEL_SETS:
        labels = {**TASK_LABELS, **extra}
        expected = [KUBERNETES_API_CLIENT] if matches(selector, labels) else []
        assert policy.review(hand_made_pod(labels=labels), SCHEDULER).denials == expected, (selector, labels)


def test_a_selector_value_cannot_rewrite_the_cel():
    error = helm_template_error(
        "--set-json", """metadataDatabase.networkPolicy.clients={"matchLabels": {"component": "x' || true || '"}}""")
    assert "admissionPolicy: the selector label component=x' || true || ' is not a Kubernetes label" in error, error


# -- who is matched ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    [
        "system:serviceaccount:airflow:airflow-task-runner",
        "system:serviceaccount:airflow:airflow-triggerer",
        "system:serviceaccount:analytics:airflow-scheduler",  # another namespace's scheduler
        "system:serviceaccount:airflow:airflow-scheduler-2",
        "kubernetes-admin",
        "system:node:kind-control-plane",
    ],
)
def test_only_the_schedulers_requests_are_matched(policy, username):
    assert policy.review(hand_made_pod(hostNetwork=True), username) == Decision(applies=False)


def test_namespace_and_service_accounts_follow_the_values():
    objects = policy_objects(
        "--set", "admissionPolicy.schedulerServiceAccount=etl-scheduler,admissionPolicy.taskServiceAccount=etl-runner",
        namespace="analytics",
    )
    policy = PolicyEvaluator(objects["ValidatingAdmissionPolicy"])
    scheduler = "system:serviceaccount:analytics:etl-scheduler"
    assert policy.review(hand_made_pod(serviceAccountName="etl-runner"), scheduler, namespace="analytics").denials == []
    assert policy.review(hand_made_pod(), scheduler, namespace="analytics").denials == [
        "task pods must run as ServiceAccount etl-runner, not airflow-task-runner (spec.serviceAccountName)"
    ]
    assert policy.review(hand_made_pod(hostNetwork=True), SCHEDULER).applies is False


# -- the rendered objects ----------------------------------------------------------------------


def test_the_binding_selects_the_release_namespace_only():
    objects = policy_objects(namespace="analytics")
    policy, binding = objects["ValidatingAdmissionPolicy"], objects["ValidatingAdmissionPolicyBinding"]
    # Cluster-scoped: no namespace, a name per namespace.
    for obj in (policy, binding):
        assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert obj["metadata"]["name"] == "airflow-platform-task-pods-analytics"
        assert "namespace" not in obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "admission-policy"
    assert binding["spec"] == {
        "policyName": "airflow-platform-task-pods-analytics",
        "validationActions": ["Deny"],
        "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "analytics"}}},
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"] == {"resourceRules": [{
        "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
        "resources": ["pods", "pods/ephemeralcontainers"],
    }]}
    assert [c["expression"] for c in policy["spec"]["matchConditions"]] == [
        "request.userInfo.username == 'system:serviceaccount:analytics:airflow-scheduler'"
    ]
    for validation in policy["spec"]["validations"]:
        assert validation["message"] and validation["reason"] == "Forbidden"
    assert policy_objects()["ValidatingAdmissionPolicy"]["metadata"]["name"] == "airflow-platform-task-pods-airflow"


def test_validation_actions_are_a_value():
    binding = policy_objects("--set-json", 'admissionPolicy.validationActions=["Warn","Audit"]')[
        "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]


def test_disabled_renders_neither_object():
    assert policy_objects("--set", "admissionPolicy.enabled=false") == {}


def helm_template_error(*args: str) -> str:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        helm("template", "platform", str(CHART), "--namespace", "airflow", *args)
    return failure.value.stderr


def test_a_cluster_older_than_1_30_is_refused_unless_disabled():
    assert "needs ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes >= 1.30), " \
           "but this cluster is v1.29.0" in helm_template_error("--kube-version", "1.29.0")
    assert policy_objects("--kube-version", "1.29.0", "--set", "admissionPolicy.enabled=false") == {}
    assert set(policy_objects("--kube-version", "1.30.0")) == set(POLICY_KINDS)


@pytest.mark.parametrize(
    "setting",
    [
        'admissionPolicy.allowedImageRepositories=["airflow-platform:0.1.0"]',  # a tag is no repository
        f'admissionPolicy.allowedImageRepositories=["airflow-platform@{DIGEST}"]',
        'admissionPolicy.allowedImageRepositories=["airflow-platform|evil"]',  # would widen the regex
        "admissionPolicy.allowedImageRepositories=[]",
        'admissionPolicy.schedulerServiceAccount="x\' || true || \'"',  # would rewrite the CEL
        'admissionPolicy.validationActions=["Deny","Warn"]',  # Kubernetes rejects the pair
        "admissionPolicy.validationActions=[]",
        'admissionPolicy.validationActions=["Block"]',
        "admissionPolicy.enforce=true",
        'admissionPolicy.allowedSecrets=["Airflow-Fernet-Key"]',
        'admissionPolicy.allowedSecrets=["x\' || true || \'"]',  # would rewrite the CEL
        'admissionPolicy.allowedSecrets=["git-credentials","git-credentials"]',
        'admissionPolicy.allowedSecrets="git-credentials"',
    ],
)
def test_schema_rejects_bad_values(setting):
    error = helm_template_error("--set-json", setting)
    assert "admissionPolicy" in error and "values don't meet the specifications of the schema" in error, error


def test_objects_validate_strictly_against_the_kubernetes_schema():
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)")
    objects = policy_objects(namespace="analytics")
    assert set(objects) == set(POLICY_KINDS)
    minor = KUBERNETES_VERSION.rsplit(".", 1)[0]  # what validate() reports: "1.34"
    for obj in objects.values():
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == minor
