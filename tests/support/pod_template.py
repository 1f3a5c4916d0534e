"""The KubernetesExecutor's pod template for the pod contract tests: the official chart
rendered with values.yaml, its pod_template_file.yaml as is (skipped where the chart is
missing, failed in CI)."""

from __future__ import annotations

import configparser

import yaml

from tests.support.helm import REPO, render_official


def values() -> dict:
    return yaml.safe_load((REPO / "values.yaml").read_text())


def _config_map(*args: str) -> dict:
    for doc in render_official(*args):
        if doc["kind"] == "ConfigMap" and "pod_template_file.yaml" in doc.get("data", {}):
            return doc["data"]
    raise AssertionError("the rendered chart has no pod_template_file.yaml")


def from_chart(*args: str) -> dict:
    """The rendered pod template (``args``: extra helm args, e.g. ``--set ...``)."""
    return yaml.safe_load(_config_map(*args)["pod_template_file.yaml"])


def executor_settings(*args: str) -> dict[str, str]:
    """The rendered airflow.cfg's [kubernetes_executor] section, as AIRFLOW__... env variables."""
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(_config_map(*args)["airflow.cfg"])
    return {f"AIRFLOW__KUBERNETES_EXECUTOR__{key.upper()}": value for key, value in config["kubernetes_executor"].items()}
