"""Category configuration: the shipped file, defaults merging, and per-entry validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from category_pipeline.config import (
    SCHEDULE_PRESETS,
    CategoryError,
    CategoryFileError,
    load_categories,
    parse_categories,
)

SHIPPED = Path(__file__).resolve().parent.parent / "dags" / "categories.yaml"

# Defaults without a source: each entry brings its own (see _entry), so that a bad field
# is the only problem of its entry.
DEFAULTS = {
    "owner": "data-platform",
    "schedule": "@daily",
    "start_date": "2026-01-01",
    "retries": 2,
    "retry_delay_minutes": 5,
    "resources": {
        "process": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "load": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    },
}
SYNTHETIC = {"kind": "synthetic", "rows_per_day": 100, "products": 5}


def _entry(name: str, **fields) -> dict:
    return {"name": name, "source": dict(SYNTHETIC), **fields}


def _parse(*entries, defaults=DEFAULTS):
    return parse_categories({"defaults": copy.deepcopy(defaults), "categories": list(entries)})


def _assert_only_error(config, index: int, name: str, field: str) -> CategoryError:
    """Exactly one error, for entry ``index``; it names the entry and the field."""
    assert len(config.errors) == 1, [str(e) for e in config.errors]
    error = config.errors[0]
    assert error.index == index
    assert error.name == name
    assert any(f"'{field}'" in problem for problem in error.problems), error.problems
    text = str(error)
    assert f"categories[{index}]" in text
    assert field in text
    return error


def _bad_between_good(bad: dict):
    """The bad entry at index 1, valid entries around it (which must survive)."""
    config = _parse(_entry("first"), bad, _entry("last"))
    assert [c.name for c in config.categories] == ["first", "last"]
    return config


# --- the shipped file -------------------------------------------------------------------


def test_shipped_file_is_valid():
    config = load_categories(SHIPPED)
    assert config.errors == ()
    assert {c.name for c in config.categories} == {"electronics", "fashion", "home"}


def test_shipped_entries_override_defaults_and_inherit_the_rest():
    document = yaml.safe_load(SHIPPED.read_text())
    defaults = document["defaults"]
    entries = {entry["name"]: entry for entry in document["categories"]}
    config = {c.name: c for c in load_categories(SHIPPED).categories}

    electronics = config["electronics"]
    assert electronics.source.rows_per_day == entries["electronics"]["source"]["rows_per_day"]
    assert electronics.source.products == entries["electronics"]["source"]["products"]
    assert electronics.source.bad_row_ratio == defaults["source"]["bad_row_ratio"]
    assert electronics.resources.process.requests.cpu == entries["electronics"]["resources"]["process"]["requests"]["cpu"]
    assert electronics.resources.load.limits.memory == defaults["resources"]["load"]["limits"]["memory"]
    assert config["home"].schedule == entries["home"]["schedule"]
    assert config["fashion"].schedule == defaults["schedule"]
    assert config["fashion"].retries == defaults["retries"]


# --- defaults merging ------------------------------------------------------------------


def test_nested_defaults_merge_key_by_key():
    config = _parse(_entry("a", resources={"process": {"limits": {"cpu": "3"}}}))
    resources = config.categories[0].resources
    assert resources.process.limits.cpu == "3"
    assert resources.process.limits.memory == DEFAULTS["resources"]["process"]["limits"]["memory"]
    assert resources.process.requests.cpu == DEFAULTS["resources"]["process"]["requests"]["cpu"]
    assert resources.load.requests.memory == DEFAULTS["resources"]["load"]["requests"]["memory"]


def test_entry_value_wins_over_default():
    config = _parse(_entry("a", retries=7, owner="someone"))
    assert config.categories[0].retries == 7
    assert config.categories[0].owner == "someone"


def test_one_entrys_override_does_not_leak_into_the_next():
    config = _parse(_entry("a", resources={"load": {"limits": {"cpu": "4"}}}), _entry("b"))
    assert config.categories[1].resources.load.limits.cpu == DEFAULTS["resources"]["load"]["limits"]["cpu"]


def test_files_source_entry_over_shipped_defaults_is_valid():
    document = yaml.safe_load(SHIPPED.read_text())
    document["categories"] = [
        {"name": "books", "source": {"kind": "files", "uri": "/d/{category}/{ds}.csv", "catalog_uri": "/d/c.csv"}}
    ]
    config = parse_categories(document)
    assert config.errors == ()
    assert config.categories[0].source.kind == "files"


# --- one bad entry, reported by index, name and field ---------------------------------


@pytest.mark.parametrize("name", ["Electronics", "home goods", "home_", "a" * 41, "1home", "home-goods", ""])
def test_bad_slug_is_reported(name):
    config = _bad_between_good(_entry(name))
    _assert_only_error(config, 1, name, "name")


def test_slug_of_forty_characters_is_accepted():
    config = _parse(_entry("a" * 40))
    assert config.errors == ()


def test_name_with_trailing_newline_is_rejected():
    config = _bad_between_good(_entry("home\n"))
    _assert_only_error(config, 1, "home\n", "name")


def test_duplicate_name_keeps_first_and_reports_second():
    config = _parse(_entry("a", retries=1), _entry("b"), _entry("a", retries=3))
    assert [c.name for c in config.categories] == ["a", "b"]
    assert config.categories[0].retries == 1
    error = _assert_only_error(config, 2, "a", "name")
    assert "categories[0]" in str(error)


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"colour": "red"}, "colour"),
        ({"resources": {"process": {"requests": {"gpu": "1"}}}}, "resources.process.requests.gpu"),
        ({"resources": {"load": {"storage": {"cpu": "1"}}}}, "resources.load.storage"),
    ],
)
def test_unknown_key_is_reported(fields, field):
    config = _bad_between_good(_entry("x", **fields))
    error = _assert_only_error(config, 1, "x", field)
    assert "unknown key" in str(error)


def test_unknown_key_in_source_is_reported():
    config = _bad_between_good({"name": "x", "source": {**SYNTHETIC, "rows": 5}})
    _assert_only_error(config, 1, "x", "source.rows")


@pytest.mark.parametrize("schedule", ["61 * * * *", "every day", "@fortnightly", "* * *"])
def test_bad_schedule_is_reported(schedule):
    config = _bad_between_good(_entry("x", schedule=schedule))
    _assert_only_error(config, 1, "x", "schedule")


@pytest.mark.parametrize("schedule", sorted(SCHEDULE_PRESETS) + [None, "0 3 * * *", "*/15 * * * 1-5"])
def test_presets_cron_and_none_are_accepted(schedule):
    config = _parse(_entry("x", schedule=schedule))
    assert config.errors == ()
    assert config.categories[0].schedule == schedule


def test_negative_retries_is_reported():
    config = _bad_between_good(_entry("x", retries=-1))
    _assert_only_error(config, 1, "x", "retries")


@pytest.mark.parametrize("cpu", ["1.5x", "-1", "abc", "500 m", "m"])
def test_bad_cpu_quantity_is_reported(cpu):
    config = _bad_between_good(_entry("x", resources={"load": {"limits": {"cpu": cpu}}}))
    _assert_only_error(config, 1, "x", "resources.load.limits.cpu")


@pytest.mark.parametrize("memory", ["1GB", "lots", "-1Gi", "Mi"])
def test_bad_memory_quantity_is_reported(memory):
    config = _bad_between_good(_entry("x", resources={"process": {"requests": {"memory": memory}}}))
    _assert_only_error(config, 1, "x", "resources.process.requests.memory")


@pytest.mark.parametrize("cpu,memory", [("500m", "512Mi"), ("2", "2Gi"), ("0.5", "1G"), ("1500m", "1073741824")])
def test_quantities_as_strings_are_accepted(cpu, memory):
    config = _parse(_entry("x", resources={"load": {"limits": {"cpu": cpu, "memory": memory}}}))
    assert config.errors == ()
    assert config.categories[0].resources.load.limits.cpu == cpu


def test_unquoted_integer_cpu_is_accepted():
    document = yaml.safe_load("cpu: 2\nmemory: 1Gi\n")
    config = _parse(_entry("x", resources={"load": {"limits": document}}))
    assert config.errors == ()
    assert config.categories[0].resources.load.limits.cpu == "2"


def test_unknown_source_kind_is_reported():
    config = _bad_between_good({"name": "x", "source": {"kind": "ftp", "uri": "a.csv"}})
    _assert_only_error(config, 1, "x", "source")


@pytest.mark.parametrize("key", ["uri", "catalog_uri"])
def test_files_source_without_csv_or_parquet_suffix_is_reported(key):
    source = {"kind": "files", "uri": "/d/{category}/{ds}.csv", "catalog_uri": "/d/catalog.parquet"}
    source[key] = "/d/{category}/{ds}.json"
    config = _bad_between_good({"name": "x", "source": source})
    _assert_only_error(config, 1, "x", f"source.{key}")


def test_files_source_with_csv_and_parquet_is_accepted():
    source = {"kind": "files", "uri": "/d/{category}/{ds}.csv", "catalog_uri": "/d/catalog.parquet"}
    config = _parse({"name": "x", "source": source})
    assert config.errors == ()
    assert config.categories[0].source.uri == source["uri"]


@pytest.mark.parametrize("entry", ["oops", ["name", "x"], 42, None])
def test_entry_that_is_not_a_mapping_is_reported(entry):
    config = _bad_between_good(entry)
    assert len(config.errors) == 1
    error = config.errors[0]
    assert error.index == 1
    assert "categories[1]" in str(error)
    assert "mapping" in str(error)


def test_every_bad_entry_is_reported_and_every_good_one_kept():
    config = _parse(_entry("Bad"), _entry("ok"), _entry("x", retries=-5), "nope", _entry("ok2"))
    assert [c.name for c in config.categories] == ["ok", "ok2"]
    assert [e.index for e in config.errors] == [0, 2, 3]


# --- the file itself is unusable ------------------------------------------------------


def test_invalid_yaml_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("categories: [\n  - name: a\n")
    with pytest.raises(CategoryFileError, match="not valid YAML"):
        load_categories(path)


def test_missing_file_is_a_file_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(CategoryFileError, match="nope.yaml"):
        load_categories(path)


@pytest.mark.parametrize(
    "document",
    [{"defaults": {}}, {"categories": {"name": "a"}}, {"categories": None}, ["a"], None, "categories"],
)
def test_missing_categories_list_is_a_file_error(document):
    with pytest.raises(CategoryFileError, match="'categories' list"):
        parse_categories(document)


def test_unknown_top_level_key_is_a_file_error():
    with pytest.raises(CategoryFileError, match="defaultz"):
        parse_categories({"defaultz": {}, "categories": []})


def test_defaults_not_a_mapping_is_a_file_error():
    with pytest.raises(CategoryFileError, match="defaults"):
        parse_categories({"defaults": ["owner"], "categories": []})


def test_empty_file_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("")
    with pytest.raises(CategoryFileError):
        load_categories(path)
