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


def _labels(step: str, category: str | None = None) -> dict[str, str]:
    # The step label is what the NetworkPolicies select on: only step=load reaches the warehouse.
    labels = {"app.kubernetes.io/part-of": "airflow-platform", f"{LABEL_PREFIX}/step": step}
    if category:
        labels[f"{LABEL_PREFIX}/category"] = category
    return labels


def _warehouse_env(step: str, conn_id: str) -> list[k8s.V1EnvVar]:
    # Least privilege: the warehouse credential reaches the load pods only.
    return [_secret_env(conn_id)] if step == "load" else []


def pod_override(category: Category, step: str, conn_id: str = WAREHOUSE_CONN_ID) -> k8s.V1Pod:
    """A category's heavy step: its resources and labels, and for ``load`` the warehouse."""
    resources = getattr(category.resources, step)
    return models.V1Pod(
        metadata=models.V1ObjectMeta(labels=_labels(step, category.name)),
        spec=models.V1PodSpec(
            containers=[
                models.V1Container(
                    name="base",  # the KubernetesExecutor's task container
                    resources=models.V1ResourceRequirements(
                        requests=resources.requests.model_dump(), limits=resources.limits.model_dump()
                    ),
                    env=_warehouse_env(step, conn_id),
                )
            ]
        ),
    )


def load_pod_override(conn_id: str = WAREHOUSE_CONN_ID) -> k8s.V1Pod:
    """A load outside the category DAGs (the summary): the pod template's resources, the load
    label and the warehouse connection."""
    return models.V1Pod(
        metadata=models.V1ObjectMeta(labels=_labels("load")),
        spec=models.V1PodSpec(containers=[models.V1Container(name="base", env=_warehouse_env("load", conn_id))]),
    )
