"""Shared fixtures. Airflow reads its configuration when first imported, so the test
environment (a throwaway AIRFLOW_HOME, this repo's dags/ and plugins/) is set here,
before any test module imports Airflow."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from category_pipeline.local_run import laptop_env

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"

_HOME = Path(tempfile.mkdtemp(prefix="airflow-test-home-"))
# The laptop mode's settings (the same DAGs, plugins, SQLite warehouse), with the state in _HOME.
os.environ.update({**laptop_env(REPO, _HOME), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
os.environ.pop("PIPELINE_CATEGORIES_FILE", None)
# The operator lives in plugins/ (Airflow puts that folder on sys.path; so do the tests).
sys.path.insert(0, str(PLUGINS))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database (SQLite in the test AIRFLOW_HOME), migrated once."""
    subprocess.run(["airflow", "db", "migrate"], check=True, capture_output=True)
    return _HOME


@pytest.fixture(scope="session")
def postgres_dsn():
    """DSN of a real PostgreSQL: $WAREHOUSE_TEST_DSN, or a throwaway server started from
    the installed binaries. Skipped on a machine without PostgreSQL, never in CI."""
    from tests.support.postgres import PostgresUnavailable, TemporaryPostgres, wait_until_accepting

    if os.environ.get("WAREHOUSE_TEST_DSN"):
        wait_until_accepting(os.environ["WAREHOUSE_TEST_DSN"])
        yield os.environ["WAREHOUSE_TEST_DSN"]
        return
    try:
        server = TemporaryPostgres()
        dsn = server.start()
    except (PostgresUnavailable, subprocess.CalledProcessError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL here: {exc}")
    try:
        yield dsn
    finally:
        server.stop()


@pytest.fixture
def new_postgres_database(postgres_dsn):
    """``new_postgres_database(prefix)``: the URI of a new, empty database on the real
    PostgreSQL server; every database made this way is dropped afterwards."""
    import uuid

    import psycopg

    created: list[str] = []

    def create(prefix: str = "db") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return f"{postgres_dsn.rsplit('/', 1)[0]}/{name}"

    yield create
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        for name in created:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_warehouse(new_postgres_database):
    """A Warehouse on a fresh database of the real PostgreSQL server, dropped afterwards."""
    from category_pipeline.warehouse import Warehouse

    return Warehouse.from_uri(new_postgres_database("wh"))


@pytest.fixture
def sqlite_warehouse(tmp_path):
    from category_pipeline.warehouse import Warehouse

    return Warehouse.from_uri(f"sqlite:///{tmp_path / 'warehouse.db'}")


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request):
    """Each loader test runs against both warehouses users have: SQLite and PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_warehouse")


# -- numbers worth seeing in every run (requests of a render, image sizes) ------------------

_REPORTS: list[str] = []


@pytest.fixture
def report():
    """``report("line")``: shown in the terminal summary of every run (not only with -s)."""
    return _REPORTS.append


def pytest_terminal_summary(terminalreporter):
    if _REPORTS:
        terminalreporter.section("measured by the tests")
        for line in _REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def task_pods(airflow_db, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """(dag_id, task_id) -> the pod Airflow generates (`airflow kubernetes generate-dag-yaml`)
    for every task of every category DAG and of the summary DAG, from the official chart's
    rendered pod template: made once per session (the pod contract and pod security tests)."""
    from category_pipeline.config import load_categories
    from tests.support import pod_template

    dag_ids = [c.dag_id for c in load_categories(DAGS / "categories.yaml").categories] + [pod_template.SUMMARY_DAG]
    return pod_template.generate_pods(tmp_path_factory.mktemp("task-pods"), dag_ids)


@pytest.fixture(scope="session")
def loopback_s3():
    """A real S3 API on 127.0.0.1 (moto's ThreadedMotoServer), for the whole session."""
    from tests.support.s3 import LoopbackS3

    server = LoopbackS3().start()
    yield server
    server.stop()


def dag_bag_without_retries(folder: Path = DAGS):
    """The DagBag of ``folder``, which must import cleanly, with every task's retries at 0: a
    test run fails at the first error instead of waiting out retry delays."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=folder, safe_mode=True)
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            task.retries = 0
    return bag
