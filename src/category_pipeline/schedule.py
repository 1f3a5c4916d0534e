"""Which order date a run processes, defined once for every DAG of the platform.

A run processes one order date, its logical date (``ds``):
- a scheduled run covers a data interval from one cron tick to the next and runs at its
  end; its logical date is the interval's start. So the run at 2026-11-27T00:00 (``@daily``)
  processes 2026-11-26, and the run at 2026-11-27T03:00 (``0 3 * * *``) processes 2026-11-26
  as well: always the last complete day before the run time, never the day just begun;
- a manual run, and ``make run DATE=...``, process the logical date they are given.
The UI shows that date as the run's logical date, and the interval as its data interval.

Airflow 3's default for a cron string is a trigger timetable, whose logical date is the run
time itself (the day that has just begun): hence an explicit data-interval timetable here.
Schedules that do not fire once a day are refused earlier, by the category config.
"""

from __future__ import annotations

from datetime import date, datetime

from category_pipeline.config import DAILY_PRESETS

TIMEZONE = "UTC"


def daily_timetable(schedule: str | None):
    """The timetable of a DAG that processes one order date per run (None: manual only)."""
    if schedule is None:
        return None
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(DAILY_PRESETS.get(schedule, schedule), timezone=TIMEZONE)


def order_date(logical_date: datetime) -> date:
    """The order date a run with this logical date processes (its ``ds``, in UTC)."""
    return logical_date.date()
