"""Every pod the platform runs passes the Pod Security Standards profile "restricted": the
workloads of both charts in every profile we install (official chart with values.yaml, and
with values-kind.yaml; platform chart with its defaults, and without the git server), the
KubernetesExecutor's pod template, and the task pods Airflow itself builds from that template
and the DAGs' pod overrides. The checker (tests/support/pod_security.py) is tested first on
specs made to break each rule."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.support.helm import REPO, render_official, render_platform
from tests.support.pod_security import RULES, Violation, check_manifests, check_pod, pod_templates

# --------------------------------------------------------------------------------------------
# The checker, on specs made to pass and to break each rule.
# --------------------------------------------------------------------------------------------


def _container(name: str) -> dict:
    return {
        "name": name,
        "image": "example:1",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "seLinuxOptions": {"type": "container_t"},
            "procMount": "Default",
        },
        "ports": [{"containerPort": 8080}],
        "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
        "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
    }


def compliant_pod() -> dict:
    """A Pod that uses every field the rules look at, each in an allowed way."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ok", "annotations": {"container.apparmor.security.beta.kubernetes.io/main": "runtime/default"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 50000,
                "seccompProfile": {"type": "RuntimeDefault"},
                "appArmorProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            },
            "initContainers": [_container("init")],
            "containers": [_container("main")],
            "ephemeralContainers": [_container("debug")],
            "volumes": [
                {"name": "a", "configMap": {"name": "c"}},
                {"name": "b", "secret": {"secretName": "s"}},
                {"name": "c", "emptyDir": {}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "p"}},
                {"name": "e", "projected": {"sources": []}},
                {"name": "f", "downwardAPI": {"items": []}},
                {"name": "g", "csi": {"driver": "x"}},
                {"name": "h", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            ],
        },
    }


def _sc(pod: dict, container: str) -> dict:
    spec = pod["spec"]
    (found,) = [c for field in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(field, [])
                if c["name"] == container]
    return found.setdefault("securityContext", {})


def _set(path: str, value):
    """A mutation that sets ``value`` at the dotted ``path`` of the pod's spec; a path
    starting with a container name (main., init., debug.) goes into that container."""
    def mutate(pod: dict) -> None:
        keys = path.split(".")
        target = pod["spec"]
        if keys[0] in ("main", "init", "debug"):
            (target,) = [c for field in ("initContainers", "containers", "ephemeralContainers")
                         for c in pod["spec"].get(field, []) if c["name"] == keys[0]]
            keys = keys[1:]
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return mutate


def _delete(container: str, key: str):
    def mutate(pod: dict) -> None:
        del _sc(pod, container)[key]
    return mutate


def _annotate(key: str, value: str):
    def mutate(pod: dict) -> None:
        pod["metadata"]["annotations"][key] = value
    return mutate


def _add_volume(volume: dict):
    def mutate(pod: dict) -> None:
        pod["spec"]["volumes"].append(volume)
    return mutate


# (id, mutation, expected rule, expected container or None for the pod level)
VIOLATIONS = [
    ("pod-host-process", _set("securityContext.windowsOptions.hostProcess", True), "hostProcess", None),
    ("container-host-process", _set("main.securityContext.windowsOptions.hostProcess", True), "hostProcess", "main"),
    ("host-network", _set("hostNetwork", True), "hostNamespaces", None),
    ("host-pid", _set("hostPID", True), "hostNamespaces", None),
    ("host-ipc", _set("hostIPC", True), "hostNamespaces", None),
    ("privileged", _set("main.securityContext.privileged", True), "privileged", "main"),
    ("privileged-init", _set("init.securityContext.privileged", True), "privileged", "init"),
    ("privileged-ephemeral", _set("debug.securityContext.privileged", True), "privileged", "debug"),
    ("no-drop-all", _set("main.securityContext.capabilities.drop", ["NET_RAW"]), "capabilities", "main"),
    ("no-capabilities", _delete("init", "capabilities"), "capabilities", "init"),
    ("add-sys-admin", _set("main.securityContext.capabilities.add", ["SYS_ADMIN"]), "capabilities", "main"),
    ("add-baseline-chown", _set("main.securityContext.capabilities.add", ["CHOWN"]), "capabilities", "main"),
    ("host-path", _add_volume({"name": "h", "hostPath": {"path": "/"}}), "volumeTypes", None),
    ("nfs-volume", _add_volume({"name": "n", "nfs": {"server": "x", "path": "/"}}), "volumeTypes", None),
    ("host-port", _set("main.ports", [{"containerPort": 80, "hostPort": 80}]), "hostPorts", "main"),
    ("pod-apparmor-unconfined", _set("securityContext.appArmorProfile", {"type": "Unconfined"}), "appArmor", None),
    ("container-apparmor-unconfined", _set("main.securityContext.appArmorProfile", {"type": "Unconfined"}),
     "appArmor", "main"),
    ("apparmor-annotation", _annotate("container.apparmor.security.beta.kubernetes.io/main", "unconfined"),
     "appArmor", "main"),
    ("selinux-type", _set("main.securityContext.seLinuxOptions.type", "spc_t"), "seLinux", "main"),
    ("selinux-user", _set("main.securityContext.seLinuxOptions.user", "system_u"), "seLinux", "main"),
    ("selinux-role", _set("securityContext.seLinuxOptions.role", "system_r"), "seLinux", None),
    ("proc-mount", _set("main.securityContext.procMount", "Unmasked"), "procMount", "main"),
    ("pod-seccomp-unconfined", _set("securityContext.seccompProfile", {"type": "Unconfined"}), "seccomp", None),
    ("container-seccomp-unconfined-overrides-pod", _set("main.securityContext.seccompProfile", {"type": "Unconfined"}),
     "seccomp", "main"),
    ("unsafe-sysctl", _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]), "sysctls", None),
    ("privilege-escalation", _set("main.securityContext.allowPrivilegeEscalation", True), "allowPrivilegeEscalation",
     "main"),
    ("privilege-escalation-unset", _delete("debug", "allowPrivilegeEscalation"), "allowPrivilegeEscalation", "debug"),
    ("pod-run-as-root-allowed", _set("securityContext.runAsNonRoot", False), "runAsNonRoot", None),
    ("container-run-as-root-overrides-pod", _set("init.securityContext.runAsNonRoot", False), "runAsNonRoot", "init"),
    ("pod-uid-0", _set("securityContext.runAsUser", 0), "runAsUser", None),
    ("container-uid-0", _set("main.securityContext.runAsUser", 0), "runAsUser", "main"),
    ("probe-host", _set("main.livenessProbe", {"httpGet": {"path": "/", "port": 80, "host": "10.0.0.1"}}),
     "hostProbes", "main"),
    ("hook-host", _set("main.lifecycle", {"postStart": {"tcpSocket": {"port": 80, "host": "example.org"}}}),
     "hostProbes", "main"),
]


def test_the_compliant_pod_passes():
    assert check_pod("Pod/ok", compliant_pod()) == []


@pytest.mark.parametrize(("mutate", "rule", "container"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_each_rule_catches_its_violation(mutate, rule, container):
    pod = compliant_pod()
    mutate(pod)
    violations = check_pod("Pod/ok", pod)
    assert {v.rule for v in violations} == {rule}, violations
    assert (rule, container) in {(v.rule, v.container) for v in violations}, violations


def test_every_rule_of_the_standard_can_fail():
    assert {v[2] for v in VIOLATIONS} == set(RULES)


def test_container_fields_stand_in_for_missing_pod_fields():
    """seccomp and runAsNonRoot may be set on every container instead of the pod."""
    pod = compliant_pod()
    del pod["spec"]["securityContext"]["seccompProfile"]
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    for name in ("init", "main", "debug"):
        _sc(pod, name).update(seccompProfile={"type": "Localhost", "localhostProfile": "p.json"}, runAsNonRoot=True)
    assert check_pod("Pod/ok", pod) == []

    del _sc(pod, "debug")["seccompProfile"]
    del _sc(pod, "init")["runAsNonRoot"]
    assert {(v.rule, v.container) for v in check_pod("Pod/ok", pod)} == {("seccomp", "debug"), ("runAsNonRoot", "init")}


def test_a_pod_without_any_security_context_fails_every_required_rule():
    pod = {"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert {v.rule for v in check_pod("Pod/bare", pod)} == {
        "capabilities", "seccomp", "allowPrivilegeEscalation", "runAsNonRoot"}


def test_violations_name_workload_container_and_rule():
    pod = compliant_pod()
    _sc(pod, "main")["privileged"] = True
    (violation,) = check_pod("Deployment/web", pod)
    assert violation == Violation("Deployment/web", "main", "privileged", "securityContext.privileged is true")
    assert str(violation) == "Deployment/web container main: privileged: securityContext.privileged is true"


def test_pod_templates_of_every_workload_kind():
    def template() -> dict:
        return {"metadata": {}, "spec": compliant_pod()["spec"]}

    manifests = [
        {"kind": kind, "metadata": {"name": kind.lower()}, "spec": {"template": template()}}
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
    ] + [
        {"kind": "CronJob", "metadata": {"name": "cron"}, "spec": {"jobTemplate": {"spec": {"template": template()}}}},
        {"kind": "Pod", **{k: v for k, v in compliant_pod().items() if k != "kind"}},
        {"kind": "ConfigMap", "metadata": {"name": "ignored"}, "data": {}},
    ]
    assert set(pod_templates(manifests)) == {
        "Deployment/deployment", "StatefulSet/statefulset", "DaemonSet/daemonset", "ReplicaSet/replicaset",
        "Job/job", "CronJob/cron", "Pod/ok"}
    assert check_manifests(manifests) == []
    bad = copy.deepcopy(manifests)
    bad[5]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["hostNetwork"] = True
    assert [str(v) for v in check_manifests(bad)] == ["CronJob/cron pod: hostNamespaces: hostNetwork is true"]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="Deployment/broken: no Pod spec"):
        pod_templates([{"kind": "Deployment", "metadata": {"name": "broken"}, "spec": {}}])
    with pytest.raises(ValueError, match="Pod/empty: the Pod has no containers"):
        check_pod("Pod/empty", {"spec": {}})
    with pytest.raises(ValueError, match="Pod/anon: an entry of containers has no name"):
        check_pod("Pod/anon", {"spec": {"containers": [{"image": "x"}]}})


# --------------------------------------------------------------------------------------------
# The real renders.
# --------------------------------------------------------------------------------------------

OFFICIAL_WORKLOADS = {
    "Deployment/airflow-scheduler", "Deployment/airflow-api-server", "Deployment/airflow-dag-processor",
    "Deployment/airflow-triggerer", "Job/airflow-run-airflow-migrations", "Job/airflow-create-user",
    "ConfigMap/airflow-config:pod_template_file.yaml",
}
PLATFORM_WORKLOADS = {"StatefulSet/platform-warehouse", "StatefulSet/platform-metadata-db"}
RENDERS = {
    # id: (render, the workloads it must hold)
    "official": (lambda: render_official(), OFFICIAL_WORKLOADS),
    "official-kind": (lambda: render_official("-f", str(REPO / "values-kind.yaml")), OFFICIAL_WORKLOADS),
    "platform": (lambda: render_platform(), PLATFORM_WORKLOADS | {"Deployment/platform-git"}),
    "platform-without-git-server": (lambda: render_platform("--set", "gitServer.enabled=false"), PLATFORM_WORKLOADS),
}


def workloads_of(render: list[dict]) -> dict[str, dict]:
    """Kind/name -> Pod template of every workload, and the KubernetesExecutor's pod template
    (the official chart's pod_template_file.yaml) as ConfigMap/<name>:pod_template_file.yaml."""
    found = pod_templates(render)
    for doc in render:
        if doc["kind"] == "ConfigMap" and "pod_template_file.yaml" in (doc.get("data") or {}):
            found[f"ConfigMap/{doc['metadata']['name']}:pod_template_file.yaml"] = yaml.safe_load(
                doc["data"]["pod_template_file.yaml"])
    return found


@pytest.mark.parametrize("render_id", RENDERS)
def test_every_workload_of_the_render_is_restricted(render_id):
    render, expected = RENDERS[render_id]
    workloads = workloads_of(render())
    assert expected <= set(workloads), f"missing from the render: {sorted(expected - set(workloads))}"
    if render_id == "platform-without-git-server":
        assert "Deployment/platform-git" not in workloads
    violations = [str(v) for name, pod in workloads.items() for v in check_pod(name, pod)]
    assert not violations, "violations of the restricted profile:\n  " + "\n  ".join(violations)


def test_task_pods_that_airflow_generates_are_restricted(task_pods):
    pods = task_pods
    assert pods, "Airflow generated no task pod"
    assert any("airflow-platform.io/step" in pod["metadata"]["labels"] for pod in pods.values()), \
        "no task pod with a DAG's pod override among them"
    violations = [str(v) for (dag_id, task_id), pod in sorted(pods.items())
                  for v in check_pod(f"Pod/{dag_id}.{task_id}", pod)]
    assert not violations, "violations of the restricted profile:\n  " + "\n  ".join(violations)
