"""Kubernetes API rights of the whole install: both renders (the official chart with
values.yaml, charts/airflow-platform) walked binding by binding, and the resulting
subject -> (resource, verbs) table compared with the one the security model allows:
the scheduler launches task pods, the API server reads their logs, nothing else has a right.
Also: which pods get a ServiceAccount token at all (only those two)."""

from __future__ import annotations

import pytest

from tests.support import pod_template
from tests.support.helm import render_official, render_platform

NAMESPACE = "analytics"

EXPECTED_RIGHTS = {
    ("ServiceAccount", NAMESPACE, "airflow-scheduler"): {
        ("", "pods"): {"create", "get", "list", "watch", "patch", "delete"},
    },
    ("ServiceAccount", NAMESPACE, "airflow-api-server"): {
        ("", "pods"): {"list"},
        ("", "pods/log"): {"get"},
    },
}
# The pods that talk to the Kubernetes API, hence hold a token; no other pod does.
TOKEN_HOLDERS = {"airflow-scheduler", "airflow-api-server"}


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render_official(namespace=NAMESPACE) + render_platform(namespace=NAMESPACE)


def rights_table(docs: list[dict]) -> dict[tuple, dict[tuple[str, str], set[str]]]:
    """subject -> (apiGroup, resource) -> verbs, from every (Cluster)RoleBinding in ``docs``.
    A binding to a role that is not in ``docs`` (e.g. the cluster's `admin`) is an error:
    its rights cannot be read from here."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    table: dict[tuple, dict[tuple[str, str], set[str]]] = {}
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], namespace, ref["name"]))
        assert role, f"{binding['kind']} {binding['metadata']['name']} binds {ref['kind']} {ref['name']}, which neither chart renders"
        for subject in binding.get("subjects", []):
            key = (subject["kind"], subject.get("namespace"), subject["name"])
            rights = table.setdefault(key, {})
            for rule in role.get("rules", []):
                for group in rule.get("apiGroups", [""]):
                    for resource in rule.get("resources", []):
                        rights.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return table


def test_rights_are_exactly_the_expected_ones(rendered):
    assert rights_table(rendered) == EXPECTED_RIGHTS


def test_no_cluster_wide_rights(rendered):
    assert not [d["metadata"]["name"] for d in rendered if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_table_catches_an_extra_binding(rendered):
    """The comparison can fail: the official chart's own pod-launcher binding (rbac.create and
    allowPodLaunching on) binds the task and triggerer ServiceAccounts too."""
    docs = render_official("--set", "rbac.create=true", "--set", "allowPodLaunching=true", namespace=NAMESPACE)
    table = rights_table(docs + render_platform(namespace=NAMESPACE))
    assert table != EXPECTED_RIGHTS
    assert ("ServiceAccount", NAMESPACE, "airflow-task-runner") in table
    assert ("ServiceAccount", NAMESPACE, "airflow-triggerer") in table


def test_bound_service_accounts_are_the_ones_the_official_chart_runs(rendered):
    """The platform chart names them by value (rbac.serviceAccounts): they must be the
    scheduler's and the API server's ServiceAccounts of the official render."""
    by_component = {
        d["spec"]["template"]["metadata"]["labels"].get("component"): d["spec"]["template"]["spec"]["serviceAccountName"]
        for d in rendered if d["kind"] == "Deployment" and d["metadata"]["labels"].get("tier") == "airflow"
    }
    assert by_component["scheduler"] == "airflow-scheduler"
    assert by_component["api-server"] == "airflow-api-server"


def _token_mounted(pod_spec: dict, accounts: dict[str, dict]) -> bool:
    # A projected serviceAccountToken volume is a token whatever automount says.
    projected = any(
        "serviceAccountToken" in source
        for volume in pod_spec.get("volumes", []) for source in volume.get("projected", {}).get("sources", [])
    )
    # The pod's own setting wins; else its ServiceAccount's; Kubernetes' default is to mount.
    if "automountServiceAccountToken" in pod_spec:
        return projected or pod_spec["automountServiceAccountToken"]
    account = accounts.get(pod_spec.get("serviceAccountName", "default"), {})
    return projected or account.get("automountServiceAccountToken", True)


def test_only_the_scheduler_and_api_server_get_a_token(rendered):
    accounts = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ServiceAccount"}
    workloads = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in rendered if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")
    }
    workloads["task pod template"] = pod_template.from_chart()["spec"]
    with_token = {name for name, spec in workloads.items() if _token_mounted(spec, accounts)}
    assert with_token == TOKEN_HOLDERS
    assert {"airflow-dag-processor", "airflow-triggerer", "airflow-run-airflow-migrations",
            "airflow-create-user", "task pod template"} <= set(workloads) - with_token


def test_the_scheduler_token_is_short_lived(rendered):
    (scheduler,) = [d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "airflow-scheduler"]
    spec = scheduler["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    sources = [s for v in spec["volumes"] for s in v.get("projected", {}).get("sources", [])]
    (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert token["expirationSeconds"] <= 3600
