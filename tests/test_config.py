"""Category configuration: the shipped file, defaults merging, and per-entry validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from category_pipeline.config import (
    SCHEDULE_PRESETS,
    Alerts,
    EmailAlert,
    WebhookAlert,
    CategoryError,
    CategoryFileError,
    daily_run_time,
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
DAILY_HINT = "a category processes one day per run: use '@daily' or 'M H * * *'"
NOT_A_SCHEDULE = f"is neither a cron expression nor '@daily'; {DAILY_HINT}"


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


@pytest.mark.parametrize(
    "schedule,run_time", [("@daily", (0, 0)), ("@midnight", (0, 0)), (None, None), ("0 3 * * *", (3, 0)), ("59 23 * * *", (23, 59)), ("05  07 * * *", (7, 5))]
)
def test_daily_schedules_and_none_are_accepted(schedule, run_time):
    config = _parse(_entry("x", schedule=schedule))
    assert config.errors == ()
    assert config.categories[0].schedule == schedule
    assert daily_run_time(schedule) == run_time


MORE_THAN_DAILY = f"fires more than once a day; {DAILY_HINT}"
NOT_EVERY_DAY = f"does not fire every day; {DAILY_HINT}"


@pytest.mark.parametrize(
    "schedule,message",
    [
        ("@hourly", f"'@hourly' {MORE_THAN_DAILY}"),
        ("@continuous", f"'@continuous' {MORE_THAN_DAILY}"),
        ("@once", f"'@once' {NOT_EVERY_DAY}"),
        ("@weekly", f"'@weekly' {NOT_EVERY_DAY}"),
        ("@monthly", f"'@monthly' {NOT_EVERY_DAY}"),
        ("@yearly", f"'@yearly' {NOT_EVERY_DAY}"),
        ("0 * * * *", f"'0 * * * *' {MORE_THAN_DAILY}"),
        ("*/15 * * * *", f"'*/15 * * * *' {MORE_THAN_DAILY}"),
        ("*/15 * * * 1-5", f"'*/15 * * * 1-5' {MORE_THAN_DAILY}"),
        ("0 3,15 * * *", f"'0 3,15 * * *' {MORE_THAN_DAILY}"),
        ("0 */6 * * *", f"'0 */6 * * *' {MORE_THAN_DAILY}"),
        ("0,30 3 * * *", f"'0,30 3 * * *' {MORE_THAN_DAILY}"),
        ("0 3 * * 1-5", f"'0 3 * * 1-5' {NOT_EVERY_DAY}"),
        ("0 3 1 * *", f"'0 3 1 * *' {NOT_EVERY_DAY}"),
        ("0 3 * 1 *", f"'0 3 * 1 *' {NOT_EVERY_DAY}"),
        ("0 3 ? * *", f"'0 3 ? * *' {NOT_EVERY_DAY}"),
        ("0 3 * * * 0", f"'0 3 * * * 0' has 6 fields, not 5; {DAILY_HINT}"),
        ("@every_day", f"'@every_day' {NOT_A_SCHEDULE}"),
    ],
)
def test_schedule_not_once_a_day_is_reported(schedule, message):
    config = _bad_between_good(_entry("x", schedule=schedule))
    _assert_only_error(config, 1, "x", f"categories[1] (x): field 'schedule': {message}")
    with pytest.raises(ValueError) as raised:
        daily_run_time(schedule)
    assert str(raised.value) == message


def test_every_airflow_preset_but_daily_is_rejected():
    assert {preset for preset in SCHEDULE_PRESETS if not _parse(_entry("x", schedule=preset)).errors} == {"@daily"}


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


def _yaml_parser_error(text: str) -> yaml.MarkedYAMLError:
    """What the YAML parser config.py uses (libyaml's when present) says about ``text``:
    its wording differs between libyaml and the pure-Python parser."""
    with pytest.raises(yaml.MarkedYAMLError) as raised:
        yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return raised.value


def _one_line(error: yaml.MarkedYAMLError) -> str:
    """How config.py words a parser error: on one line, positions 1-based."""
    where, context = error.problem_mark, error.context_mark
    return (
        f"line {where.line + 1}, column {where.column + 1}: not valid YAML: "
        f"{error.context} (line {context.line + 1}, column {context.column + 1}): {error.problem}"
    )


def test_invalid_yaml_is_a_file_error_naming_file_and_line(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("categories: [\n  - name: a\n")
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    parser_error = _yaml_parser_error("categories: [\n  - name: a\n")
    assert "line 2" in str(parser_error)  # where in the file, for the reader
    assert str(raised.value) == f"{path}: {_one_line(parser_error)}"
    if hasattr(yaml, "CSafeLoader"):
        assert str(raised.value) == (
            f"{path}: line 2, column 3: not valid YAML: while parsing a flow node (line 2, column 3): "
            "did not find expected node content"
        )


def test_missing_file_is_a_file_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: cannot read: [Errno 2] No such file or directory: '{path}'"


@pytest.mark.parametrize(
    "document,where",
    [
        ({"defaults": {}}, ""),
        ({"categories": {"name": "a"}}, "line 1: "),
        ({"categories": None}, "line 1: "),
        (["a"], ""),
        (None, ""),
        ("categories", ""),
    ],
)
def test_missing_categories_list_is_a_file_error(tmp_path, document, where):
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: {where}expected a mapping with a 'categories' list"


def test_file_errors_of_a_document_name_the_default_source():
    with pytest.raises(CategoryFileError) as raised:
        parse_categories({"defaults": {}})
    assert str(raised.value) == "categories.yaml: expected a mapping with a 'categories' list"


def test_unknown_top_level_key_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("categories: []\ndefaultz: {}\ncategorie: []\n")
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    # The line of the first unknown key.
    assert str(raised.value) == f"{path}: line 2: unknown top-level keys ['categorie', 'defaultz']"


def test_defaults_not_a_mapping_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text(yaml.safe_dump({"defaults": ["owner"], "categories": []}))
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: line 2: 'defaults' must be a mapping"


def test_empty_file_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_text("")
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: expected a mapping with a 'categories' list"


# --- production conditions: no file can take the platform down -------------------------


def _load_text(tmp_path, text: str):
    path = tmp_path / "categories.yaml"
    path.write_text(text)
    return path, load_categories(path)


def _file_error(tmp_path, text: str) -> tuple[Path, str]:
    path = tmp_path / "categories.yaml"
    path.write_text(text)
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    return path, str(raised.value)


FILE_DEFAULTS = """\
defaults:
  source: {kind: synthetic, rows_per_day: 10, products: 2}
  owner: me
  schedule: "@daily"
  start_date: 2026-01-01
  retries: 1
  retry_delay_minutes: 5
  resources:
    process: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}
    load: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}
categories:
  - name: first
"""


@pytest.mark.parametrize(
    "value,message",
    [
        ("2026-02-30", "field 'start_date': Input should be a valid date or datetime, day value is outside expected range"),
        ("2026-13-01", "field 'start_date': Input should be a valid date or datetime, month value is outside expected range of 1-12"),
        ("2026-02-29", "field 'start_date': Input should be a valid date or datetime, day value is outside expected range"),
        (
            "2026-01-01 25:00:00",
            "field 'start_date': Input should be a valid date or datetime, hour value is outside expected range of 0-23",
        ),
    ],
)
def test_impossible_unquoted_date_is_the_entrys_error(tmp_path, value, message):
    _, config = _load_text(tmp_path, FILE_DEFAULTS + f"  - name: x\n    start_date: {value}\n  - name: last\n")
    assert [c.name for c in config.categories] == ["first", "last"]
    _assert_only_error(config, 1, "x", f"categories[1] (x): {message}")


def test_valid_unquoted_date_is_still_a_date(tmp_path):
    _, config = _load_text(tmp_path, FILE_DEFAULTS + "  - name: x\n    start_date: 2024-02-29\n")
    assert config.errors == ()
    assert str(config.categories[1].start_date) == "2024-02-29"


def test_impossible_date_in_defaults_is_every_entrys_error(tmp_path):
    _, config = _load_text(tmp_path, FILE_DEFAULTS.replace("2026-01-01", "2026-02-30"))
    assert config.categories == ()
    assert [str(e) for e in config.errors] == [
        "categories[0] (first): field 'start_date': Input should be a valid date or datetime, day value is outside expected range"
    ]


ALIAS = "YAML aliases are not supported"


def test_alias_in_an_entry_is_the_entrys_error_naming_its_line(tmp_path):
    text = FILE_DEFAULTS + "  - &entry\n    name: x\n    owner: &me you\n  - *entry\n  - name: y\n    owner: *me\n  - name: last\n"
    _, config = _load_text(tmp_path, text)
    assert [c.name for c in config.categories] == ["first", "x", "last"]  # an anchor alone is harmless
    assert [str(e) for e in config.errors] == [
        f"categories[2] (*entry): line 16: {ALIAS} (*entry): write the value out",
        f"categories[3] (y): field 'owner': line 18: {ALIAS} (*me): write the value out",
    ]


def test_alias_outside_the_entries_is_a_file_error_naming_its_line(tmp_path):
    text = FILE_DEFAULTS.replace("  owner: me\n", "  owner: &me me\n  description: *me\n")
    path, message = _file_error(tmp_path, text)
    assert message == f"{path}: line 4: {ALIAS} (*me): write the value out"


def _alias_bomb(levels: int) -> str:
    lines = ["    a0: &a0 [" + ",".join(["lol"] * 10) + "]"]
    lines += [f"    a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n    name: *a{levels - 1}\n"


def test_alias_bomb_is_rejected_at_once_with_a_short_message(tmp_path):
    import time

    started = time.monotonic()
    _, config = _load_text(tmp_path, FILE_DEFAULTS + "  - description: x\n" + _alias_bomb(30) + "  - name: last\n")
    assert time.monotonic() - started < 2
    assert [c.name for c in config.categories] == ["first", "last"]
    (error,) = config.errors
    assert error.name == "*a29"
    assert error.problems[:2] == (
        f"field 'a1[0]': line 15: {ALIAS} (*a0): write the value out",
        f"field 'a1[1]': line 15: {ALIAS} (*a0): write the value out",
    )
    assert len(error.problems) == 30 * 10 - 10 + 1
    assert len(str(error)) == 2000


def test_merge_key_is_a_file_error(tmp_path):
    path, message = _file_error(tmp_path, FILE_DEFAULTS + "  - <<: {owner: you}\n    name: x\n")
    assert message == f"{path}: line 13, column 5: not valid YAML: merge keys ('<<') are not supported: write the keys out"


def test_shipped_file_has_no_anchors_or_aliases():
    events = list(yaml.parse(SHIPPED.read_text()))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)]


def test_duplicate_key_in_an_entry_is_the_entrys_error(tmp_path):
    text = FILE_DEFAULTS + "  - name: x\n    retries: 1\n    retries: 2\n  - name: y\n    source:\n      products: 3\n      products: 4\n  - name: last\n"
    _, config = _load_text(tmp_path, text)
    assert [c.name for c in config.categories] == ["first", "last"]
    assert [str(e) for e in config.errors] == [
        "categories[1] (x): field 'retries': duplicate key (line 15): give it once",
        "categories[2] (y): field 'source.products': duplicate key (line 19): give it once",
    ]


def test_duplicate_name_key_in_an_entry_is_the_entrys_error(tmp_path):
    _, config = _load_text(tmp_path, FILE_DEFAULTS + "  - name: x\n    name: y\n")
    assert [str(e) for e in config.errors] == ["categories[1] (y): field 'name': duplicate key (line 14): give it once"]


@pytest.mark.parametrize(
    "text,message",
    [
        (FILE_DEFAULTS + "categories: []\n", "line 13: duplicate top-level key 'categories'"),
        (FILE_DEFAULTS.replace("  owner: me\n", "  owner: me\n  owner: you\n"), "line 4: duplicate key 'owner' in 'defaults'"),
        (
            FILE_DEFAULTS.replace("rows_per_day: 10,", "rows_per_day: 10, rows_per_day: 11,"),
            "line 2: duplicate key 'rows_per_day' in 'defaults.source'",
        ),
    ],
    ids=["top-level", "defaults", "defaults-nested"],
)
def test_duplicate_key_outside_the_entries_is_a_file_error(tmp_path, text, message):
    path, error = _file_error(tmp_path, text)
    assert error == f"{path}: {message}"


def test_file_not_utf8_is_a_file_error(tmp_path):
    path = tmp_path / "categories.yaml"
    path.write_bytes(b"categories:\n  - name: caf\xe9\n")
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == f"{path}: line 2: not UTF-8 text: invalid continuation byte at byte 25"


def test_long_values_are_shown_truncated(tmp_path):
    name = "N" * 100_000
    config = _bad_between_good(_entry(name, retries=-1, owner=""))
    (error,) = config.errors
    assert error.name == "N" * 79 + "…"
    # Each problem at most 500 characters, the value cut short.
    assert str(error) == (
        f"categories[1] ({'N' * 79}…): field 'name': '{'N' * 484}…; field 'owner': String should have at least "
        "1 character; field 'retries': Input should be greater than or equal to 0"
    )


def test_many_long_problems_are_capped_in_total():
    entry = _entry("x", **{f"k{i}" * 50: 1 for i in range(100)})
    (error,) = _parse(entry).errors
    assert len(error.problems) == 100
    assert len(str(error)) == 2000
    assert str(error).endswith("…")


def test_file_errors_are_capped():
    with pytest.raises(CategoryFileError) as raised:
        parse_categories({"categories": [], **{"k" * 1000 + str(i): 1 for i in range(100)}})
    assert len(str(raised.value)) <= 2000
    assert str(raised.value).startswith("categories.yaml: unknown top-level keys ['kkk")
    assert str(raised.value).endswith("…")


@pytest.mark.parametrize(
    "key,uri,message",
    [
        (
            "uri",
            "/d/{categroy}/{ds}.csv",
            "'/d/{categroy}/{ds}.csv' has an unknown placeholder '{categroy}': only {category} and {ds} are filled in",
        ),
        ("uri", "/d/{}/{ds}.csv", "'/d/{}/{ds}.csv' has an unknown placeholder '{}': only {category} and {ds} are filled in"),
        (
            "uri",
            "/d/{0}/{ds}.csv",
            "'/d/{0}/{ds}.csv' has an unknown placeholder '{0}': only {category} and {ds} are filled in",
        ),
        (
            "uri",
            "/d/{ds.year}.csv",
            "'/d/{ds.year}.csv' has an unknown placeholder '{ds.year}': only {category} and {ds} are filled in",
        ),
        (
            "catalog_uri",
            "/d/{ds:%Y}.csv",
            "'/d/{ds:%Y}.csv' has an unknown placeholder '{ds:%Y}': only {category} and {ds} are filled in",
        ),
        (
            "uri",
            "/d/{ds!r}.csv",
            "'/d/{ds!r}.csv' has an unknown placeholder '{ds!r}': only {category} and {ds} are filled in",
        ),
        (
            "uri",
            "/d/{category/{ds}.csv",
            "'/d/{category/{ds}.csv' is not a valid template (unexpected '{' in field name): "
            "only {category} and {ds} are filled in, write '{{' and '}}' for literal braces",
        ),
        (
            "catalog_uri",
            "/d/category}.csv",
            "'/d/category}.csv' is not a valid template (Single '}' encountered in format string): "
            "only {category} and {ds} are filled in, write '{{' and '}}' for literal braces",
        ),
        (
            "uri",
            "/d/{ds.csv",
            "'/d/{ds.csv' is not a valid template (expected '}' before end of string): "
            "only {category} and {ds} are filled in, write '{{' and '}}' for literal braces",
        ),
    ],
)
def test_files_source_with_unknown_placeholder_is_reported(key, uri, message):
    source = {"kind": "files", "uri": "/d/{category}/{ds}.csv", "catalog_uri": "/d/catalog.parquet"}
    source[key] = uri
    config = _bad_between_good({"name": "x", "source": source})
    _assert_only_error(config, 1, "x", f"categories[1] (x): field 'source.{key}': {message}")


def test_files_source_templates_that_fill_are_accepted():
    from category_pipeline.config import URI_PLACEHOLDERS

    source = {"kind": "files", "uri": "s3://b/{category}/{{raw}}/{ds}/{ds}.parquet", "catalog_uri": "/d/{category}.csv"}
    config = _parse({"name": "x", "source": source})
    assert config.errors == ()
    filled = config.categories[0].source.uri.format(**{name: "v" for name in URI_PLACEHOLDERS})
    assert filled == "s3://b/v/{raw}/v/v.parquet"


# --- quality and execution timeouts ------------------------------------------------------


def test_quality_and_timeouts_default_in_the_model_and_the_shipped_file():
    config = _parse(_entry("x"))
    category = config.categories[0]
    assert category.quality.model_dump() == {"min_rows": 1, "max_bad_row_ratio": 0.05}
    assert category.execution_timeout_minutes.model_dump() == {"extract": 30, "process": 60, "load": 60}
    shipped = yaml.safe_load(SHIPPED.read_text())["defaults"]
    assert shipped["quality"] == category.quality.model_dump()
    assert shipped["execution_timeout_minutes"] == category.execution_timeout_minutes.model_dump()


def test_quality_and_timeouts_merge_key_by_key():
    defaults = {**DEFAULTS, "quality": {"min_rows": 10, "max_bad_row_ratio": 0.1}, "execution_timeout_minutes": {"load": 90}}
    config = _parse(
        _entry("x", quality={"max_bad_row_ratio": 0.2}, execution_timeout_minutes={"extract": 5}), _entry("y"), defaults=defaults
    )
    x, y = config.categories
    assert (x.quality.min_rows, x.quality.max_bad_row_ratio) == (10, 0.2)
    assert x.execution_timeout_minutes.model_dump() == {"extract": 5, "process": 60, "load": 90}
    assert (y.quality.min_rows, y.quality.max_bad_row_ratio) == (10, 0.1)
    assert y.execution_timeout_minutes.model_dump() == {"extract": 30, "process": 60, "load": 90}


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"quality": {"min_rows": -1}}, "field 'quality.min_rows': Input should be greater than or equal to 0"),
        (
            {"quality": {"min_rows": 1.5}},
            "field 'quality.min_rows': Input should be a valid integer, got a number with a fractional part",
        ),
        ({"quality": {"max_bad_row_ratio": 1.01}}, "field 'quality.max_bad_row_ratio': Input should be less than or equal to 1"),
        ({"quality": {"max_bad_row_ratio": -0.1}}, "field 'quality.max_bad_row_ratio': Input should be greater than or equal to 0"),
        ({"quality": {"min_row": 1}}, "field 'quality.min_row': unknown key"),
        ({"quality": 5}, "field 'quality': Input should be a valid dictionary or instance of Quality"),
        ({"execution_timeout_minutes": {"extract": 0}}, "field 'execution_timeout_minutes.extract': Input should be greater than 0"),
        ({"execution_timeout_minutes": {"process": -5}}, "field 'execution_timeout_minutes.process': Input should be greater than 0"),
        (
            {"execution_timeout_minutes": {"load": 24 * 60 + 1}},
            "field 'execution_timeout_minutes.load': Input should be less than or equal to 1440",
        ),
        ({"execution_timeout_minutes": {"validate": 5}}, "field 'execution_timeout_minutes.validate': unknown key"),
    ],
)
def test_bad_quality_or_timeout_is_reported(fields, message):
    config = _bad_between_good(_entry("x", **fields))
    _assert_only_error(config, 1, "x", f"categories[1] (x): {message}")


def test_timeouts_of_a_whole_day_are_accepted():
    config = _parse(_entry("x", execution_timeout_minutes={"extract": 0.5, "process": 24 * 60, "load": 24 * 60}))
    assert config.errors == ()


# --- alerts (notifications.py) ------------------------------------------------------------

ALERTS = {
    "enabled": False,
    "email": {"conn_id": "smtp_alerts", "to": ["oncall@example.com"]},
    "webhook": {"conn_id": "alerts_webhook"},
}


def test_alerts_default_to_none_and_the_shipped_file_only_names_connections():
    assert Alerts() == Alerts(enabled=True, email=None, webhook=None)
    assert _parse(_entry("x")).categories[0].alerts == Alerts()
    assert _parse(_entry("x")).alerts == Alerts()

    shipped = load_categories(SHIPPED)
    # Off until the connections exist; naming connection ids only (no credential can be given).
    assert shipped.alerts == Alerts(
        enabled=False,
        email=EmailAlert(conn_id="smtp_alerts", to=("data-platform-oncall@example.com",)),
        webhook=WebhookAlert(conn_id="alerts_webhook"),
    )
    assert all(category.alerts == shipped.alerts for category in shipped.categories)


def test_alerts_merge_key_by_key_and_a_category_can_drop_a_channel():
    config = _parse(
        _entry("on", alerts={"enabled": True}),
        _entry("own_list", alerts={"email": {"to": "home@example.com"}}),
        _entry("mail_only", alerts={"enabled": True, "webhook": None}),
        defaults={**DEFAULTS, "alerts": ALERTS},
    )
    assert config.errors == ()
    alerts = {c.name: c.alerts for c in config.categories}
    assert alerts["on"] == Alerts.model_validate({**ALERTS, "enabled": True})
    # A list replaces the defaults' list; the connection still comes from the defaults.
    assert alerts["own_list"].email == EmailAlert(conn_id="smtp_alerts", to=("home@example.com",))
    assert alerts["own_list"].enabled is False
    assert alerts["mail_only"].webhook is None and alerts["mail_only"].email == alerts["on"].email
    # The summary DAG's: the defaults' own.
    assert config.alerts == Alerts.model_validate(ALERTS)


@pytest.mark.parametrize(
    "alerts,message",
    [
        ({"email": {"conn_id": "smtp_alerts"}}, "field 'alerts.email.to': Field required"),
        ({"email": {"to": ["a@example.com"]}}, "field 'alerts.email.conn_id': Field required"),
        ({"email": {"conn_id": "smtp_alerts", "to": []}}, "field 'alerts.email.to': give at least one address"),
        (
            {"email": {"conn_id": "smtp_alerts", "to": ["oncall"]}},
            "field 'alerts.email.to': 'oncall' is not an e-mail address (name@example.com)",
        ),
        (
            {"email": {"conn_id": "smtp_alerts", "to": "a@example.com", "from_email": "airflow"}},
            "field 'alerts.email.from_email': 'airflow' is not an e-mail address (name@example.com)",
        ),
        (
            {"email": {"conn_id": "smtp-alerts", "to": "a@example.com"}},
            "field 'alerts.email.conn_id': 'smtp-alerts' is not an Airflow connection id: letters, digits and '_', "
            "starting with a letter (it is also read as AIRFLOW_CONN_<ID>)",
        ),
        (
            {"email": {"conn_id": "smtp_alerts", "to": "a@example.com", "password": "hunter2"}},
            "field 'alerts.email': 'password' does not belong here: put it in the Airflow connection named by "
            "conn_id (from a Secret), categories.yaml names only the connection",
        ),
        (
            {"webhook": {"conn_id": "alerts_webhook", "url": "https://hooks.slack.com/services/T/B/secret"}},
            "field 'alerts.webhook': 'url' does not belong here: put it in the Airflow connection named by "
            "conn_id (from a Secret), categories.yaml names only the connection",
        ),
        ({"webhook": {}}, "field 'alerts.webhook.conn_id': Field required"),
        ({"slack": {"conn_id": "alerts_webhook"}}, "field 'alerts.slack': unknown key"),
        ({"enabled": "yes"}, "field 'alerts.enabled': Input should be a valid boolean"),
        ({"email": "oncall@example.com"}, "field 'alerts.email': Input should be a valid dictionary or instance of EmailAlert"),
        ("oncall@example.com", "field 'alerts': Input should be a valid dictionary or instance of Alerts"),
    ],
)
def test_bad_alerts_of_an_entry_are_its_error(alerts, message):
    config = _bad_between_good(_entry("x", alerts=alerts))
    _assert_only_error(config, 1, "x", f"categories[1] (x): {message}")


def test_bad_alerts_in_defaults_are_one_file_error_naming_field_and_line(tmp_path):
    path = tmp_path / "categories.yaml"
    document = {"defaults": {**DEFAULTS, "alerts": {"email": {"conn_id": "smtp alerts", "to": []}}},
                "categories": [_entry("x")]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    line = path.read_text().splitlines().index("  alerts:") + 1
    with pytest.raises(CategoryFileError) as raised:
        load_categories(path)
    assert str(raised.value) == (
        f"{path}: line {line}: field 'defaults.alerts.email.conn_id': 'smtp alerts' is not an Airflow connection id: "
        "letters, digits and '_', starting with a letter (it is also read as AIRFLOW_CONN_<ID>); "
        "field 'defaults.alerts.email.to': give at least one address"
    )


def test_alerts_null_in_defaults_means_none():
    assert _parse(_entry("x"), defaults={**DEFAULTS, "alerts": None}).alerts == Alerts()
