"""Pod overrides for the KubernetesExecutor: what a category's heavy steps need on top of
the pod template (which already sets the platform image and the git-synced DAGs)."""

from __future__ import annotations

import os

from kubernetes.client import models as k8s

from category_pipeline.config import Category

WAREHOUSE_CONN_ID = "warehouse_default"
# The Secret holding the warehouse connection URI (key "uri"); see charts/.
WAREHOUSE_SECRET = os.environ.get("PIPELINE_WAREHOUSE_SECRET", "warehouse-connection")
LABEL_PREFIX = "airflow-platform.io"


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def pod_override(category: Category, step: str, conn_id: str = WAREHOUSE_CONN_ID) -> k8s.V1Pod:
    resources = getattr(category.resources, step)
    secret_env = k8s.V1EnvVar(
        name=conn_env_var(conn_id),
        value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(name=WAREHOUSE_SECRET, key="uri")),
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            labels={
                "app.kubernetes.io/part-of": "airflow-platform",
                f"{LABEL_PREFIX}/category": category.name,
                f"{LABEL_PREFIX}/step": step,
            }
        ),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="base",  # the KubernetesExecutor's task container
                    resources=k8s.V1ResourceRequirements(
                        requests=resources.requests.model_dump(), limits=resources.limits.model_dump()
                    ),
                    env=[secret_env],
                )
            ]
        ),
    )
