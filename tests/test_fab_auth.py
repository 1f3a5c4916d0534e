"""The UI login the official chart sets up, without a cluster: the auth manager of the
rendered airflow.cfg (FabAuthManager) and the admin user that the chart's createUserJob
creates. The Job's command and args run exactly as rendered (``bash -c 'printf ... |
airflow users create ...'``: the password on stdin) with the Job's rendered env, against a throwaway
AIRFLOW_HOME (the rendered airflow.cfg in it, as the chart mounts it) and a SQLite metadata
database; then the real ``airflow api-server``, started with the api-server Deployment's
rendered args, must hand that user a token for the password, and refuse a wrong one.

The same api-server then serves scripts/platform_api.py, the client of `make trigger` and
the kind suite: it waits for a DAG to be parsed and triggers under its own run id.

What a cluster would supply is made here: the Secrets' values (a random admin password,
fernet, API and JWT keys) and the metadata database. Like every official-chart test, it is
skipped on a laptop without the chart and FAILS in CI (CI=true).
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from tests.support.airflow_server import ApiServer, ApiServerFailed, request
from tests.support.helm import REPO, render_official, unavailable

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# The user createUserJob.args create (values.yaml).
ADMIN_USERNAME = "admin"
COMMAND_TIMEOUT = 300


# --- the render -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render_official()


def _one(rendered: list[dict], kind: str, component: str) -> dict:
    found = [
        doc for doc in rendered
        if doc["kind"] == kind and doc["metadata"].get("labels", {}).get("component") == component
    ]
    assert len(found) == 1, f"expected one {kind} with component={component}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def _container(workload: dict, name: str) -> dict:
    (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return container


def _argv(container: dict) -> list[str]:
    """command + args as rendered. No `command` means the image's entrypoint, which runs a
    `bash ...` argv as given; so a `bash -c` argv runs here as it does in the pod."""
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["bash", "-c"], f"{container['name']}: not a `bash -c` command, cannot run it here: {argv}"
    return argv


def _config_map(rendered: list[dict]) -> dict:
    (config,) = [d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "airflow-config"]
    return config["data"]


# --- running it --------------------------------------------------------------------------


@dataclass
class Installation:
    home: Path
    password: str
    # What the cluster's Secrets would hold, by the env variable the chart fills from them.
    secret_values: dict[str, str]
    overrides: dict[str, str]
    # The command line `airflow` was started with by the create-user Job's command.
    argv_of_create_user: str = ""

    def env(self, container: dict) -> dict[str, str]:
        """The container's rendered env, Secrets' values made here, on this machine's env
        without its Airflow settings (conftest's), then the throwaway-home overrides. A
        variable from a Secret that has no value made here is left unset."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        # Only the `airflow` the command finds is chosen: the venv's.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            elif variable["name"] in self.secret_values:
                env[variable["name"]] = self.secret_values[variable["name"]]
        env.update(self.overrides)
        assert shutil.which("airflow", path=env["PATH"]) == str(Path(sys.executable).parent / "airflow")
        return env

    def run(self, argv: list[str], container: dict, path_first: Path | None = None) -> subprocess.CompletedProcess:
        env = self.env(container)
        if path_first:
            env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
        result = subprocess.run(
            argv, env=env, cwd=self.home, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, f"{argv} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result


@pytest.fixture(scope="module")
def airflow_cfg(rendered) -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(_config_map(rendered)["airflow.cfg"])
    return config


@pytest.fixture(scope="module")
def installation(rendered, airflow_cfg, tmp_path_factory) -> Installation:
    """A throwaway Airflow with the rendered config and auth manager, migrated, after the
    create-user Job's command ran in it."""
    try:
        metadata.version("apache-airflow-providers-fab")
    except metadata.PackageNotFoundError:
        unavailable("apache-airflow-providers-fab is not installed (the `dev` extra; pip install -r requirements.lock)")
    auth_manager = airflow_cfg["core"]["auth_manager"]
    assert auth_manager == FAB_AUTH_MANAGER, f"the chart now renders [core] auth_manager = {auth_manager}"

    home = tmp_path_factory.mktemp("fab-airflow-home")
    # Where the chart mounts them: $AIRFLOW_HOME/airflow.cfg and config/airflow_local_settings.py.
    data = _config_map(rendered)
    (home / "airflow.cfg").write_text(data["airflow.cfg"])
    if "airflow_local_settings.py" in data:
        (home / "config").mkdir()
        (home / "config" / "airflow_local_settings.py").write_text(data["airflow_local_settings.py"])
    (home / "dags").mkdir()

    password = secrets.token_urlsafe(18) + "!$ x"  # also a shell-special and a space: the command quotes it
    database = f"sqlite:///{home / 'airflow.db'}"
    installation = Installation(
        home=home,
        password=password,
        secret_values={
            "ADMIN_PASSWORD": password,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW_CONN_AIRFLOW_DB": database,
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        },
        overrides={
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__AUTH_MANAGER": auth_manager,
            # The rendered dags_folder is git-sync's path in the pod; no DAGs are needed here.
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        },
    )

    job = _one(rendered, "Job", "create-user-job")
    container = _container(job, "create-user")
    env_names = {v["name"]: v for v in container.get("env", [])}
    assert "secretKeyRef" in env_names["ADMIN_PASSWORD"]["valueFrom"], "ADMIN_PASSWORD must come from a Secret"

    # What the chart's migrate-database Job does before (the create-user Job waits for it).
    migrate = _container(_one(rendered, "Job", "run-airflow-migrations"), "run-airflow-migrations")
    installation.run(_argv(migrate), migrate)
    # `airflow` is wrapped by a shim that records its command line: the password must not be on it.
    shims = home / "shims"
    shims.mkdir()
    recorded = home / "airflow-argv"
    shim = shims / "airflow"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {recorded}\nexec {Path(sys.executable).parent / "airflow"} "$@"\n')
    shim.chmod(0o755)
    installation.run(_argv(container), container, path_first=shims)
    installation.argv_of_create_user = recorded.read_text()
    return installation


def test_create_user_job_puts_no_password_on_a_command_line(installation):
    assert "users create" in installation.argv_of_create_user, "the Job's command did not run `airflow users create`"
    assert installation.password not in installation.argv_of_create_user


def test_create_user_job_creates_the_admin(installation, rendered):
    container = _container(_one(rendered, "Job", "create-user-job"), "create-user")
    listed = installation.run(["airflow", "users", "list", "-o", "json"], container)
    # Warnings are logged to stdout too: the listing is the line that is a JSON array.
    (listing,) = [line for line in listed.stdout.splitlines() if line.startswith("[{") or line == "[]"]
    users = {user["username"]: user for user in json.loads(listing)}
    assert ADMIN_USERNAME in users, users
    assert users[ADMIN_USERNAME]["roles"] == ["Admin"]


# --- logging in through the real api-server ------------------------------------------------


@pytest.fixture(scope="module")
def api_server(installation, rendered):
    """The api-server Deployment's rendered command on a free loopback port; its base URL."""
    container = _container(_one(rendered, "Deployment", "api-server"), "api-server")
    server = ApiServer(_argv(container), installation.env(container), installation.home,
                       installation.home / "api-server.log")
    try:
        server.start()
    except ApiServerFailed as exc:
        pytest.fail(str(exc))
    try:
        yield server.base
    finally:
        server.stop()


def _token(base: str, username: str, password: str) -> tuple[int, object]:
    return request("POST", f"{base}/auth/token", {"username": username, "password": password})


def test_admin_logs_in_with_the_secret_password(api_server, installation):
    status, body = _token(api_server, ADMIN_USERNAME, installation.password)
    assert status in (200, 201), (status, body)
    token = body["access_token"]
    assert token

    # The token is what authenticates: the same endpoint refuses a request without one.
    status, _ = request("GET", f"{api_server}/api/v2/dags")
    assert status in (401, 403)
    status, dags = request("GET", f"{api_server}/api/v2/dags", token=token)
    assert status == 200, (status, dags)
    assert dags["total_entries"] == 0

    # And it carries the Admin role: reading users is an Admin-only FAB permission.
    status, user = request("GET", f"{api_server}/auth/fab/v1/users/{ADMIN_USERNAME}", token=token)
    assert status == 200, (status, user)
    assert [role["name"] for role in user["roles"]] == ["Admin"]


def test_wrong_password_is_refused(api_server, installation):
    status, body = _token(api_server, ADMIN_USERNAME, installation.password + "x")
    assert status in (401, 403), (status, body)
    assert "access_token" not in (body if isinstance(body, dict) else {})
    status, body = _token(api_server, "nobody", installation.password)
    assert status in (401, 403), (status, body)


# --- the platform's own client (scripts/platform_api.py) against the same api-server -------


def test_the_platform_client_waits_for_the_dag_then_triggers_under_its_own_run_id(api_server, installation, rendered):
    """What `make trigger` and the kind suite do, against the real API: a DAG not parsed yet
    is waited for (bounded, naming it), then unpaused and triggered under the given run id."""
    sys.path.insert(0, str(REPO / "scripts"))
    import platform_api

    api = platform_api.AirflowApi(api_server, ADMIN_USERNAME, installation.password)
    assert not api.dag_exists("category_home")
    with pytest.raises(TimeoutError, match="category_home is not in the Airflow API after 1 s"):
        api.wait_for_dag("category_home", timeout=1)

    # The DAG processor's part: parse this repository's dags/ into the same database.
    container = _container(_one(rendered, "Deployment", "api-server"), "api-server")
    env = {
        **installation.env(container),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    }
    parsed = subprocess.run(["airflow", "dags", "reserialize"], env=env, cwd=installation.home,
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert parsed.returncode == 0, parsed.stderr[-3000:]

    run_id = api.trigger("category_home", "2026-11-20", run_id="kind-suite-0001")
    assert run_id == "kind-suite-0001"
    run = api.get(f"/api/v2/dags/category_home/dagRuns/{run_id}")
    assert run["logical_date"].startswith("2026-11-20T00:00:00")
    assert run["state"] == "queued"  # no scheduler here
    assert api.get("/api/v2/dags/category_home")["is_paused"] is False

    # A run id with ':' and '+' (Airflow's own style) is quoted on the way into a URL.
    odd = "manual__2026-11-21T00:00:00+00:00"
    assert api.trigger("category_home", "2026-11-21", run_id=odd) == odd
    assert api.get(f"/api/v2/dags/category_home/dagRuns/{api.quote(odd)}")["dag_run_id"] == odd
