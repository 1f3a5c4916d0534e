"""Airflow DAGs of the product categories: one DAG, ``category_<name>``, per valid entry
of ``categories.yaml``. Invalid entries are skipped here and reported by
``category_config_check.py``, so that they never take the valid categories down."""

from __future__ import annotations

from pathlib import Path

# Airflow's DAG processor imports the airflow.* modules a DAG file names once, in its
# long-lived parent process (parsing_pre_import_modules), instead of in every parse. Name
# the heavy ones the factory uses: the task SDK and its TaskFlow decorators, the standard
# operators, and the Kubernetes provider whose models make the pod overrides (pod_generator
# also serializes them).
import airflow.providers.cncf.kubernetes.pod_generator  # noqa: F401
import airflow.providers.cncf.kubernetes.secret  # noqa: F401
import airflow.providers.standard.decorators.python  # noqa: F401
import airflow.providers.standard.operators.empty  # noqa: F401
import airflow.sdk  # noqa: F401
import airflow.sdk.definitions.decorators  # noqa: F401
from custom_load_operator import CustomLoadOperator

from category_pipeline.config import categories_file, load_categories
from category_pipeline.dag_factory import build_category_dag

for _category in load_categories(categories_file(Path(__file__).parent)).categories:
    globals()[_category.dag_id] = build_category_dag(_category, CustomLoadOperator)
