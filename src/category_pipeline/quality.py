"""The quality gate of a category's day: what validated data must meet to be loaded.

A day with fewer rows than ``quality.min_rows`` (an empty day, by default), or with more than
``quality.max_bad_row_ratio`` of its rows quarantined, is not loaded: the warehouse keeps the
partition it had. The check runs at the end of validate, so that the run stops before load.
"""

from __future__ import annotations

from datetime import date

from category_pipeline import metrics
from category_pipeline.config import Quality


class QualityGateError(ValueError):
    """A day outside its quality gate. Deterministic: a retry cannot change the data."""


def check(category: str, day: date | str, rows: int, quarantined: int, quality: Quality) -> None:
    """Raise QualityGateError naming the category, the day and the figure against its limit.

    Sends the category's limit as a gauge first (next to validate's quarantine_ratio), so that
    an alert can compare the two: once per validate, passed or not."""
    metrics.max_bad_row_ratio(category, quality.max_bad_row_ratio)
    if rows < quality.min_rows:
        raise QualityGateError(
            f"quality gate of {category} for {day}: {rows:,} rows, fewer than quality.min_rows = "
            f"{quality.min_rows:,}; nothing was loaded (the warehouse keeps the day as it was)"
        )
    ratio = quarantined / rows if rows else 0.0
    if ratio > quality.max_bad_row_ratio:
        raise QualityGateError(
            f"quality gate of {category} for {day}: {quarantined:,} of {rows:,} rows quarantined "
            f"({ratio:.2%}), more than quality.max_bad_row_ratio = {quality.max_bad_row_ratio:.2%}; "
            "nothing was loaded (the warehouse keeps the day as it was)"
        )
