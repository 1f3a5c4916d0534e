"""DAG integrity: every file in dags/ imports, one DAG per valid category with the expected
shape and pod overrides, and a bad category entry is reported without taking the others down."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from category_pipeline.config import load_categories
from category_pipeline.k8s import WAREHOUSE_SECRET
from tests.conftest import DAGS

CATEGORIES = load_categories(DAGS / "categories.yaml").categories
CATEGORY_TASKS = {"start", "extract", "process.validate", "process.compute_metrics", "load", "end"}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=DAGS, safe_mode=True)


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_category_plus_the_advanced_pipeline(dagbag):
    expected = {f"category_{c.name}" for c in CATEGORIES} | {"advanced_data_pipeline"}
    assert {"category_electronics", "category_fashion", "category_home"} <= expected
    assert set(dagbag.dag_ids) == expected


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
def test_category_dag_shape(dagbag, category):
    dag = dagbag.dags[category.dag_id]
    assert set(dag.task_dict) == CATEGORY_TASKS
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == {
        ("start", "extract"),
        ("extract", "process.validate"),
        ("process.validate", "process.compute_metrics"),
        ("process.validate", "load"),
        ("process.compute_metrics", "load"),
        ("load", "end"),
    }
    assert dag.task_group.children["process"].children.keys() == {"process.validate", "process.compute_metrics"}
    assert type(dag.get_task("load")).__name__ == "CustomLoadOperator"
    assert type(dag.get_task("start")).__module__.startswith("airflow.providers.standard")
    assert dag.catchup is False
    assert dag.default_args["owner"] == category.owner
    assert dag.default_args["retries"] == category.retries


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
@pytest.mark.parametrize("task_id,step", [("process.validate", "process"), ("process.compute_metrics", "process"), ("load", "load")])
def test_heavy_steps_carry_a_pod_override_from_the_category_settings(dagbag, category, task_id, step):
    pod = dagbag.dags[category.dag_id].get_task(task_id).executor_config["pod_override"]
    expected = getattr(category.resources, step)
    (container,) = pod.spec.containers
    assert container.name == "base"
    assert container.resources.requests == expected.requests.model_dump()
    assert container.resources.limits == expected.limits.model_dump()
    assert pod.metadata.labels["airflow-platform.io/category"] == category.name
    assert pod.metadata.labels["airflow-platform.io/step"] == step
    (env,) = container.env
    assert env.name == "AIRFLOW_CONN_WAREHOUSE_DEFAULT"
    assert env.value is None, "credentials must come from a Secret, not a literal"
    assert env.value_from.secret_key_ref.name == WAREHOUSE_SECRET
    assert env.value_from.secret_key_ref.key == "uri"


def test_light_steps_run_with_the_default_pod(dagbag):
    dag = dagbag.dags["category_home"]
    assert not dag.get_task("extract").executor_config


def test_dags_survive_serialization_with_their_pod_overrides(dagbag):
    """The scheduler stores serialized DAGs: the pod overrides must round-trip."""
    for dag in dagbag.dags.values():
        restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        for task in dag.tasks:
            before = task.executor_config.get("pod_override") if task.executor_config else None
            after = restored.get_task(task.task_id).executor_config
            if before is not None:
                assert after["pod_override"].to_dict() == before.to_dict()


def _write_categories(tmp_path: Path, entries: list, defaults: dict | None = None) -> Path:
    shipped = yaml.safe_load((DAGS / "categories.yaml").read_text())
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump({"defaults": defaults or shipped["defaults"], "categories": entries}))
    return path


def _raised(import_error: str, exception: str) -> str:
    """The message of ``exception`` at the end of the traceback Airflow stores as an import error."""
    assert f"{exception}: " in import_error, import_error
    return import_error.rsplit(f"{exception}: ", 1)[1].removesuffix("\n")


def test_bad_category_entry_is_an_import_error_naming_entry_and_field_others_still_load(tmp_path, monkeypatch):
    path = _write_categories(
        tmp_path,
        [
            {"name": "garden"},
            {"name": "Toys & Games"},
            {"name": "books", "retries": -1},
            {"name": "sports", "resources": {"load": {"limits": {"cpu": "lots", "memory": "1Gi"}}}},
            {"name": "toys", "source": {"rows_per_day": -1}},
            "oops",
            {"name": "garden", "retries": 3},
        ],
    )
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)

    assert set(bag.dag_ids) == {"category_garden", "advanced_data_pipeline"}
    assert bag.dags["category_garden"].default_args["retries"] != 3, "the first garden entry keeps its DAG"
    (error_file,) = bag.import_errors
    assert Path(error_file).name == "category_config_check.py"
    # Every bad entry on a line of its own, complete: where it is and what is wrong with it.
    assert _raised(bag.import_errors[error_file], "InvalidCategoryEntries") == (
        "6 invalid entries in categories.yaml "
        "(their DAGs are not generated; the other categories are unaffected):\n"
        "  - categories[1] (Toys & Games): field 'name': 'Toys & Games' is not a slug: lower-case letters, digits "
        "and '_', starting with a letter, not ending in '_', at most 40 characters\n"
        "  - categories[2] (books): field 'retries': Input should be greater than or equal to 0\n"
        "  - categories[3] (sports): field 'resources.load.limits.cpu': 'lots' is not a cpu quantity (e.g. '500m' or '2')\n"
        "  - categories[4] (toys): field 'source.rows_per_day': Input should be greater than or equal to 0\n"
        "  - categories[5] ('oops'): entry must be a mapping\n"
        "  - categories[6] (garden): field 'name': duplicate of categories[0]"
    )


def test_one_bad_entry_is_reported_in_the_singular(tmp_path, monkeypatch):
    path = _write_categories(tmp_path, [{"name": "garden"}, {"name": "toys", "schedule": "daily"}])
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)

    (error_file,) = bag.import_errors
    assert _raised(bag.import_errors[error_file], "InvalidCategoryEntries") == (
        "1 invalid entry in categories.yaml (their DAGs are not generated; the other categories are unaffected):\n"
        "  - categories[1] (toys): field 'schedule': 'daily' is neither a cron expression nor one of "
        "['@continuous', '@daily', '@hourly', '@monthly', '@once', '@weekly', '@yearly']"
    )


def test_unreadable_category_file_is_reported(tmp_path, monkeypatch):
    path = tmp_path / "categories.yaml"
    path.write_text("categories: [ {name: home\n")
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert {Path(p).name for p in bag.import_errors} >= {"category_config_check.py"}
    # The parser's own explanation (its wording differs between libyaml and pure Python).
    with pytest.raises(yaml.YAMLError) as parser_error:
        yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert "line 2" in str(parser_error.value)
    expected = f"{path}: not valid YAML: {parser_error.value}"
    for message in bag.import_errors.values():
        assert _raised(message, "CategoryFileError") == expected
