"""The KubernetesExecutor's pod template for the pod contract tests: the official chart
rendered with values.yaml, its pod_template_file.yaml as is (skipped where the chart is
missing, failed in CI)."""

from __future__ import annotations

import configparser
import os
import subprocess

import yaml

from tests.support.helm import REPO, render_official

LOGICAL_DATE = "2026-11-25"
SUMMARY_DAG = "advanced_data_pipeline"


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


def generate_pods(folder, dag_ids, *helm_args: str) -> dict[tuple[str, str], dict]:
    """(dag_id, task_id) -> the pod Airflow generates for each task of ``dag_ids``, from the pod
    template and the [kubernetes_executor] settings of the official chart rendered with
    values.yaml (and ``helm_args``)."""
    template_file = folder / "pod_template_file.yaml"
    template_file.write_text(yaml.safe_dump(from_chart(*helm_args)))
    env = {
        **os.environ,
        # What the chart writes into airflow.cfg (the image settings included), then the path here.
        **executor_settings(*helm_args),
        "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template_file),
        # What the chart sets in every container, so that parsing sees the same settings.
        **{e["name"]: e["value"] for e in values()["env"]},
    }
    generated = {}
    for dag_id in dag_ids:
        out = folder / dag_id
        subprocess.run(
            ["airflow", "kubernetes", "generate-dag-yaml", dag_id, "-l", LOGICAL_DATE, "-o", str(out)],
            check=True, capture_output=True, env=env, timeout=180,
        )
        for path in (out / "airflow_yaml_output").glob("*.yml"):
            pod = yaml.safe_load(path.read_text())
            generated[(pod["metadata"]["annotations"]["dag_id"], pod["metadata"]["annotations"]["task_id"])] = pod
    return generated
