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


def _assert_only_error(config, index: int, name: str, message: str) -> CategoryError:
    """Exactly one error, for entry ``index`` called ``name``, reading exactly ``message``:
    where (index, name, field) and what is wrong, as the README promises."""
    assert [str(e) for e in config.errors] == [message]
    error = config.errors[0]
    assert error.index == index
    assert error.name == name
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


# --- one bad entry, reported by index, name, field and the explanation -----------------
# Every expected message is written out in full: the explanation is what tells the author of
# the entry how to fix it, so it is asserted as exactly as the location.

NOT_A_SLUG = (
    "is not a slug: lower-case letters, digits and '_', starting with a letter, "
    "not ending in '_', at most 40 characters"
)
NOT_A_SCHEDULE = (
    "is neither a cron expression nor one of "
    "['@continuous', '@daily', '@hourly', '@monthly', '@once', '@weekly', '@yearly']"
)


def test_readme_example_message():
    config = _parse(_entry("a"), _entry("b"), _entry("c"), {"name": "toys", "source": {**SYNTHETIC, "rows_per_day": -1}})
    _assert_only_error(
        config, 3, "toys", "categories[3] (toys): field 'source.rows_per_day': Input should be greater than or equal to 0"
    )


@pytest.mark.parametrize(
    "name,message",
    [
        ("Electronics", f"categories[1] (Electronics): field 'name': 'Electronics' {NOT_A_SLUG}"),
        ("home goods", f"categories[1] (home goods): field 'name': 'home goods' {NOT_A_SLUG}"),
        ("home_", f"categories[1] (home_): field 'name': 'home_' {NOT_A_SLUG}"),
        ("a" * 41, f"categories[1] ({'a' * 41}): field 'name': '{'a' * 41}' {NOT_A_SLUG}"),
        ("1home", f"categories[1] (1home): field 'name': '1home' {NOT_A_SLUG}"),
        ("home-goods", f"categories[1] (home-goods): field 'name': 'home-goods' {NOT_A_SLUG}"),
        ("", f"categories[1] (): field 'name': '' {NOT_A_SLUG}"),
    ],
)
def test_bad_slug_is_reported(name, message):
    config = _bad_between_good(_entry(name))
    _assert_only_error(config, 1, name, message)


def test_slug_of_forty_characters_is_accepted():
    config = _parse(_entry("a" * 40))
    assert config.errors == ()


def test_name_with_trailing_newline_is_rejected():
    config = _bad_between_good(_entry("home\n"))
    # The value is shown with repr(), so the invisible newline is visible in the message.
    _assert_only_error(config, 1, "home\n", f"categories[1] (home\n): field 'name': 'home\\n' {NOT_A_SLUG}")


def test_duplicate_name_keeps_first_and_reports_second():
    config = _parse(_entry("a", retries=1), _entry("b"), _entry("a", retries=3))
    assert [c.name for c in config.categories] == ["a", "b"]
    assert config.categories[0].retries == 1
    _assert_only_error(config, 2, "a", "categories[2] (a): field 'name': duplicate of categories[0]")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"colour": "red"}, "categories[1] (x): field 'colour': unknown key"),
        (
            {"resources": {"process": {"requests": {"gpu": "1"}}}},
            "categories[1] (x): field 'resources.process.requests.gpu': unknown key",
        ),
        ({"resources": {"load": {"storage": {"cpu": "1"}}}}, "categories[1] (x): field 'resources.load.storage': unknown key"),
    ],
)
def test_unknown_key_is_reported(fields, message):
    config = _bad_between_good(_entry("x", **fields))
    _assert_only_error(config, 1, "x", message)


def test_unknown_key_in_source_is_reported():
    config = _bad_between_good({"name": "x", "source": {**SYNTHETIC, "rows": 5}})
    _assert_only_error(config, 1, "x", "categories[1] (x): field 'source.rows': unknown key")


@pytest.mark.parametrize(
    "schedule,message",
    [
        ("61 * * * *", f"categories[1] (x): field 'schedule': '61 * * * *' {NOT_A_SCHEDULE}"),
        ("every day", f"categories[1] (x): field 'schedule': 'every day' {NOT_A_SCHEDULE}"),
        ("@fortnightly", f"categories[1] (x): field 'schedule': '@fortnightly' {NOT_A_SCHEDULE}"),
        ("* * *", f"categories[1] (x): field 'schedule': '* * *' {NOT_A_SCHEDULE}"),
    ],
)
def test_bad_schedule_is_reported(schedule, message):
    config = _bad_between_good(_entry("x", schedule=schedule))
    _assert_only_error(config, 1, "x", message)


@pytest.mark.parametrize("schedule", sorted(SCHEDULE_PRESETS) + [None, "0 3 * * *", "*/15 * * * 1-5"])
def test_presets_cron_and_none_are_accepted(schedule):
    config = _parse(_entry("x", schedule=schedule))
    assert config.errors == ()
    assert config.categories[0].schedule == schedule


def test_negative_retries_is_reported():
    config = _bad_between_good(_entry("x", retries=-1))
    _assert_only_error(config, 1, "x", "categories[1] (x): field 'retries': Input should be greater than or equal to 0")


@pytest.mark.parametrize(
    "entry,message",
    [
        (_entry("x", retries=11), "categories[1] (x): field 'retries': Input should be less than or equal to 10"),
        (_entry("x", retry_delay_minutes=0), "categories[1] (x): field 'retry_delay_minutes': Input should be greater than 0"),
        (
            _entry("x", retry_delay_minutes=24 * 60 + 1),
            "categories[1] (x): field 'retry_delay_minutes': Input should be less than or equal to 1440",
        ),
        (_entry("x", owner=""), "categories[1] (x): field 'owner': String should have at least 1 character"),
        (
            {"name": "x", "source": {**SYNTHETIC, "rows_per_day": -1}},
            "categories[1] (x): field 'source.rows_per_day': Input should be greater than or equal to 0",
        ),
        (
            {"name": "x", "source": {**SYNTHETIC, "rows_per_day": 50_000_001}},
            "categories[1] (x): field 'source.rows_per_day': Input should be less than or equal to 50000000",
        ),
        (
            {"name": "x", "source": {**SYNTHETIC, "products": 0}},
            "categories[1] (x): field 'source.products': Input should be greater than or equal to 1",
        ),
        (
            {"name": "x", "source": {**SYNTHETIC, "bad_row_ratio": 1.5}},
            "categories[1] (x): field 'source.bad_row_ratio': Input should be less than or equal to 1",
        ),
    ],
    ids=["retries>10", "retry_delay=0", "retry_delay>1day", "owner-empty", "rows<0", "rows>max", "products<1", "ratio>1"],
)
def test_out_of_range_value_is_reported(entry, message):
    config = _bad_between_good(entry)
    _assert_only_error(config, 1, "x", message)


@pytest.mark.parametrize(
    "cpu,message",
    [
        ("1.5x", "categories[1] (x): field 'resources.load.limits.cpu': '1.5x' is not a cpu quantity (e.g. '500m' or '2')"),
        ("-1", "categories[1] (x): field 'resources.load.limits.cpu': '-1' is not a cpu quantity (e.g. '500m' or '2')"),
        ("abc", "categories[1] (x): field 'resources.load.limits.cpu': 'abc' is not a cpu quantity (e.g. '500m' or '2')"),
        ("500 m", "categories[1] (x): field 'resources.load.limits.cpu': '500 m' is not a cpu quantity (e.g. '500m' or '2')"),
        ("m", "categories[1] (x): field 'resources.load.limits.cpu': 'm' is not a cpu quantity (e.g. '500m' or '2')"),
    ],
)
def test_bad_cpu_quantity_is_reported(cpu, message):
    config = _bad_between_good(_entry("x", resources={"load": {"limits": {"cpu": cpu}}}))
    _assert_only_error(config, 1, "x", message)


@pytest.mark.parametrize(
    "memory,message",
    [
        (
            "1GB",
            "categories[1] (x): field 'resources.process.requests.memory': '1GB' is not a memory quantity (e.g. '512Mi' or '2Gi')",
        ),
        (
            "lots",
            "categories[1] (x): field 'resources.process.requests.memory': 'lots' is not a memory quantity (e.g. '512Mi' or '2Gi')",
        ),
        (
            "-1Gi",
            "categories[1] (x): field 'resources.process.requests.memory': '-1Gi' is not a memory quantity (e.g. '512Mi' or '2Gi')",
        ),
        (
            "Mi",
            "categories[1] (x): field 'resources.process.requests.memory': 'Mi' is not a memory quantity (e.g. '512Mi' or '2Gi')",
        ),
    ],
)
def test_bad_memory_quantity_is_reported(memory, message):
    config = _bad_between_good(_entry("x", resources={"process": {"requests": {"memory": memory}}}))
    _assert_only_error(config, 1, "x", message)


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
    _assert_only_error(
        config,
        1,
        "x",
        "categories[1] (x): field 'source': "
        "Input tag 'ftp' found using 'kind' does not match any of the expected tags: 'synthetic', 'files'",
    )


@pytest.mark.parametrize(
    "key,message",
    [
        ("uri", "categories[1] (x): field 'source.uri': '/d/{category}/{ds}.json' must end in .csv or .parquet"),
        ("catalog_uri", "categories[1] (x): field 'source.catalog_uri': '/d/{category}/{ds}.json' must end in .csv or .parquet"),
    ],
)
def test_files_source_without_csv_or_parquet_suffix_is_reported(key, message):
    source = {"kind": "files", "uri": "/d/{category}/{ds}.csv", "catalog_uri": "/d/catalog.parquet"}
    source[key] = "/d/{category}/{ds}.json"
    config = _bad_between_good({"name": "x", "source": source})
    _assert_only_error(config, 1, "x", message)


def test_files_source_with_csv_and_parquet_is_accepted():
    source = {"kind": "files", "uri": "/d/{category}/{ds}.csv", "catalog_uri": "/d/catalog.parquet"}
    config = _parse({"name": "x", "source": source})
    assert config.errors == ()
    assert config.categories[0].source.uri == source["uri"]


@pytest.mark.parametrize(
    "entry,label,message",
    [
        ("oops", "'oops'", "categories[1] ('oops'): entry must be a mapping"),
        (["name", "x"], "['name', 'x']", "categories[1] (['name', 'x']): entry must be a mapping"),
        (42, "42", "categories[1] (42): entry must be a mapping"),
        (None, "None", "categories[1] (None): entry must be a mapping"),
    ],
)
def test_entry_that_is_not_a_mapping_is_reported(entry, label, message):
    config = _bad_between_good(entry)
    _assert_only_error(config, 1, label, message)


@pytest.mark.parametrize(
    "entry,name,message",
    [
        ({"source": dict(SYNTHETIC)}, "<no name>", "categories[1] (<no name>): field 'name': Field required"),
        # DEFAULTS has no source, so an entry without one has none at all.
        ({"name": "x"}, "x", "categories[1] (x): field 'source': Field required"),
        (
            {"name": "x", "source": {"kind": "files", "uri": "/d/{category}/{ds}.csv"}},
            "x",
            "categories[1] (x): field 'source.catalog_uri': Field required",
        ),
        # Several problems of one entry: all of them, in one message, separated by "; ".
        (
            {"name": "x", "source": {"kind": "synthetic"}},
            "x",
            "categories[1] (x): field 'source.rows_per_day': Field required; field 'source.products': Field required",
        ),
    ],
    ids=["name", "source", "files-catalog_uri", "synthetic-rows-and-products"],
)
def test_missing_required_field_is_reported(entry, name, message):
    config = _bad_between_good(entry)
    _assert_only_error(config, 1, name, message)


@pytest.mark.parametrize(
    "entry,name,message",
    [
        (
            _entry("x", retries="three"),
            "x",
            "categories[1] (x): field 'retries': Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            _entry("x", retries=2.5),
            "x",
            "categories[1] (x): field 'retries': Input should be a valid integer, got a number with a fractional part",
        ),
        (
            _entry("x", start_date="tomorrow"),
            "x",
            "categories[1] (x): field 'start_date': Input should be a valid date or datetime, input is too short",
        ),
        (_entry("x", schedule=5), "x", "categories[1] (x): field 'schedule': Input should be a valid string"),
        ({"name": 5, "source": dict(SYNTHETIC)}, "5", "categories[1] (5): field 'name': Input should be a valid string"),
        (
            _entry("x", resources={"load": {"limits": {"cpu": True}}}),
            "x",
            "categories[1] (x): field 'resources.load.limits.cpu': Input should be a valid string",
        ),
        (
            _entry("x", resources={"load": "big"}),
            "x",
            "categories[1] (x): field 'resources.load': Input should be a valid dictionary or instance of PodResources",
        ),
        (
            _entry("x", source="synthetic"),
            "x",
            "categories[1] (x): field 'source': Input should be a valid dictionary or object to extract fields from",
        ),
    ],
    ids=["retries-str", "retries-float", "start_date", "schedule-int", "name-int", "cpu-bool", "resources-str", "source-str"],
)
def test_value_of_the_wrong_type_is_reported(entry, name, message):
    config = _bad_between_good(entry)
    _assert_only_error(config, 1, name, message)


def test_every_bad_entry_is_reported_and_every_good_one_kept():
    config = _parse(_entry("Bad"), _entry("ok"), _entry("x", retries=-5), "nope", _entry("ok2"), _entry("ok"))
    assert [c.name for c in config.categories] == ["ok", "ok2"]
    assert [e.index for e in config.errors] == [0, 2, 3, 5]
    assert [str(e) for e in config.errors] == [
        f"categories[0] (Bad): field 'name': 'Bad' {NOT_A_SLUG}",
        "categories[2] (x): field 'retries': Input should be greater than or equal to 0",
        "categories[3] ('nope'): entry must be a mapping",
        "categories[5] (ok): field 'name': duplicate of categories[1]",
    ]


# --- the file itself is unusable ------------------------------------------------------


def _yaml_parser_error(text: str) -> str:
    """What the YAML parser config.py uses (libyaml's when present) says about ``text``:
    its wording differs between libyaml and the pure-Python parser."""
    with pytest.raises(yaml.YAMLError) as raised:
        yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return str(raised.value)


def test_invalid_yaml_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("categories: [\n  - name: a\n")
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    parser_error = _yaml_parser_error("categories: [\n  - name: a\n")
    assert "line 2" in parser_error  # where in the file, for the reader
    assert str(raised.value) == f"{path}: not valid YAML: {parser_error}"


def test_missing_file_is_a_file_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: cannot read: [Errno 2] No such file or directory: '{path}'"


@pytest.mark.parametrize(
    "document",
    [{"defaults": {}}, {"categories": {"name": "a"}}, {"categories": None}, ["a"], None, "categories"],
)
def test_missing_categories_list_is_a_file_error(tmp_path, document):
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: expected a mapping with a 'categories' list"


def test_file_errors_of_a_document_name_the_default_source():
    with pytest.raises(CategoryFileError) as raised:
        parse_categories({"defaults": {}})
    assert str(raised.value) == "categories.yaml: expected a mapping with a 'categories' list"


def test_unknown_top_level_key_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump({"defaultz": {}, "categorie": [], "categories": []}))
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: unknown top-level keys ['categorie', 'defaultz']"


def test_defaults_not_a_mapping_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump({"defaults": ["owner"], "categories": []}))
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: 'defaults' must be a mapping"


def test_empty_file_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("")
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: expected a mapping with a 'categories' list"
