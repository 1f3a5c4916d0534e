"""Airflow DAGs of the product categories: one DAG, ``category_<name>``, per valid entry
of ``categories.yaml``. Invalid entries are skipped here and reported by
``category_config_check.py``, so that they never take the valid categories down."""

from __future__ import annotations

from pathlib import Path

from custom_load_operator import CustomLoadOperator

from category_pipeline.config import categories_file, load_categories
from category_pipeline.dag_factory import build_category_dag

for _category in load_categories(categories_file(Path(__file__).parent)).categories:
    globals()[_category.dag_id] = build_category_dag(_category, CustomLoadOperator)
