"""The KubernetesExecutor's pod template for the pod contract tests: the official chart
rendered with values.yaml, its pod_template_file.yaml as is (skipped where the chart is
missing, failed in CI)."""

from __future__ import annotations

import yaml

from tests.support.helm import REPO, render_official


def values() -> dict:
    return yaml.safe_load((REPO / "values.yaml").read_text())


def from_chart() -> dict:
    for doc in render_official():
        if doc["kind"] == "ConfigMap" and "pod_template_file.yaml" in doc.get("data", {}):
            return yaml.safe_load(doc["data"]["pod_template_file.yaml"])
    raise AssertionError("the rendered chart has no pod_template_file.yaml")
