"""Task logs on object storage (issue 9, item 2), with the cluster's own settings: the
[logging] section of the rendered airflow.cfg and the env the chart gives the api-server,
the scheduler and the task pods (Secrets' values made here).

Real: Airflow 3.3.2 and the Amazon provider's S3 remote logging, a real DAG run whose task
runs under Airflow's task supervisor (which uploads the log when the task ends, exactly as in a
KubernetesExecutor task pod), the real `airflow api-server` process started with the chart's
command serving both the execution API the task talks to and the REST log endpoint, and a real
S3 API (moto's server on loopback, tests/support/s3.py) holding the bucket.

Boundaries (what a cluster supplies, made here): the metadata database is SQLite; the run is
`airflow dags test --use-executor` with the LocalExecutor, whose worker calls the same
supervise_task() a task pod's `execute_workload` calls; the object store's endpoint is the
loopback server instead of platform-object-store:9000 (the connection JSON a Secret would hold);
auth is SimpleAuthManager with all users admin (the chart's FAB login is tested in
tests/test_fab_auth.py; here only the log endpoint matters); "the pod is gone" is the local log
file deleted.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from urllib.parse import quote
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.airflow_server import ApiServer, ApiServerFailed, request
from tests.support.helm import render_official
from tests.support.ports import free_port

# The contract (helper-context-9): bucket, prefix, connection id and the Secret holding it.
LOG_BUCKET = "airflow-logs"
REMOTE_BASE_LOG_FOLDER = f"s3://{LOG_BUCKET}/logs"
CONN_ID = "object_store"
CONN_ENV = "AIRFLOW_CONN_OBJECT_STORE"
CONN_SECRET = ("object-store-credentials", "connection")

PROBE_DAG = "remote_logging_probe"
PROBE_TASK = "say"
COMMAND_TIMEOUT = 180  # seconds; a probe run takes ~5-10 s here
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

PROBE_DAG_SOURCE = textwrap.dedent(f'''
    """One task that prints the marker it is given in the run's conf."""
    from datetime import datetime, timezone

    from airflow.sdk import dag, get_current_context, task


    @dag(dag_id="{PROBE_DAG}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False)
    def probe():
        @task(task_id="{PROBE_TASK}")
        def say():
            print("probe says", get_current_context()["dag_run"].conf["marker"])

        say()


    probe()
''')


# --- the cluster's settings, from the render ----------------------------------------------


@dataclass
class ClusterSettings:
    airflow_cfg: str
    logging: dict[str, str]
    api_server: dict      # the api-server container
    scheduler: dict       # the scheduler container (it runs the executor)
    task: dict            # the task pod's container (the pod template's `base`)


def _one_container(rendered: list[dict], component: str, name: str) -> dict:
    (workload,) = [d for d in rendered if d["kind"] == "Deployment"
                   and d["metadata"].get("labels", {}).get("component") == component]
    (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return container


@pytest.fixture(scope="module")
def cluster() -> ClusterSettings:
    rendered = render_official()
    (config_map,) = [d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "airflow-config"]
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(config_map["data"]["airflow.cfg"])
    pod_template = yaml.safe_load(config_map["data"]["pod_template_file.yaml"])
    (task,) = [c for c in pod_template["spec"]["containers"] if c["name"] == "base"]
    return ClusterSettings(
        airflow_cfg=config_map["data"]["airflow.cfg"],
        logging=dict(cfg["logging"]) if cfg.has_section("logging") else {},
        api_server=_one_container(rendered, "api-server", "api-server"),
        scheduler=_one_container(rendered, "scheduler", "scheduler"),
        task=task,
    )


def _secret_ref(container: dict, name: str) -> tuple[str, str] | None:
    for variable in container.get("env", []):
        if variable["name"] == name:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            return (ref["name"], ref["key"]) if ref else None
    return None


def test_the_cluster_sends_task_logs_to_the_object_store(cluster):
    assert cluster.logging.get("remote_logging") == "True", f"values.yaml config.logging: {cluster.logging}"
    assert cluster.logging.get("remote_base_log_folder") == REMOTE_BASE_LOG_FOLDER, cluster.logging
    assert cluster.logging.get("remote_log_conn_id") == CONN_ID, cluster.logging
    # The api-server reads the logs back, so it holds the connection, from the Secret.
    assert _secret_ref(cluster.api_server, CONN_ENV) == CONN_SECRET, \
        f"the api-server gets no {CONN_ENV} from Secret {CONN_SECRET[0]} key {CONN_SECRET[1]}"


# --- an installation with those settings, and its api-server ------------------------------


@dataclass
class Installation:
    home: Path
    secret_values: dict[str, str]
    overrides: dict[str, str]

    @property
    def local_logs(self) -> Path:
        return self.home / "logs"

    def env(self, container: dict, **changes: str | None) -> dict[str, str]:
        """The container's rendered env (Secrets' values made here) on this machine's env
        without its Airflow settings, then the overrides, then ``changes`` (None: unset)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and not k.startswith("AWS_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            elif variable["name"] in self.secret_values:
                env[variable["name"]] = self.secret_values[variable["name"]]
        env.update(self.overrides)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def airflow(self, args: list[str], env: dict[str, str]) -> str:
        """`airflow ARGS`; its output. Its own session, so that a timeout also ends the
        executor's worker processes it started."""
        process = subprocess.Popen(["airflow", *args], env=env, cwd=self.home, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        try:
            output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"airflow {args} did not finish within {COMMAND_TIMEOUT}s:\n{output[-4000:]}")
        assert process.returncode == 0, f"airflow {args} failed ({process.returncode}):\n{output[-4000:]}"
        return output


@pytest.fixture(scope="module")
def installation(cluster, loopback_s3, tmp_path_factory) -> Installation:
    home = tmp_path_factory.mktemp("remote-logging-home")
    (home / "airflow.cfg").write_text(cluster.airflow_cfg)
    (home / "dags").mkdir()
    (home / "dags" / f"{PROBE_DAG}.py").write_text(PROBE_DAG_SOURCE)
    database = f"sqlite:///{home / 'airflow.db'}"
    api_port = free_port()
    installation = Installation(
        home=home,
        secret_values={
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW_CONN_AIRFLOW_DB": database,
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            # The Secret's `connection` key: the same JSON, with the loopback store's endpoint.
            CONN_ENV: loopback_s3.airflow_connection(),
        },
        overrides={
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        },
    )
    installation.airflow(["db", "migrate"], installation.env(cluster.scheduler))
    existing = {bucket["Name"] for bucket in loopback_s3.client().list_buckets()["Buckets"]}
    if LOG_BUCKET not in existing:
        loopback_s3.create_bucket(LOG_BUCKET)
    return installation


@pytest.fixture(scope="module")
def api_server(cluster, installation):
    argv = [*cluster.api_server.get("command", []), *cluster.api_server.get("args", [])]
    server = ApiServer(argv=argv, env=installation.env(cluster.api_server), cwd=installation.home,
                       log=installation.home / "api-server.log",
                       port=int(installation.overrides["AIRFLOW__API__PORT"]))
    try:
        server.start()
    except ApiServerFailed as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token(api_server) -> str:
    status, body = request("GET", f"{api_server.base}/auth/token")
    assert status in (200, 201), (status, body)
    return body["access_token"]


# --- running the probe task ---------------------------------------------------------------


@dataclass
class ProbeRun:
    run_id: str
    marker: str
    output: str
    state: str
    try_number: int

    @property
    def log_path(self) -> str:
        """Airflow's default log_filename_template, relative to the log folders."""
        return f"dag_id={PROBE_DAG}/run_id={self.run_id}/task_id={PROBE_TASK}/attempt={self.try_number}.log"


def run_probe(installation, cluster, api_server, token, day: str, **task_env: str | None) -> ProbeRun:
    """One run of the probe DAG for ``day``. The task sees the task pod's settings for the
    object-store connection (``task_env`` changes them); the run itself is the scheduler's."""
    marker = f"remote-logging-marker-{uuid.uuid4().hex}"
    task_connection = installation.secret_values[CONN_ENV] if _secret_ref(cluster.task, CONN_ENV) else None
    env = installation.env(cluster.scheduler, **{CONN_ENV: task_connection, **task_env},
                           # One executor worker, not the cluster's 32 forked ones: faster, and
                           # forking many from `dags test` sometimes left one that never exits.
                           AIRFLOW__CORE__PARALLELISM="1")
    output = installation.airflow(
        ["dags", "test", PROBE_DAG, day, "--use-executor", "--conf", json.dumps({"marker": marker})], env)
    status, runs = request("GET", f"{api_server.base}/api/v2/dags/{PROBE_DAG}/dagRuns"
                           f"?logical_date_gte={day}T00:00:00Z&logical_date_lte={day}T00:00:00Z", token=token)
    assert status == 200, (status, runs)
    (run,) = runs["dag_runs"]
    status, ti = request("GET", f"{api_server.base}/api/v2/dags/{PROBE_DAG}/dagRuns/{quote(run['dag_run_id'], safe='')}"
                         f"/taskInstances/{PROBE_TASK}", token=token)
    assert status == 200, (status, ti)
    return ProbeRun(run_id=run["dag_run_id"], marker=marker, output=output,
                    state=ti["state"], try_number=ti["try_number"])


def read_log_through_the_api(api_server, token, run: ProbeRun) -> tuple[int, dict]:
    return request("GET", f"{api_server.base}/api/v2/dags/{PROBE_DAG}/dagRuns/{quote(run.run_id, safe='')}"
                   f"/taskInstances/{PROBE_TASK}/logs/{run.try_number}?full_content=true", token=token)


def _log_text(body: dict) -> str:
    """The structured log the endpoint returns, as one text (events and their sources)."""
    return json.dumps(body["content"])


# --- the tests -----------------------------------------------------------------------------


def test_task_log_lands_in_the_bucket_and_is_served_after_the_local_file_is_gone(
        installation, cluster, api_server, token, loopback_s3):
    run = run_probe(installation, cluster, api_server, token, "2026-11-20")
    assert run.state == "success", run.output[-3000:]

    key = f"logs/{run.log_path}"
    assert key in loopback_s3.keys(LOG_BUCKET, f"logs/dag_id={PROBE_DAG}/run_id={run.run_id}/"), \
        f"no {key} in the bucket:\n{run.output[-3000:]}"
    uploaded = loopback_s3.client().get_object(Bucket=LOG_BUCKET, Key=key)["Body"].read().decode()
    assert f"probe says {run.marker}" in uploaded

    # The pod is gone: so is the task's local log folder.
    local = installation.local_logs / run.log_path
    assert local.parent.is_dir(), f"the task wrote no local log under {local.parent}"
    shutil.rmtree(installation.local_logs / f"dag_id={PROBE_DAG}" / f"run_id={run.run_id}")

    status, body = read_log_through_the_api(api_server, token, run)
    assert status == 200, (status, body)
    served = _log_text(body)
    assert f"probe says {run.marker}" in served, served[-3000:]
    # ...and it came from the bucket, which the endpoint names as the log's source.
    assert f"{REMOTE_BASE_LOG_FOLDER}/{run.log_path}" in served, served[-3000:]


def test_the_task_needs_no_connection_secret_to_upload(installation, cluster, api_server, token, loopback_s3):
    """A task pod without the object-store Secret still uploads: its supervisor fetches the
    remote_log_conn_id connection through the execution API (from the api-server's env)."""
    run = run_probe(installation, cluster, api_server, token, "2026-11-21", **{CONN_ENV: None})
    assert run.state == "success", run.output[-3000:]
    key = f"logs/{run.log_path}"
    assert key in loopback_s3.keys(LOG_BUCKET, f"logs/dag_id={PROBE_DAG}/run_id={run.run_id}/"), run.output[-3000:]
    assert f"probe says {run.marker}" in loopback_s3.client().get_object(
        Bucket=LOG_BUCKET, Key=key)["Body"].read().decode()


def test_unreachable_store_at_upload_keeps_the_task_successful_and_its_local_log(
        installation, cluster, api_server, token, loopback_s3):
    dead = json.loads(installation.secret_values[CONN_ENV])
    dead["extra"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = run_probe(installation, cluster, api_server, token, "2026-11-22", **{CONN_ENV: json.dumps(dead)})

    assert run.state == "success", run.output[-3000:]
    assert loopback_s3.keys(LOG_BUCKET, f"logs/dag_id={PROBE_DAG}/run_id={run.run_id}/") == []
    local = installation.local_logs / run.log_path
    assert local.is_file(), f"the local log {local} is gone although the upload failed"
    assert f"probe says {run.marker}" in local.read_text()
    # Not silent: the supervisor's output (a task pod's stdout) says why the upload failed.
    assert "Could not connect to the endpoint URL" in run.output, run.output[-3000:]
