"""Which order date a run processes: a scheduled run the last complete day before its run
time, a manual run the date it is given. Asked of the DAGs as the scheduler holds them
(serialized), through Airflow's own timetable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.base import DataInterval, TimeRestriction

from category_pipeline.schedule import daily_timetable, order_date
from tests.conftest import DAGS

UTC = timezone.utc


@pytest.fixture(scope="module")
def scheduled_dags():
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert bag.import_errors == {}
    return {dag_id: DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)) for dag_id, dag in bag.dags.items()}


def _run_at(dag, run_time: datetime):
    """The scheduled run that starts at ``run_time``: the one after the interval before it."""
    previous_end = run_time - timedelta(days=1)
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(previous_end - timedelta(days=1), previous_end),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.run_after == run_time, (dag.dag_id, info.run_after)
    return info


@pytest.mark.parametrize(
    "dag_id, run_time",
    [
        ("category_fashion", datetime(2026, 11, 27, 0, 0, tzinfo=UTC)),       # @daily: midnight
        ("category_electronics", datetime(2026, 11, 27, 0, 0, tzinfo=UTC)),
        ("category_home", datetime(2026, 11, 27, 3, 0, tzinfo=UTC)),          # 0 3 * * *
    ],
)
def test_a_scheduled_run_processes_the_last_complete_day(scheduled_dags, dag_id, run_time):
    info = _run_at(scheduled_dags[dag_id], run_time)
    assert order_date(info.logical_date).isoformat() == "2026-11-26"
    # The data interval the UI shows ends at the run time and covers the processed day's end.
    assert info.data_interval.end == run_time
    assert info.data_interval.start == run_time - timedelta(days=1)


def test_the_first_run_after_unpausing_processes_yesterday_not_today(scheduled_dags):
    """catchup=False, unpaused at 2026-11-27T05:00: home's run is the one of 03:00 that day,
    for 2026-11-26 (today, the 27th, has only begun)."""
    dag = scheduled_dags["category_home"]
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=datetime(2026, 1, 1, tzinfo=UTC), latest=None, catchup=False),
    )
    # Without catchup the timetable aligns to "now"; check the rule on what it returns.
    assert info.data_interval.end == info.run_after
    assert order_date(info.logical_date) == (info.run_after - timedelta(days=1)).date()


def test_a_manual_run_processes_the_date_it_is_given(scheduled_dags):
    for dag_id in ("category_home", "category_fashion"):
        given = datetime(2026, 11, 20, tzinfo=UTC)
        interval = scheduled_dags[dag_id].timetable.infer_manual_data_interval(run_after=given)
        assert interval.end <= given + timedelta(days=1)
        assert order_date(given).isoformat() == "2026-11-20"


def test_manual_only_has_no_timetable():
    assert daily_timetable(None) is None
