"""The platform chart's ValidatingAdmissionPolicy for task pods, its CEL evaluated offline.

The scheduler creates every task pod with its `pods create` right, and a DAG author's
executor_config pod_override is merged into that pod. The policy (templates/admission-policy.yaml)
admits, for the scheduler's requests only, pods that run as the task ServiceAccount without an
API token, from the allowed image repositories, without hostPath volumes or host namespaces.

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
from category_pipeline.k8s import pod_override
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
    override: dict | None = None, *, kube_image: str = PLATFORM_IMAGE, category_step: str | None = None
) -> dict:
    """The pod the KubernetesExecutor would send: Airflow's PodGenerator.construct_pod (its
    run_next call) on the official chart's pod template, with `override` as a DAG's
    executor_config pod_override (a dict, deserialized as Airflow does), or this repo's own
    pod_override of a category's heavy step."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import ApiClient

    if category_step:
        category = load_categories(DAGS / "categories.yaml").categories[0]
        override_pod = pod_override(category, category_step)
    else:
        if override:
            # V1PodSpec requires containers: a DAG author names the task container, "base".
            override = {**override, "spec": {"containers": [{"name": "base"}], **override["spec"]}}
        override_pod = PodGenerator.deserialize_model_dict(override) if override else None
    pod = PodGenerator.construct_pod(
        dag_id="category_books", task_id="load", pod_id="category-books-load", try_number=1,
        kube_image=kube_image, date=None, run_id="manual__2026-01-01", map_index=-1,
        args=["airflow", "tasks", "run", "category_books", "load", "manual__2026-01-01"],
        pod_override_object=override_pod,
        base_worker_pod=PodGenerator.deserialize_model_dict(pod_template.from_chart()),
        namespace="airflow", scheduler_job_id="1", with_mutation_hook=False,
    )
    return ApiClient().sanitize_for_serialization(pod)


def hand_made_pod(**spec) -> dict:
    """A minimal allowed task pod, for the fields whose API-server form the executor never
    produces (absent fields, ephemeral containers); `spec` overrides its spec (None removes)."""
    pod_spec = {
        "serviceAccountName": TASK_SA,
        "automountServiceAccountToken": False,
        "initContainers": [{"name": "git-sync-init", "image": GIT_SYNC_IMAGE}],
        "containers": [{"name": "base", "image": PLATFORM_IMAGE}],
        "volumes": [{"name": "dags", "emptyDir": {}}],
    }
    pod_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "task"},
            "spec": {key: value for key, value in pod_spec.items() if value is not None}}


def test_the_executors_task_pods_are_admitted(policy):
    for step in (None, "process", "load"):
        pod = executor_pod(category_step=step)
        # The premise: the chart's pod template is what the policy is about.
        assert pod["spec"]["serviceAccountName"] == TASK_SA
        assert [c["image"] for c in pod["spec"]["initContainers"]] == [GIT_SYNC_IMAGE]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["base"]
        assert policy.review(pod, SCHEDULER) == Decision(applies=True, denials=[]), step


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
    pod = executor_pod({"spec": {
        "serviceAccountName": "default", "automountServiceAccountToken": True,
        "hostNetwork": True, "hostPID": True, "hostIPC": True,
        "containers": [{"name": "base", "image": "evil:1"}],
        "volumes": [{"name": "docker-sock", "hostPath": {"path": "/var/run/docker.sock"}}],
    }})
    denials = policy.review(pod, SCHEDULER).denials
    assert len(denials) == 7, denials
    assert "image evil:1 " in denials[2] and "hostPath volume docker-sock " in denials[3]


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
