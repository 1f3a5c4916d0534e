"""DAG integrity: every file in dags/ imports, one DAG per valid category with the expected
shape and pod overrides, and a bad category entry is reported without taking the others down."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from category_pipeline.config import load_categories
from category_pipeline.dag_factory import category_asset
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
    expected = {f"category_{c.name}" for c in CATEGORIES} | {"advanced_data_pipeline", "staging_retention"}
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
    if step != "load":
        assert not container.env, "only the load step gets the warehouse credential"
        return
    (env,) = container.env
    assert env.name == "AIRFLOW_CONN_WAREHOUSE_DEFAULT"
    assert env.value is None, "credentials must come from a Secret, not a literal"
    assert env.value_from.secret_key_ref.name == WAREHOUSE_SECRET
    assert env.value_from.secret_key_ref.key == "uri"


def test_the_summary_extract_and_load_alone_get_the_warehouse(dagbag):
    """extract reads the loaded metrics from the warehouse, load writes the summary: both run in
    load pods (the NetworkPolicies let only step=load reach the warehouse); the rest gets nothing."""
    dag = dagbag.dags["advanced_data_pipeline"]
    for task in dag.tasks:
        pod = (task.executor_config or {}).get("pod_override")
        env = [e.name for c in pod.spec.containers for e in (c.env or [])] if pod else []
        if task.task_id in ("processing_tasks.extract", "load"):
            assert env == ["AIRFLOW_CONN_WAREHOUSE_DEFAULT"]
            assert pod.metadata.labels["airflow-platform.io/step"] == "load"
        else:
            assert not env, task.task_id


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
def test_category_load_publishes_the_category_asset_per_day(dagbag, category):
    load = dagbag.dags[category.dag_id].get_task("load")
    (asset,) = load.outlets
    assert asset == category_asset(category.name)
    assert load.asset_partition_key == "{{ ds }}"
    assert load.partition == {"category": category.name, "order_date": "{{ ds }}"}


def test_the_summary_runs_on_any_category_load_one_run_per_day(dagbag):
    dag = dagbag.dags["advanced_data_pipeline"]
    timetable = dag.timetable
    assert type(timetable).__name__ == "PartitionedAssetTimetable"
    assert type(timetable.asset_condition).__name__ == "AssetAny"
    assert set(timetable.asset_condition.objects) == {category_asset(c.name) for c in CATEGORIES}
    assert dag.max_active_runs == 1
    assert set(dag.task_group.children["processing_tasks"].children) == {
        "processing_tasks.extract", "processing_tasks.transform"}
    assert type(dag.get_task("load")).__name__ == "CustomLoadOperator"


# --- doc_md: every DAG's page tells a person what it does --------------------------------


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
def test_category_doc_md_gives_the_effective_config_flow_and_tables(dagbag, category):
    doc = dagbag.dags[category.dag_id].doc_md
    source = category.source
    expected = [
        f"`{category.name}`", f"**{source.kind}** source",
        f"`{category.schedule}` (UTC)" if category.schedule else "manual runs only",
        "logical date", "last complete day",
        f"{category.quality.min_rows:,} rows", f"{category.quality.max_bad_row_ratio:.0%}", "enforce_quality_gate",
        f"requests cpu {category.resources.process.requests.cpu}, memory {category.resources.process.requests.memory}",
        f"limits cpu {category.resources.load.limits.cpu}, memory {category.resources.load.limits.memory}",
        "`extract`", "`process.validate`", "`process.compute_metrics`", "`load`",
        "`orders`", "`category_daily_metrics`", f"<staging>/{category.name}/<date>/",
        f"`category_{category.name}_loaded`", "advanced_data_pipeline",
    ]
    expected += [f"{source.rows_per_day:,} rows a day"] if source.kind == "synthetic" else [source.uri]
    for text in expected:
        assert text in doc, f"{category.dag_id} doc_md lacks {text!r}"


def test_a_files_category_documents_its_uris(tmp_path, monkeypatch):
    path = _write_categories(tmp_path, [{"name": "garden", "schedule": None, "source": {
        "kind": "files", "uri": "s3://b/{category}/{ds}.csv", "catalog_uri": "s3://b/catalog.csv"}}])
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    doc = DagBag(dag_folder=DAGS, safe_mode=True).dags["category_garden"].doc_md
    assert "**files** source: orders `s3://b/{category}/{ds}.csv`, catalog `s3://b/catalog.csv`" in doc
    assert "manual runs only" in doc


def test_summary_and_maintenance_doc_md(dagbag):
    summary_doc = dagbag.dags["advanced_data_pipeline"].doc_md
    for text in ("`category_daily_metrics`", "quarantine", "`daily_sales_summary`", "never raw orders",
                 "partition key", "`category_<name>_loaded`", "late", '{"order_date": "YYYY-MM-DD"}',
                 "replaces the partition", "processing_tasks.extract"):
        assert text in summary_doc, f"advanced_data_pipeline doc_md lacks {text!r}"
    retention_doc = dagbag.dags["staging_retention"].doc_md
    assert "PIPELINE_STAGING_RETENTION_DAYS" in retention_doc and "once a day" in retention_doc
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id


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

    assert set(bag.dag_ids) == {"category_garden", "advanced_data_pipeline", "staging_retention"}
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
        "  - categories[1] (toys): field 'schedule': 'daily' is neither a cron expression nor '@daily'; "
        "a category processes one day per run: use '@daily' or 'M H * * *'"
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
    error, where, context = parser_error.value, parser_error.value.problem_mark, parser_error.value.context_mark
    # On one line: the file, the line and column (1-based), the parser's context and problem.
    expected = (
        f"{path}: line {where.line + 1}, column {where.column + 1}: not valid YAML: "
        f"{error.context} (line {context.line + 1}, column {context.column + 1}): {error.problem}"
    )
    for message in bag.import_errors.values():
        assert _raised(message, "CategoryFileError") == expected


# --- production conditions: a broken entry never takes the others down ------------------

HINT = "a category processes one day per run: use '@daily' or 'M H * * *'"
# In _write_text's file, the third line of the entry after garden (the cases' offending line);
# computed, since the shipped defaults above it grow.
ENTRY_LINE = (DAGS / "categories.yaml").read_text().split("\ncategories:\n")[0].count("\n") + 6


def _write_text(tmp_path: Path, entries: str) -> Path:
    """The shipped defaults and ``entries`` (YAML text of list items), written as text: the
    cases below are about how the text is written (unquoted dates, repeated keys)."""
    shipped = (DAGS / "categories.yaml").read_text()
    path = tmp_path / "categories.yaml"
    path.write_text(shipped.split("\ncategories:\n")[0] + "\ncategories:\n  - name: garden\n" + entries + "  - name: pets\n")
    return path


@pytest.mark.parametrize(
    "entry,problem",
    [
        (
            "  - name: toys\n    start_date: 2026-02-30\n",
            "field 'start_date': Input should be a valid date or datetime, day value is outside expected range",
        ),
        (
            "  - name: toys\n    retries: 1\n    retries: 3\n",
            f"field 'retries': duplicate key (line {ENTRY_LINE}): give it once",
        ),
        (
            "  - name: toys\n    source: {kind: files, uri: 's3://b/{category}/{date}.csv', catalog_uri: /c.csv}\n",
            "field 'source.uri': 's3://b/{category}/{date}.csv' has an unknown placeholder '{date}': "
            "only {category} and {ds} are filled in",
        ),
        ("  - name: toys\n    schedule: '0 * * * *'\n", f"field 'schedule': '0 * * * *' fires more than once a day; {HINT}"),
        ("  - name: toys\n    schedule: '@hourly'\n", f"field 'schedule': '@hourly' fires more than once a day; {HINT}"),
        ("  - name: toys\n    schedule: '0 3 * * 1-5'\n", f"field 'schedule': '0 3 * * 1-5' does not fire every day; {HINT}"),
        ("  - name: toys\n    quality: {max_bad_row_ratio: 2}\n", "field 'quality.max_bad_row_ratio': Input should be less than or equal to 1"),
        (
            "  - name: toys\n    execution_timeout_minutes: {load: 0}\n",
            "field 'execution_timeout_minutes.load': Input should be greater than 0",
        ),
        (f"  - name: {'t' * 10_000}\n", f"field 'name': '{'t' * 484}…"),
    ],
    ids=["impossible-date", "duplicate-key", "uri-placeholder", "hourly-cron", "hourly", "weekdays", "quality", "timeout", "long-name"],
)
def test_broken_entry_is_reported_while_the_others_and_the_advanced_pipeline_load(tmp_path, monkeypatch, entry, problem):
    path = _write_text(tmp_path, entry)
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)

    assert set(bag.dag_ids) == {"category_garden", "category_pets", "advanced_data_pipeline", "staging_retention"}
    (error_file,) = bag.import_errors
    assert Path(error_file).name == "category_config_check.py"
    label = "toys" if "toys" in entry else "t" * 79 + "…"
    assert _raised(bag.import_errors[error_file], "InvalidCategoryEntries") == (
        "1 invalid entry in categories.yaml (their DAGs are not generated; the other categories are unaffected):\n"
        f"  - categories[1] ({label}): {problem}"
    )


ALIAS = "YAML aliases are not supported"


@pytest.mark.parametrize(
    "entries,label,problem",
    [
        ("  - &toys\n    name: toys\n  - *toys\n", "*toys", f"line {ENTRY_LINE}: {ALIAS} (*toys): write the value out"),
        (
            "  - description: x\n"
            + "".join(f"    k{i}: &a{i} [" + ",".join([f"*a{i - 1}" if i else "lol"] * 9) + "]\n" for i in range(40))
            + "    name: *a39\n",
            "*a39",
            f"field 'k1[0]': line {ENTRY_LINE}: {ALIAS} (*a0): write the value out",
        ),
    ],
    ids=["alias", "alias-bomb"],
)
def test_alias_is_the_entrys_error_naming_the_line_others_still_load(tmp_path, monkeypatch, entries, label, problem):
    path = _write_text(tmp_path, entries)
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)

    assert set(bag.dag_ids) >= {"category_garden", "category_pets", "advanced_data_pipeline"}
    (error_file,) = bag.import_errors
    listed = _raised(bag.import_errors[error_file], "InvalidCategoryEntries")
    assert len(listed) < 3000
    assert listed.startswith(
        "1 invalid entry in categories.yaml (their DAGs are not generated; the other categories are unaffected):\n"
        f"  - categories[{1 if label == '*a39' else 2}] ({label}): {problem}"
    )


def test_alias_outside_the_entries_is_a_file_error_naming_the_line(tmp_path, monkeypatch):
    path = tmp_path / "categories.yaml"
    path.write_text("defaults: {owner: &me me, description: *me}\ncategories:\n  - name: garden\n")
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)

    assert "category_config_check.py" in {Path(p).name for p in bag.import_errors}
    for error in bag.import_errors.values():
        assert _raised(error, "CategoryFileError") == f"{path}: line 1: {ALIAS} (*me): write the value out"


def test_many_invalid_entries_are_listed_within_a_few_kb(tmp_path, monkeypatch):
    path = _write_categories(tmp_path, [{"name": "garden"}] + [{"name": f"t{i}", "retries": -1} for i in range(1000)])
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)

    assert set(bag.dag_ids) == {"category_garden", "advanced_data_pipeline", "staging_retention"}
    (message,) = bag.import_errors.values()
    listed = _raised(message, "InvalidCategoryEntries")
    assert len(listed) < 9000
    assert listed.startswith("1000 invalid entries in categories.yaml")
    assert "  - categories[1] (t0): field 'retries': Input should be greater than or equal to 0\n" in listed
    assert listed.endswith(" more")


def test_an_unusable_category_file_does_not_take_the_summary_dag_down(tmp_path, monkeypatch):
    path = tmp_path / "categories.yaml"
    path.write_text("categories: [ {name: home\n")
    monkeypatch.setenv("PIPELINE_CATEGORIES_FILE", str(path))
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert "advanced_data_pipeline" in bag.dag_ids
    assert "advanced_data_pipeline.py" not in {Path(p).name for p in bag.import_errors}


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.name)
def test_every_step_has_the_execution_timeout_of_its_category(dagbag, category):
    from datetime import timedelta

    dag = dagbag.dags[category.dag_id]
    minutes = category.execution_timeout_minutes
    expected = {"extract": minutes.extract, "process.validate": minutes.process,
                "process.compute_metrics": minutes.process, "load": minutes.load}
    for task_id, limit in expected.items():
        assert dag.get_task(task_id).execution_timeout == timedelta(minutes=limit), task_id
    for text in (f"extract {minutes.extract:g} min", f"process {minutes.process:g} min", f"load {minutes.load:g} min"):
        assert text in dag.doc_md
