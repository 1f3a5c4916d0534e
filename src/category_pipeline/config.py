"""Product categories as configuration.

``categories.yaml`` has a ``defaults`` mapping and a ``categories`` list; every entry is
merged over the defaults and validated on its own, so one broken entry is reported (by
entry and field) while every valid entry still becomes a DAG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

# Also a valid Kubernetes label value: starts with a letter, ends alphanumeric.
SLUG = re.compile(r"^[a-z](?:[a-z0-9_]{0,38}[a-z0-9])?$")
# Kubernetes resource quantities as users write them: "500m", "2", "0.5", "512Mi", "1G".
CPU_QUANTITY = re.compile(r"^(\d+m|\d+(\.\d+)?)$")
MEMORY_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
QUANTITIES = {"cpu": (CPU_QUANTITY, "'500m' or '2'"), "memory": (MEMORY_QUANTITY, "'512Mi' or '2Gi'")}
SCHEDULE_PRESETS = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}


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
        if value is None or value in SCHEDULE_PRESETS:
            return value
        from croniter import croniter  # Airflow's own cron parser

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is neither a cron expression nor one of {sorted(SCHEDULE_PRESETS)}")
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
        return f"categories[{self.index}] ({self.name}): " + "; ".join(self.problems)


@dataclass(frozen=True)
class CategoryConfig:
    categories: tuple[Category, ...]
    errors: tuple[CategoryError, ...]


class CategoryFileError(ValueError):
    """The file itself is unusable (missing, not YAML, wrong top-level shape)."""


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
        problems.append(f"field '{loc}': {message}" if loc else message)
    return tuple(problems)


def parse_categories(document: Any, source: str = "categories.yaml") -> CategoryConfig:
    if not isinstance(document, dict) or not isinstance(document.get("categories"), list):
        raise CategoryFileError(f"{source}: expected a mapping with a 'categories' list")
    unknown_top = set(document) - {"defaults", "categories"}
    if unknown_top:
        raise CategoryFileError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CategoryFileError(f"{source}: 'defaults' must be a mapping")

    valid: list[Category] = []
    errors: list[CategoryError] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(document["categories"]):
        label = str(entry.get("name", "<no name>")) if isinstance(entry, dict) else repr(entry)
        if not isinstance(entry, dict):
            errors.append(CategoryError(index, label, ("entry must be a mapping",)))
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
    return CategoryConfig(tuple(valid), tuple(errors))


def load_categories(path: str | Path) -> CategoryConfig:
    path = Path(path)
    try:
        # libyaml's loader when present: ~7x faster on a 1000-entry file (DAG parse time).
        document = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise CategoryFileError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CategoryFileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_categories(document, source=str(path))


CATEGORIES_FILE_ENV = "PIPELINE_CATEGORIES_FILE"


def categories_file(dags_folder: str | Path) -> Path:
    """categories.yaml beside the DAG files (git-synced with them), unless overridden."""
    import os

    return Path(os.environ.get(CATEGORIES_FILE_ENV) or Path(dags_folder) / "categories.yaml")
