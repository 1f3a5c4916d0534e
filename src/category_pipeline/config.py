"""Product categories as configuration.

``categories.yaml`` has a ``defaults`` mapping and a ``categories`` list; every entry is
merged over the defaults and validated on its own, so one broken entry is reported (by
entry and field) while every valid entry still becomes a DAG.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

# Also a valid Kubernetes label value: starts with a letter, ends alphanumeric.
SLUG = re.compile(r"^[a-z](?:[a-z0-9_]{0,38}[a-z0-9])?$")
# Kubernetes resource quantities as users write them: "500m", "2", "0.5", "512Mi", "1G".
CPU_QUANTITY = re.compile(r"^(\d+m|\d+(\.\d+)?)$")
MEMORY_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
QUANTITIES = {"cpu": (CPU_QUANTITY, "'500m' or '2'"), "memory": (MEMORY_QUANTITY, "'512Mi' or '2Gi'")}
# Airflow's presets; of these only '@daily' fits a category (one day per run).
SCHEDULE_PRESETS = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}
# The presets that fit (midnight UTC), as the cron they stand for (schedule.py uses it too).
DAILY_PRESETS = {"@daily": "0 0 * * *", "@midnight": "0 0 * * *"}
MORE_THAN_DAILY_PRESETS = {"@continuous", "@hourly"}
DAILY_SCHEDULE_HINT = "a category processes one day per run: use '@daily' or 'M H * * *'"
# The placeholders sources.py fills in a files source's uri and catalog_uri.
URI_PLACEHOLDERS = ("category", "ds")
# Error texts stay readable in the Airflow UI, whatever the file holds.
MAX_PROBLEM_CHARS = 500
MAX_LABEL_CHARS = 80
MAX_ERROR_CHARS = 2000
_NUMBER = re.compile(r"[0-9]{1,2}")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, a cut shown by a trailing '…'."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def daily_run_time(schedule: str | None) -> tuple[int, int] | None:
    """(hour, minute) of the day a category schedule fires at, in UTC; None when the DAG is
    manual only (``schedule`` None). A category processes one day per run, so any schedule
    that does not fire exactly once every day raises ValueError saying why."""
    if schedule is None:
        return None
    if not isinstance(schedule, str):
        raise ValueError(f"{clip(repr(schedule), 100)} is not a schedule; {DAILY_SCHEDULE_HINT}")
    shown = clip(repr(schedule), 100)
    if schedule in DAILY_PRESETS:
        return (0, 0)
    if schedule in MORE_THAN_DAILY_PRESETS:
        raise ValueError(f"{shown} fires more than once a day; {DAILY_SCHEDULE_HINT}")
    if schedule in SCHEDULE_PRESETS:
        raise ValueError(f"{shown} does not fire every day; {DAILY_SCHEDULE_HINT}")
    from croniter import croniter  # Airflow's own cron parser

    if schedule.startswith("@") or not croniter.is_valid(schedule):
        raise ValueError(f"{shown} is neither a cron expression nor '@daily'; {DAILY_SCHEDULE_HINT}")
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{shown} has {len(fields)} fields, not 5; {DAILY_SCHEDULE_HINT}")
    minute, hour, day_of_month, month, day_of_week = fields
    if not (_NUMBER.fullmatch(minute) and _NUMBER.fullmatch(hour) and int(minute) <= 59 and int(hour) <= 23):
        raise ValueError(f"{shown} fires more than once a day; {DAILY_SCHEDULE_HINT}")
    if (day_of_month, month, day_of_week) != ("*", "*", "*"):
        raise ValueError(f"{shown} does not fire every day; {DAILY_SCHEDULE_HINT}")
    return (int(hour), int(minute))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComputeResources(_Strict):
    cpu: str
    memory: str

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _unquoted_number(cls, value):
        # YAML reads `cpu: 2` as an int; Kubernetes manifests write it that way too.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str, info: ValidationInfo) -> str:
        pattern, example = QUANTITIES[info.field_name]
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a {info.field_name} quantity (e.g. {example})")
        return value


class PodResources(_Strict):
    requests: ComputeResources
    limits: ComputeResources


class StepResources(_Strict):
    process: PodResources
    load: PodResources


class SyntheticSource(_Strict):
    kind: Literal["synthetic"] = "synthetic"
    rows_per_day: int = Field(ge=0, le=50_000_000)
    products: int = Field(ge=1, le=100_000)
    # Share of deliberately broken rows, so that quarantine is exercised every day.
    bad_row_ratio: float = Field(default=0.02, ge=0.0, le=1.0)


class FileSource(_Strict):
    """Daily files; ``{category}`` and ``{ds}`` are filled in. CSV or Parquet by suffix."""

    kind: Literal["files"]
    uri: str = Field(min_length=1)
    catalog_uri: str = Field(min_length=1)

    @field_validator("uri", "catalog_uri")
    @classmethod
    def _format(cls, value: str) -> str:
        if not value.endswith((".csv", ".parquet")):
            raise ValueError(f"{value!r} must end in .csv or .parquet")
        return value

    @field_validator("uri", "catalog_uri")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        # Filled with str.format(category=..., ds=...) at run time: check that it will work.
        allowed = " and ".join(f"{{{name}}}" for name in URI_PLACEHOLDERS)
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a valid template ({exc}): only {allowed} are filled in, write '{{{{' and '}}}}' for literal braces"
            ) from None
        for _, field, spec, conversion in parts:
            if field is None:
                continue
            if field not in URI_PLACEHOLDERS or spec or conversion:
                shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"{value!r} has an unknown placeholder {shown!r}: only {allowed} are filled in")
        return value


class Quality(_Strict):
    """What a day's data must meet to be loaded (enforced by the DAG)."""

    min_rows: int = Field(default=1, ge=0)
    max_bad_row_ratio: float = Field(default=0.05, ge=0.0, le=1.0)


class ExecutionTimeouts(_Strict):
    """Minutes a step's task may run; ``process`` covers validate and compute_metrics."""

    extract: float = Field(default=30, gt=0, le=24 * 60)
    process: float = Field(default=60, gt=0, le=24 * 60)
    load: float = Field(default=60, gt=0, le=24 * 60)


# An Airflow connection id as it also works from an environment variable (AIRFLOW_CONN_<ID>).
CONN_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,249}$")
# An address as an on-call list writes it; the SMTP server has the last word.
EMAIL_ADDRESS = re.compile(r"^[^@\s,;<>\"']+@[^@\s,;<>\"']+\.[^@\s,;<>\"'.]+$")


# Keys someone may write where a connection id belongs: credentials stay in the connection.
CONNECTION_ONLY_KEYS = ("url", "host", "port", "login", "user", "username", "password", "token", "webhook_url")


def _no_credentials(value: Any) -> Any:
    if isinstance(value, dict):
        for key in CONNECTION_ONLY_KEYS:
            if key in value:
                raise ValueError(
                    f"{key!r} does not belong here: put it in the Airflow connection named by conn_id "
                    "(from a Secret), categories.yaml names only the connection"
                )
    return value


def _conn_id(value: str) -> str:
    if not CONN_ID.fullmatch(value):
        raise ValueError(
            f"{clip(repr(value), 100)} is not an Airflow connection id: letters, digits and '_', "
            "starting with a letter (it is also read as AIRFLOW_CONN_<ID>)"
        )
    return value


class EmailAlert(_Strict):
    """Mail through the SMTP connection ``conn_id`` (host, login, password: the connection's)."""

    conn_id: str
    to: tuple[str, ...]
    # None: the connection's extra "from_email".
    from_email: str | None = None

    _credentials = model_validator(mode="before")(_no_credentials)

    @field_validator("conn_id")
    @classmethod
    def _connection(cls, value: str) -> str:
        return _conn_id(value)

    @field_validator("to", mode="before")
    @classmethod
    def _one_address(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one address")
        for address in value:
            if not EMAIL_ADDRESS.fullmatch(address):
                raise ValueError(f"{clip(repr(address), 100)} is not an e-mail address (name@example.com)")
        return value

    @field_validator("from_email")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_ADDRESS.fullmatch(value):
            raise ValueError(f"{clip(repr(value), 100)} is not an e-mail address (name@example.com)")
        return value


class WebhookAlert(_Strict):
    """JSON posted to the URL of the HTTP connection ``conn_id`` (a Slack incoming webhook's
    URL is its secret: it lives in the connection, never here)."""

    conn_id: str

    _credentials = model_validator(mode="before")(_no_credentials)

    @field_validator("conn_id")
    @classmethod
    def _connection(cls, value: str) -> str:
        return _conn_id(value)


class Alerts(_Strict):
    """Who hears of a failed task (notifications.py). ``enabled: false`` keeps the settings
    but sends nothing; ``email: null`` or ``webhook: null`` drops one channel."""

    enabled: bool = Field(default=True, strict=True)
    email: EmailAlert | None = None
    webhook: WebhookAlert | None = None


class Category(_Strict):
    name: str
    owner: str = Field(min_length=1)
    schedule: str | None
    start_date: date
    retries: int = Field(ge=0, le=10)
    retry_delay_minutes: float = Field(gt=0, le=24 * 60)
    description: str = ""
    source: SyntheticSource | FileSource = Field(discriminator="kind")
    resources: StepResources
    quality: Quality = Field(default_factory=Quality)
    execution_timeout_minutes: ExecutionTimeouts = Field(default_factory=ExecutionTimeouts)
    alerts: Alerts = Field(default_factory=Alerts)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not isinstance(value, str) or not SLUG.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a slug: lower-case letters, digits and '_', "
                "starting with a letter, not ending in '_', at most 40 characters"
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        daily_run_time(value)  # raises when it does not fire exactly once a day
        return value

    @property
    def dag_id(self) -> str:
        return f"category_{self.name}"


@dataclass(frozen=True)
class CategoryError:
    """One invalid entry: where it is, what it is called, and what is wrong with it."""

    index: int
    name: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return clip(f"categories[{self.index}] ({self.name}): " + "; ".join(self.problems), MAX_ERROR_CHARS)


@dataclass(frozen=True)
class CategoryConfig:
    categories: tuple[Category, ...]
    errors: tuple[CategoryError, ...]
    # The defaults' alerts: for the DAGs that are no category (the summary).
    alerts: Alerts = Alerts()


class CategoryFileError(ValueError):
    """The file itself is unusable (missing, not YAML, wrong top-level shape)."""

    def __init__(self, message: str) -> None:
        super().__init__(clip(message, MAX_ERROR_CHARS))


class _Mapping(dict):
    """A YAML mapping that remembers where it is: the line of each key (1-based), and the
    keys given more than once (the last value is kept; the key is reported)."""

    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class _ConstructorMixin:
    """The safe constructor with three changes, so that no file can take the DAG processor
    down: duplicate keys are recorded (see _Mapping) instead of silently dropped; an
    impossible date (``2026-02-30``) stays a string, for pydantic to report the field; an
    alias (``*name``) is never expanded (see _Loader, _AliasLoader)."""

    def _construct_mapping(self, node):
        data = _Mapping()
        data.key_lines, data.duplicates = {}, []
        yield data
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys ('<<') are not supported: write the keys out", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=False)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                ) from None
            line = key_node.start_mark.line + 1
            if key in data:
                data.duplicates.append((key, line))
            else:
                data.key_lines[key] = line
            data[key] = self.construct_object(value_node, deep=False)

    def _construct_timestamp(self, node):
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


class _Loader(_ConstructorMixin, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The fast path (libyaml's parser when present: ~7x faster on a 1000-entry file, DAG
    parse time). Nodes are shared, so reaching one node twice is exactly an alias: then the
    file is read again by _AliasLoader, before anything is expanded."""

    def construct_object(self, node, deep=False):
        if node in self.constructed_objects or node in self.recursive_objects:
            raise _AliasFound()
        return super().construct_object(node, deep=deep)


@dataclass(frozen=True, repr=False)
class _Alias:
    """Where an alias stood: reported as an error of the entry (or the file) holding it."""

    anchor: str
    line: int

    def __repr__(self) -> str:
        return f"*{clip(self.anchor, 40)}"

    def problem(self) -> str:
        return f"line {self.line}: YAML aliases are not supported (*{clip(self.anchor, 40)}): write the value out"


_ALIAS_TAG = "!category-pipeline/alias"


class _AliasLoader(_ConstructorMixin, yaml.SafeLoader):
    """The pure-Python loader composing each alias as an _Alias marker, never as the node it
    names: an alias bomb costs nothing, and the error names the alias's own line."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            return yaml.ScalarNode(_ALIAS_TAG, event.anchor, event.start_mark, event.end_mark)
        return super().compose_node(parent, index)

    def _construct_alias(self, node):
        return _Alias(str(node.value), node.start_mark.line + 1)


class _AliasFound(Exception):
    pass


for _loader in (_Loader, _AliasLoader):
    _loader.add_constructor("tag:yaml.org,2002:map", _ConstructorMixin._construct_mapping)
    _loader.add_constructor("tag:yaml.org,2002:timestamp", _ConstructorMixin._construct_timestamp)
_AliasLoader.add_constructor(_ALIAS_TAG, _AliasLoader._construct_alias)


def _nodes(value: Any, path: str = ""):
    """(where, node) of ``value`` and of everything in it, e.g. ``source.uri``, ``x[0]``."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, f"{path}[{index}]")


def _aliases(value: Any) -> list[tuple[str, _Alias]]:
    """(where, alias) of every alias in ``value``, keys included, in file order."""
    found = []
    for path, node in _nodes(value):
        if isinstance(node, _Alias):
            found.append((path, node))
        elif isinstance(node, dict):
            found += [(path, key) for key in node if isinstance(key, _Alias)]
    return sorted(found, key=lambda item: item[1].line)


def _yaml_error(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"not valid YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = exc.context or ""
    if context and exc.context_mark is not None and exc.context_mark is not mark:
        context += f" (line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    problem = exc.problem or ""
    return f"{where}not valid YAML: " + ": ".join(part for part in (context, problem) if part)


def _merge(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in entry.items():
        if _other_kind(merged.get(key), value):
            merged[key] = value  # e.g. a files source replaces the default synthetic one whole
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _other_kind(default: Any, value: Any) -> bool:
    return (
        isinstance(default, dict)
        and isinstance(value, dict)
        and "kind" in value
        and value.get("kind") != default.get("kind")
    )


def _describe(error: ValidationError) -> tuple[str, ...]:
    problems = []
    for item in error.errors():
        # Drop pydantic's discriminator tags ("synthetic", "files") from the field path.
        loc = ".".join(str(part) for part in item["loc"] if part not in ("synthetic", "files"))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(clip(f"field '{loc}': {message}" if loc else message, MAX_PROBLEM_CHARS))
    return tuple(problems)


def _duplicate_keys(value: Any, path: str = "") -> list[tuple[str, Any, int]]:
    """(where, key, line) of every key given twice in ``value``'s mappings, in file order."""
    found = [
        (where, key, line)
        for where, node in _nodes(value, path)
        if isinstance(node, dict)
        for key, line in getattr(node, "duplicates", ())
    ]
    return sorted(found, key=lambda item: item[2])


def _duplicate_problem(path: str, key: Any, line: int) -> str:
    field = f"{path}.{key}" if path else str(key)
    return clip(f"field '{field}': duplicate key (line {line}): give it once", MAX_PROBLEM_CHARS)


def _key_line(document: Any, *keys: Any) -> str:
    lines = [getattr(document, "key_lines", {}).get(key) for key in keys]
    lines = [line for line in lines if line is not None]
    return f"line {min(lines)}: " if lines else ""


def parse_categories(document: Any, source: str = "categories.yaml") -> CategoryConfig:
    if not isinstance(document, dict) or not isinstance(document.get("categories"), list):
        where = _key_line(document, "categories") if isinstance(document, dict) else ""
        raise CategoryFileError(f"{source}: {where}expected a mapping with a 'categories' list")
    for key, line in getattr(document, "duplicates", ()):
        raise CategoryFileError(f"{source}: line {line}: duplicate top-level key {clip(repr(key), 100)}")
    unknown_top = set(document) - {"defaults", "categories"}
    if unknown_top:
        shown = clip(repr(sorted(map(str, unknown_top))), 500)
        raise CategoryFileError(f"{source}: {_key_line(document, *unknown_top)}unknown top-level keys {shown}")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CategoryFileError(f"{source}: {_key_line(document, 'defaults')}'defaults' must be a mapping")
    for path, key, line in _duplicate_keys(defaults, "defaults"):
        raise CategoryFileError(f"{source}: line {line}: duplicate key {clip(repr(key), 100)} in '{path}'")
    for _, alias in _aliases({key: value for key, value in document.items() if key != "categories"}):
        raise CategoryFileError(f"{source}: {alias.problem()}")
    alerts = _default_alerts(defaults, source)

    valid: list[Category] = []
    errors: list[CategoryError] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(document["categories"]):
        label = str(entry.get("name", "<no name>")) if isinstance(entry, dict) else repr(entry)
        label = clip(label, MAX_LABEL_CHARS)
        aliases = _aliases(entry)
        if aliases:
            problems = (f"field '{where}': {alias.problem()}" if where else alias.problem() for where, alias in aliases)
            errors.append(CategoryError(index, label, tuple(clip(p, MAX_PROBLEM_CHARS) for p in problems)))
            continue
        if not isinstance(entry, dict):
            errors.append(CategoryError(index, label, ("entry must be a mapping",)))
            continue
        duplicates = _duplicate_keys(entry)
        if duplicates:
            # Which of the values was meant is unknown: the entry is not used.
            errors.append(CategoryError(index, label, tuple(_duplicate_problem(*item) for item in duplicates)))
            continue
        try:
            category = Category.model_validate(_merge(defaults, entry))
        except ValidationError as exc:
            errors.append(CategoryError(index, label, _describe(exc)))
            continue
        if category.name in seen:
            # The first entry keeps its DAG; the repeat is the error.
            problem = f"field 'name': duplicate of categories[{seen[category.name]}]"
            errors.append(CategoryError(index, label, (problem,)))
            continue
        seen[category.name] = index
        valid.append(category)
    return CategoryConfig(tuple(valid), tuple(errors), alerts)


def _default_alerts(defaults: dict[str, Any], source: str) -> Alerts:
    """The defaults' alerts, checked once here: the summary DAG uses them as they are, and
    a broken one would otherwise be reported again by every entry."""
    value = defaults.get("alerts")
    try:
        return Alerts.model_validate({} if value is None else value)
    except ValidationError as exc:
        where = _key_line(defaults, "alerts")
        problems = "; ".join(
            problem.replace("field '", "field 'defaults.alerts.", 1) if problem.startswith("field '")
            else f"field 'defaults.alerts': {problem}"
            for problem in _describe(exc)
        )
        raise CategoryFileError(f"{source}: {where}{problems}") from None


def load_categories(path: str | Path) -> CategoryConfig:
    """The valid categories of the file and the errors of the others; CategoryFileError
    (naming the file and, where known, the line) when the file as a whole is unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CategoryFileError(f"{path}: cannot read: {exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CategoryFileError(f"{path}: line {line}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        document = yaml.load(text, Loader=_Loader)
    except _AliasFound:
        try:
            document = yaml.load(text, Loader=_AliasLoader)
        except yaml.YAMLError as exc:
            raise CategoryFileError(f"{path}: {_yaml_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise CategoryFileError(f"{path}: {_yaml_error(exc)}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a constructor's own error
        raise CategoryFileError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}") from None
    return parse_categories(document, source=str(path))


CATEGORIES_FILE_ENV = "PIPELINE_CATEGORIES_FILE"


def categories_file(dags_folder: str | Path) -> Path:
    """categories.yaml beside the DAG files (git-synced with them), unless overridden."""
    import os

    return Path(os.environ.get(CATEGORIES_FILE_ENV) or Path(dags_folder) / "categories.yaml")
