"""values.yaml for the official Airflow chart: valid against the chart's own schema, no
credential in the file, and, where the chart itself is available, a render that gives the
platform we promise (KubernetesExecutor, the built image, git-sync, non-root, persistent logs)."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support.helm import REPO, render_official, render_platform

VALUES = yaml.safe_load((REPO / "values.yaml").read_text())


@pytest.fixture(scope="module")
def chart_schema() -> dict:
    path = os.environ.get("AIRFLOW_CHART_SCHEMA")
    if not path or not Path(path).is_file():
        reason = f"official chart values schema not found (AIRFLOW_CHART_SCHEMA={path!r})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return json.loads(Path(path).read_text())


def _errors(schema: dict, values: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)]


def test_values_validate_against_the_official_chart_schema(chart_schema):
    assert _errors(chart_schema, VALUES) == []


def test_schema_check_catches_a_misspelt_key(chart_schema):
    broken = yaml.safe_load((REPO / "values.yaml").read_text())
    broken["dags"]["gitSync"]["credentialSecret"] = broken["dags"]["gitSync"].pop("credentialsSecret")
    assert any("credentialSecret" in error for error in _errors(chart_schema, broken))


def test_every_credential_comes_from_a_named_secret():
    """(Literal credentials are searched for by tests/test_credentials.py.)"""
    assert VALUES["fernetKeySecretName"] and VALUES["apiSecretKeySecretName"] and VALUES["jwtSecretName"]
    assert VALUES["data"]["metadataSecretName"]
    assert VALUES["dags"]["gitSync"]["credentialsSecret"]


def test_platform_shape_of_values():
    assert VALUES["executor"] == "KubernetesExecutor"
    assert VALUES["images"]["airflow"]["repository"] == "airflow-platform"
    git_sync = VALUES["dags"]["gitSync"]
    assert git_sync["enabled"] and git_sync["subPath"] == "dags"
    # Task logs in the object store (remote logging), not on a shared volume.
    assert not VALUES["logs"]["persistence"]["enabled"]
    assert VALUES["config"]["logging"]["remote_logging"] == "True"
    assert VALUES["securityContexts"]["pod"]["runAsNonRoot"] is True


# --- rendering the official chart (skipped where the chart is not available) -------------


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """The official chart with values.yaml (skipped without the chart, failed in CI)."""
    return render_official()


def _objects(rendered, kind):
    return {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] == kind}


def _airflow_cfg(rendered) -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(_objects(rendered, "ConfigMap")["airflow-config"]["data"]["airflow.cfg"])
    return config


def _pod_template(rendered) -> dict:
    return yaml.safe_load(_objects(rendered, "ConfigMap")["airflow-config"]["data"]["pod_template_file.yaml"])


def test_render_uses_the_kubernetes_executor_and_the_platform_image(rendered):
    config = _airflow_cfg(rendered)
    assert config["core"]["executor"] == "KubernetesExecutor"
    # Empty, so that the pod template's image (which honours a digest) is the task pods' one.
    assert config["kubernetes_executor"]["worker_container_repository"] == ""
    assert config["kubernetes_executor"]["worker_container_tag"] == ""
    for deployment in _objects(rendered, "Deployment").values():
        if deployment["metadata"]["labels"].get("component") == "statsd":
            continue  # the StatsD exporter runs its own image
        images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
        assert "airflow-platform:0.1.0" in images, deployment["metadata"]["name"]


def test_render_task_pod_template(rendered):
    pod = _pod_template(rendered)
    (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    assert base["image"] == "airflow-platform:0.1.0"
    assert base["resources"]["requests"] and base["resources"]["limits"]
    assert pod["spec"]["serviceAccountName"] == "airflow-task-runner"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 50000
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes["logs"] and "pipeline-staging" not in volumes
    env = {e["name"]: e.get("value") for e in base["env"]}
    assert env["PIPELINE_STAGING_URI"] == "s3://pipeline-staging/staging"
    assert env["PIPELINE_STAGING_CONN_ID"] == "object_store"


def test_render_git_sync_takes_credentials_from_a_secret(rendered):
    scheduler = _objects(rendered, "Deployment")["airflow-dag-processor"]["spec"]["template"]["spec"]
    (git_sync,) = [c for c in scheduler["containers"] if c["name"] == "git-sync"]
    env = {e["name"]: e for e in git_sync["env"]}
    assert env["GITSYNC_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "git-credentials", "key": "GITSYNC_PASSWORD"}
    assert env["GITSYNC_REPO"]["value"] == VALUES["dags"]["gitSync"]["repo"]


def test_render_creates_no_secret_for_keys_it_should_take_from_the_platform_chart(rendered):
    names = set(_objects(rendered, "Secret"))
    for owned_elsewhere in ("airflow-fernet-key", "airflow-api-secret-key", "airflow-jwt-secret", "airflow-metadata-connection"):
        assert owned_elsewhere not in names
    assert not any(n.endswith("-postgresql") for n in _objects(rendered, "StatefulSet"))


def test_render_every_container_is_non_root_with_resources(rendered):
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, obj in _objects(rendered, kind).items():
            spec = obj["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
                assert context.get("runAsNonRoot") or context.get("runAsUser", 0) > 0, f"{name}/{container['name']}"
                assert container.get("resources", {}).get("limits"), f"{name}/{container['name']} has no limits"


def test_render_validates_against_the_kubernetes_schema(rendered):
    import kubernetes_validate

    from tests.support.kube import KUBERNETES_VERSION

    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- the contract between values.yaml and charts/airflow-platform -------------------------


def test_everything_values_refers_to_is_provided_by_the_platform_chart():
    """values.yaml names Secrets, claims, a ServiceAccount and a git service that only the
    project's own chart creates: render that chart and check every name and key."""
    from category_pipeline.k8s import WAREHOUSE_SECRET

    provided = {(d["kind"], d["metadata"]["name"]): d for d in render_platform()}

    def secret_keys(name: str) -> set[str]:
        assert ("Secret", name) in provided, f"values.yaml refers to Secret {name}, which the platform chart lacks"
        secret = provided[("Secret", name)]
        return set(secret.get("data", {})) | set(secret.get("stringData", {}))

    assert "fernet-key" in secret_keys(VALUES["fernetKeySecretName"])
    assert "api-secret-key" in secret_keys(VALUES["apiSecretKeySecretName"])
    assert "jwt-secret" in secret_keys(VALUES["jwtSecretName"])
    assert "connection" in secret_keys(VALUES["data"]["metadataSecretName"])
    assert {"GITSYNC_USERNAME", "GITSYNC_PASSWORD"} <= secret_keys(VALUES["dags"]["gitSync"]["credentialsSecret"])
    assert "uri" in secret_keys(WAREHOUSE_SECRET)
    for variable in VALUES["createUserJob"]["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secret_keys(ref["name"])

    for component in ("apiServer", "triggerer"):
        for variable in VALUES[component]["env"]:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secret_keys(ref["name"]), component
    # The single-node option's claims come from the platform chart's single-node values.
    single_node = yaml.safe_load((REPO / "values-single-node.yaml").read_text())
    provided_single = {(d["kind"], d["metadata"]["name"]) for d in render_platform(
        "-f", str(REPO / "charts" / "airflow-platform" / "values-single-node.yaml"))}
    assert ("PersistentVolumeClaim", single_node["logs"]["persistence"]["existingClaim"]) in provided_single
    for volume in single_node["workers"]["kubernetes"]["extraVolumes"]:
        assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in provided_single
    assert ("ServiceAccount", VALUES["workers"]["kubernetes"]["serviceAccount"]["name"]) in provided
    git_host = VALUES["dags"]["gitSync"]["repo"].split("/")[2]
    assert ("Service", git_host) in provided


@pytest.mark.parametrize("overlays", [[], ["values-kind.yaml"], ["values-single-node.yaml"], ["values-dag-bundle.yaml"]],
                         ids=["defaults", "kind", "single-node", "dag-bundle"])
def test_install_prints_no_deprecation_or_warning(overlays):
    """The chart's NOTES (what `helm install` prints) flag deprecated keys and unsafe settings
    as WARNING blocks; this install has none."""
    from tests.support.helm import helm, official_chart_or_skip

    args = [a for overlay in overlays for a in ("-f", str(REPO / overlay))]
    output = helm("install", "airflow", str(official_chart_or_skip()), "--dry-run=client", "--namespace", "airflow",
                  "-f", str(REPO / "values.yaml"), *args)
    notes = output[output.index("NOTES:"):]
    assert "Thank you for installing Apache Airflow" in notes
    assert "WARNING" not in notes.upper(), notes
    assert "DEPRECAT" not in notes.upper(), notes


def test_the_deprecation_check_can_fail():
    from tests.support.helm import helm, official_chart_or_skip

    output = helm("install", "airflow", str(official_chart_or_skip()), "--dry-run=client", "--namespace", "airflow",
                  "-f", str(REPO / "values.yaml"), "--set", "workers.resources.limits.cpu=1")
    assert "DEPRECATION WARNING" in output[output.index("NOTES:"):]
