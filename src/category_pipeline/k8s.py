"""Pod overrides for the KubernetesExecutor: what a category's heavy steps need on top of
the pod template (which already sets the platform image and the git-synced DAGs)."""

from __future__ import annotations

import os

from functools import cache, partial

from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import Configuration
from kubernetes.client import models as k8s

from category_pipeline.config import Category

WAREHOUSE_CONN_ID = "warehouse_default"
# The Secret holding the warehouse connection URI (key "uri"); see charts/.
WAREHOUSE_SECRET = os.environ.get("PIPELINE_WAREHOUSE_SECRET_NAME", "warehouse-connection")
LABEL_PREFIX = "airflow-platform.io"

# Every model object built without a configuration copies the client's default one (logger
# setup included): that was half of the parse time of a 1000-category DAG file. One shared
# configuration serves them all.
_CONFIG = Configuration()


class _SharedConfigModels:
    """``kubernetes.client.models`` with the shared configuration bound in."""

    def __getattr__(self, name: str):
        return partial(getattr(k8s, name), local_vars_configuration=_CONFIG)


models = _SharedConfigModels()


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@cache
def _secret_env(conn_id: str) -> k8s.V1EnvVar:
    # The same for every category: built once per parse, not once per pod.
    return Secret("env", conn_env_var(conn_id), WAREHOUSE_SECRET, "uri").to_env_secret()


def pod_override(category: Category, step: str, conn_id: str = WAREHOUSE_CONN_ID) -> k8s.V1Pod:
    resources = getattr(category.resources, step)
    secret_env = _secret_env(conn_id)
    return models.V1Pod(
        metadata=models.V1ObjectMeta(
            labels={
                "app.kubernetes.io/part-of": "airflow-platform",
                f"{LABEL_PREFIX}/category": category.name,
                f"{LABEL_PREFIX}/step": step,
            }
        ),
        spec=models.V1PodSpec(
            containers=[
                models.V1Container(
                    name="base",  # the KubernetesExecutor's task container
                    resources=models.V1ResourceRequirements(
                        requests=resources.requests.model_dump(), limits=resources.limits.model_dump()
                    ),
                    env=[secret_env],
                )
            ]
        ),
    )
