"""The pipeline's metrics, as they leave Airflow: a real category DAG run (``dag.test()``,
SQLite metadata DB and warehouse) with ``[metrics] statsd_on`` pointed at a UDP socket this
test binds on 127.0.0.1. Every datagram is parsed as StatsD lines; the test asserts Airflow's
own dagrun/ti metrics and every pipeline metric, with the values of the run's XComs.

Airflow reads ``[metrics]`` when it is first imported, and this pytest process imported it
long before (with StatsD off): the run happens in a subprocess started with the
``AIRFLOW__METRICS__*`` environment, which writes the run's state and XComs to a JSON file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import defaultdict

import pytest
import yaml

from category_pipeline import metrics
from category_pipeline.config import Quality
from category_pipeline.process import REASONS
from tests.conftest import DAGS, PLUGINS

CATEGORY = "home"
DAG_ID = f"category_{CATEGORY}"
LOGICAL_DATE = "2026-11-20T00:00:00+00:00"
MAX_BAD_ROW_RATIO = 0.07

# Run in the subprocess: the category DAG, then its state and XComs as JSON.
RUN_DAG = """
import json, sys
from datetime import datetime
sys.path.insert(0, sys.argv[2])  # plugins/: the CustomLoadOperator
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

# dag.test() does the scheduler's bookkeeping of the run (DagRun.update_state, which sends
# dagrun.duration.*) in this process, but only the scheduler's start sets up core Stats: set up
# here exactly as SchedulerJobRunner does. (Tasks send through the Task SDK's Stats, which
# Airflow sets up itself.)
from airflow._shared.observability.metrics import stats
from airflow.configuration import conf
from airflow.observability.metrics import stats_utils
stats.initialize(factory=stats_utils.get_stats_factory(),
                 export_legacy_names=conf.getboolean("metrics", "legacy_names_on"))

bag = DagBag(dag_folder=sys.argv[1], safe_mode=True)
assert bag.import_errors == {}, bag.import_errors
dag = bag.dags[sys.argv[3]]
for task in dag.tasks:
    task.retries = 0
run = dag.test(logical_date=datetime.fromisoformat(sys.argv[4]))
with create_session() as session:
    rows = session.query(XComModel).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
    xcoms = {f"{row.task_id}/{row.key}": XComModel.deserialize_value(row) for row in rows}
with open(sys.argv[5], "w") as out:
    json.dump({"state": str(run.state), "xcoms": xcoms}, out, default=str)
"""


class StatsdListener:
    """A UDP socket on 127.0.0.1 that keeps every StatsD line it receives (a thread drains it
    while the run goes on, so that no datagram is dropped from a full socket buffer)."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self.socket.recv(65535)
            except socket.timeout:
                continue
            # The statsd client may pipeline several lines into one datagram.
            self.lines.extend(line for line in datagram.decode().split("\n") if line)

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        self.socket.close()
        return self.lines


def parse(lines: list[str]) -> dict[str, dict[str, list[float]]]:
    """StatsD lines (``name:value|type[|@rate]``) -> {type: {name: [values, in order]}}."""
    received: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        name, _, rest = line.partition(":")
        value, kind = rest.split("|")[:2]
        received[kind][name].append(float(value))
    return received


@pytest.fixture(scope="module")
def run(airflow_db, tmp_path_factory):
    """The DAG's run with StatsD on: (its state and XComs, the StatsD lines received)."""
    tmp = tmp_path_factory.mktemp("metrics")
    defaults = yaml.safe_load((DAGS / "categories.yaml").read_text())["defaults"]
    entry = {
        "name": CATEGORY,
        # 2% bad rows of every kind the synthetic source makes: several quarantine reasons.
        "source": {"kind": "synthetic", "rows_per_day": 2000, "products": 5, "bad_row_ratio": 0.02},
        "quality": {"max_bad_row_ratio": MAX_BAD_ROW_RATIO},
    }
    (tmp / "categories.yaml").write_text(yaml.safe_dump({"defaults": defaults, "categories": [entry]}))
    listener = StatsdListener()
    env = {
        **os.environ,
        "PIPELINE_CATEGORIES_FILE": str(tmp / "categories.yaml"),
        "PIPELINE_STAGING_URI": str(tmp / "staging"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(tmp / "warehouse.db")}),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    result_file = tmp / "run.json"
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUN_DAG, str(DAGS), str(PLUGINS), DAG_ID, LOGICAL_DATE, str(result_file)],
            env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        lines = listener.close()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(result_file.read_text()), lines


def _pipeline(name: str) -> str:
    return f"airflow.pipeline.{CATEGORY}.{name}"


def test_airflow_sends_its_own_dagrun_and_task_metrics(run):
    result, lines = run
    assert result["state"] == "success"
    received = parse(lines)
    assert len(received["ms"][f"airflow.dagrun.duration.success.{DAG_ID}"]) == 1
    # Legacy names put dag and task ids in the name; a '.' of a task id becomes '__'.
    for task in ("start", "extract", "process__validate", "process__compute_metrics", "load", "end"):
        assert received["c"][f"airflow.ti.start.{DAG_ID}.{task}"] == [1]
        assert received["c"][f"airflow.ti.finish.{DAG_ID}.{task}.success"] == [1]
        assert len(received["ms"][f"airflow.dag.{DAG_ID}.{task}.duration"]) == 1
    assert received["c"]["airflow.ti_successes"] == [1] * 6


def test_rows_extracted_is_what_extract_landed(run):
    result, lines = run
    assert parse(lines)["c"][_pipeline("rows_extracted")] == [result["xcoms"]["extract/rows"]]


def test_clean_and_quarantined_rows_by_reason_are_validates_counts(run):
    result, lines = run
    validated = result["xcoms"]["process.validate/return_value"]
    counters = parse(lines)["c"]
    assert validated["quarantined_rows"] > 0 and len(validated["quarantine_reasons"]) >= 2  # a real test
    assert counters[_pipeline("rows_clean")] == [validated["clean_rows"]]
    # Every reason, those without a quarantined row as 0: each series exists from the first run.
    sent = {name: values for name, values in counters.items() if name.startswith(_pipeline("rows_quarantined."))}
    assert sent == {
        _pipeline(f"rows_quarantined.{reason}"): [validated["quarantine_reasons"].get(reason, 0)] for reason in REASONS
    }


def test_rows_loaded_are_the_orders_the_load_loaded(run):
    result, lines = run
    loaded = result["xcoms"]["load/return_value"]["orders"]["loaded"]
    assert loaded == result["xcoms"]["process.validate/clean_rows"]
    assert parse(lines)["c"][_pipeline("rows_loaded")] == [loaded]


def test_the_quarantine_ratio_and_its_limit_are_sent_once(run):
    result, lines = run
    validated = result["xcoms"]["process.validate/return_value"]
    gauges = parse(lines)["g"]
    rows = validated["clean_rows"] + validated["quarantined_rows"]
    assert gauges[_pipeline("quarantine_ratio")] == [validated["quarantined_rows"] / rows]
    assert gauges[_pipeline("max_bad_row_ratio")] == [MAX_BAD_ROW_RATIO]


def test_each_step_duration_is_sent_once_in_ms(run):
    _, lines = run
    timers = parse(lines)["ms"]
    for step in metrics.STEPS:
        durations = timers[_pipeline(f"step_duration.{step}")]
        assert len(durations) == 1 and durations[0] >= 0


def test_the_pipeline_sends_exactly_the_contracts_names(run):
    _, lines = run
    sent = {(name, kind) for kind, names in parse(lines).items() for name in names if ".pipeline." in name}
    expected = {
        (_pipeline("rows_extracted"), "c"),
        (_pipeline("rows_clean"), "c"),
        (_pipeline("rows_loaded"), "c"),
        (_pipeline("quarantine_ratio"), "g"),
        (_pipeline("max_bad_row_ratio"), "g"),
        *((_pipeline(f"rows_quarantined.{reason}"), "c") for reason in REASONS),
        *((_pipeline(f"step_duration.{step}"), "ms") for step in metrics.STEPS),
    }
    assert sent == expected


# -- in this process, through Airflow's Stats and a real StatsD client ------------------------


@pytest.fixture
def statsd():
    """Airflow's (Task SDK) Stats sending to a listener on 127.0.0.1, with the real statsd
    client and Airflow's SafeStatsdLogger; set back to this process's configuration after."""
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils
    from airflow.sdk.observability.metrics.statsd_logger import statsd_logger
    from statsd import StatsClient

    listener = StatsdListener()
    stats.initialize(
        factory=lambda: statsd_logger.get_statsd_logger(
            stats_class=StatsClient, host="127.0.0.1", port=listener.port, prefix="airflow"
        ),
        export_legacy_names=True,
    )

    def received(until: str) -> dict:
        """Sends ``until`` last and returns what arrived up to it (loopback UDP keeps the order
        of one socket's datagrams: what was not there before it was not sent)."""
        stats.incr(until)
        for _ in range(100):
            if any(line.startswith(f"airflow.{until}:") for line in listener.lines):
                return parse(listener.lines)
            threading.Event().wait(0.05)
        raise AssertionError(f"{until} never arrived: {listener.lines}")

    try:
        yield received
    finally:
        listener.close()
        stats.initialize(
            factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on")
        )


def test_a_failed_step_sends_no_duration(statsd):
    with pytest.raises(RuntimeError, match="broken source"):
        with metrics.step_timer("home", "extract"):
            raise RuntimeError("broken source")
    with metrics.step_timer("home", "load"):
        pass
    timers = statsd(until="marker")["ms"]
    assert "airflow.pipeline.home.step_duration.extract" not in timers
    assert len(timers["airflow.pipeline.home.step_duration.load"]) == 1


def test_the_limit_is_sent_when_the_gate_refuses_the_day_too(statsd):
    from category_pipeline import quality

    with pytest.raises(quality.QualityGateError):
        quality.check("home", "2026-11-20", 100, 50, Quality(max_bad_row_ratio=0.1))
    assert statsd(until="marker")["g"]["airflow.pipeline.home.max_bad_row_ratio"] == [0.1]


class _BrokenBackend:
    """A Stats backend whose every call fails, as a misconfigured client would: the one fault
    that cannot be made with a real StatsD client (its UDP sends do not fail)."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise OSError(f"{name}: no route to the StatsD host")

        return fail


def test_a_metric_that_cannot_be_sent_never_fails_the_step():
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    stats.initialize(factory=_BrokenBackend, export_legacy_names=False)
    try:
        with metrics.step_timer("home", "validate"):
            done = True
        metrics.rows_extracted("home", 10)
        metrics.validated("home", 9, {"null_field": 1}, REASONS)
        metrics.max_bad_row_ratio("home", 0.05)
        metrics.rows_loaded("home", 9)
    finally:
        stats.initialize(
            factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on")
        )
    assert done


@pytest.mark.parametrize(
    "uri, category",
    [
        ("s3://pipeline-staging/staging/fashion/2026-11-20/metrics.parquet", "fashion"),
        ("/home/me/.local/staging/home/2026-11-20/metrics.parquet", "home"),
        ("metrics.parquet", "unknown"),
    ],
)
def test_the_category_of_a_staged_dataset_comes_from_its_layout(uri, category):
    assert metrics.category_of_staged(uri) == category


def test_an_unknown_step_is_refused_by_name():
    with pytest.raises(ValueError, match="'transform' is not one of"):
        with metrics.step_timer("home", "transform"):
            pass
