"""The KubernetesExecutor's pod template for the pod contract tests.

Where the official chart is available it is rendered with values.yaml and its
pod_template_file.yaml is used as is. Elsewhere (CI has no copy of the chart) the template
is assembled from the same values.yaml fields the chart's template reads: image, service
account, security contexts, resources, env, volumes. That fallback stands in for the chart
at a boundary that cannot exist here; the chart-rendered variant runs wherever it can.
"""

from __future__ import annotations

import yaml

from tests.support.helm import REPO, Unavailable, helm, official_chart

# Secrets the chart's template always wires into Airflow containers (names from values.yaml).
_BUILT_IN_SECRETS = [
    ("AIRFLOW__CORE__FERNET_KEY", "fernetKeySecretName", "fernet-key"),
    ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ("data", "metadataSecretName"), "connection"),
    ("AIRFLOW__API__SECRET_KEY", "apiSecretKeySecretName", "api-secret-key"),
    ("AIRFLOW__API_AUTH__JWT_SECRET", "jwtSecretName", "jwt-secret"),
]


def values() -> dict:
    return yaml.safe_load((REPO / "values.yaml").read_text())


def from_chart() -> dict:
    """Raises Unavailable where the official chart cannot be found."""
    output = helm("template", "airflow", str(official_chart()), "--namespace", "airflow", "-f", str(REPO / "values.yaml"))
    for doc in yaml.safe_load_all(output):
        if doc and doc["kind"] == "ConfigMap" and "pod_template_file.yaml" in doc.get("data", {}):
            return yaml.safe_load(doc["data"]["pod_template_file.yaml"])
    raise Unavailable("the rendered chart has no pod_template_file.yaml")


def from_values(v: dict | None = None) -> dict:
    v = v or values()
    image = f"{v['images']['airflow']['repository']}:{v['images']['airflow']['tag']}"
    env = [{"name": "AIRFLOW__CORE__EXECUTOR", "value": v["executor"]}]
    for name, key, secret_key in _BUILT_IN_SECRETS:
        secret = v[key[0]][key[1]] if isinstance(key, tuple) else v[key]
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}})
    env += v.get("env", [])
    workers = v["workers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "placeholder-name", "labels": {"tier": "airflow", "component": "worker", "release": "airflow"}},
        "spec": {
            "containers": [
                {
                    "name": "base",
                    "image": image,
                    "imagePullPolicy": v["images"]["airflow"]["pullPolicy"],
                    "env": env,
                    "resources": workers["resources"],
                    "securityContext": v["securityContexts"]["containers"],
                    "volumeMounts": [
                        {"name": "logs", "mountPath": "/opt/airflow/logs"},
                        {"name": "dags", "mountPath": "/opt/airflow/dags", "readOnly": True},
                        *workers["extraVolumeMounts"],
                    ],
                }
            ],
            "restartPolicy": "Never",
            "securityContext": v["securityContexts"]["pod"],
            "serviceAccountName": workers["serviceAccount"]["name"],
            "terminationGracePeriodSeconds": workers["terminationGracePeriodSeconds"],
            "volumes": [
                {"name": "dags", "emptyDir": {}},
                {"name": "logs", "persistentVolumeClaim": {"claimName": v["logs"]["persistence"]["existingClaim"]}},
                *workers["extraVolumes"],
            ],
        },
    }
