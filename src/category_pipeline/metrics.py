"""The pipeline's own metrics, sent through Airflow's Stats (no second StatsD client).

With ``[metrics] statsd_on`` they leave as StatsD lines under Airflow's prefix
(``statsd_prefix``, ``airflow`` by default), next to Airflow's own ``dagrun.*`` and ``ti.*``:

    pipeline.<category>.rows_extracted                counter  rows landed by extract
    pipeline.<category>.rows_clean                    counter  validate's clean rows
    pipeline.<category>.rows_quarantined.<reason>     counter  validate's quarantined rows, every
                                                               reason of process.REASONS (0 too)
    pipeline.<category>.rows_loaded                   counter  orders rows loaded
    pipeline.<category>.quarantine_ratio              gauge    quarantined / all rows of the day
    pipeline.<category>.max_bad_row_ratio             gauge    the category's quality setting
    pipeline.<category>.step_duration.<step>          timer    ms of a step that succeeded

``airflow.sdk.observability.stats`` is the module Airflow's task runner itself sends its
``ti.*`` metrics with: in a task (a worker's task process, or ``dag.test()``) it is set up
from the ``[metrics]`` configuration; anywhere else (a plain script, a unit test) it is a
no-op. Metrics are fire-and-forget: a failure to send one is logged and never fails a step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger(__name__)

# The steps timed by ``step_timer``.
STEPS = ("extract", "validate", "compute_metrics", "load")


def _stats():
    # Imported when used: the data steps also run without Airflow (bench/, unit tests).
    from airflow.sdk.observability import stats

    return stats


def _send(kind: str, name: str, *args) -> None:
    try:
        getattr(_stats(), kind)(name, *args)
    except Exception:  # noqa: BLE001 - a metric never fails the step that measured it
        log.warning("metric %s %s not sent", kind, name, exc_info=True)


def _name(category: str, *parts: str) -> str:
    return ".".join(("pipeline", category, *parts))


def rows_extracted(category: str, rows: int) -> None:
    _send("incr", _name(category, "rows_extracted"), rows)


def validated(category: str, clean: int, quarantined_by_reason: Mapping[str, int], reasons: tuple[str, ...]) -> None:
    """Clean rows, quarantined rows of every reason (0 included: every series exists from the
    first run, so rates and alerts need no special case) and the day's quarantine ratio."""
    _send("incr", _name(category, "rows_clean"), clean)
    for reason in dict.fromkeys([*reasons, *quarantined_by_reason]):
        _send("incr", _name(category, "rows_quarantined", reason), quarantined_by_reason.get(reason, 0))
    quarantined = sum(quarantined_by_reason.values())
    rows = clean + quarantined
    _send("gauge", _name(category, "quarantine_ratio"), quarantined / rows if rows else 0.0)


def max_bad_row_ratio(category: str, ratio: float) -> None:
    _send("gauge", _name(category, "max_bad_row_ratio"), ratio)


def rows_loaded(category: str, rows: int) -> None:
    _send("incr", _name(category, "rows_loaded"), rows)


@contextmanager
def step_timer(category: str, step: str) -> Iterator[None]:
    """Times the block as ``pipeline.<category>.step_duration.<step>``, in ms; sent only when
    the block succeeds (a failed step's time would blur the durations of real work)."""
    if step not in STEPS:
        raise ValueError(f"step {step!r} is not one of {list(STEPS)}")
    name = _name(category, "step_duration", step)
    timer = None
    try:
        timer = _stats().timer(name)
        timer.start()
    except Exception:  # noqa: BLE001
        log.warning("timer %s not started", name, exc_info=True)
        timer = None
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        if timer is not None:
            try:
                timer.stop(send=succeeded)
            except Exception:  # noqa: BLE001
                log.warning("timer %s not sent", name, exc_info=True)


def category_of_staged(uri: str) -> str:
    """The category of a dataset staged by a category DAG, which storage.dataset_uri lays out
    as ``<root>/<category>/<day>/<name>.parquet``; ``unknown`` for a URI of another shape
    (naming a metric never fails a step)."""
    parts = uri.rstrip("/").split("/")
    return parts[-3] if len(parts) >= 3 and parts[-3] else "unknown"
