"""values-dag-bundle.yaml: DAGs from Airflow's GitDagBundle instead of git-sync (chart 2.0's way).

The official chart is rendered for real with values.yaml + the overlay (helm validates the
values against the chart's schema on the way). The rendered bundle configuration is then given
to the real Airflow: its DagBundlesManager builds the GitDagBundle of the installed git
provider, which clones a repository laid out the way scripts/dags-push.sh pushes it. The one
substitution: the clone comes from a local bare repository instead of the in-cluster
http://platform-git (not reachable here); the configuration is otherwise the rendered one.
A local path needs no credential, so the connection's login/password are checked where the
git provider reads them (its GitHook), not against a git server.
"""

from __future__ import annotations

import base64
import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import DAGS
from tests.support.helm import REPO, render_official, render_platform, unavailable

OVERLAY = REPO / "values-dag-bundle.yaml"
CONN_ENV = "AIRFLOW_CONN_GIT_DAGS"
CONN_SECRET = {"name": "git-dags-connection", "key": "connection"}
GIT_DAGS_CLASSPATH = "airflow.providers.git.bundles.git.GitDagBundle"


# -- the render ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_render() -> list[dict]:
    return render_official("-f", str(OVERLAY))


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """component label -> pod spec, for every workload and for the task pod template."""
    specs: dict[str, dict] = {}
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}:
            template = spec["template"]
            specs[template["metadata"]["labels"]["component"]] = template["spec"]
    task_pod = yaml.safe_load(config_map(docs)["data"]["pod_template_file.yaml"])
    assert task_pod["metadata"]["labels"]["component"] == "worker"
    specs["task-pod-template"] = task_pod["spec"]
    return specs


def config_map(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "airflow-config"]
    return found


def airflow_cfg(docs: list[dict]) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(config_map(docs)["data"]["airflow.cfg"])
    return cfg


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def git_sync_containers(docs: list[dict]) -> list[str]:
    return [
        f"{component}/{c['name']}"
        for component, spec in pod_specs(docs).items()
        for c in containers(spec)
        if "git-sync" in c["name"] or "git-sync" in c["image"]
    ]


def rendered_bundle_config(docs: list[dict]) -> str:
    return airflow_cfg(docs)["dag_processor"]["dag_bundle_config_list"]


def overlay_bundle() -> dict:
    (bundle,) = yaml.safe_load(OVERLAY.read_text())["dagProcessor"]["dagBundleConfigList"]
    return bundle


def test_git_sync_stays_the_default():
    assert git_sync_containers(render_official()), "values.yaml alone should still bring DAGs by git-sync"


def test_overlay_leaves_no_git_sync_container(bundle_render):
    assert git_sync_containers(bundle_render) == []


def test_airflow_cfg_holds_one_git_dag_bundle(bundle_render):
    bundles = json.loads(rendered_bundle_config(bundle_render))
    assert bundles == [
        {
            "name": "dags",
            "classpath": GIT_DAGS_CLASSPATH,
            "kwargs": {
                "git_conn_id": "git_dags",
                "repo_url": "http://platform-git/dags.git",
                "tracking_ref": "main",
                "subdir": "dags",
                "refresh_interval": 30,
            },
        }
    ]


def test_git_connection_reaches_only_the_dag_processor_and_task_pods(bundle_render):
    """Only the pods that clone get the credential, and only by reference to the Secret."""
    holders = {}
    for component, spec in pod_specs(bundle_render).items():
        for container in containers(spec):
            for env in container.get("env") or []:
                if env["name"] == CONN_ENV:
                    holders[f"{component}/{container['name']}"] = env
    assert set(holders) == {"dag-processor/dag-processor", "task-pod-template/base"}
    for env in holders.values():
        assert "value" not in env
        assert env["valueFrom"] == {"secretKeyRef": CONN_SECRET}
    # ... and the Secret is named nowhere else (no envFrom, no volume, no `secret:` entry).
    assert yaml.safe_dump_all(bundle_render).count(CONN_SECRET["name"]) == len(holders)


def test_no_git_credential_in_the_render_or_the_overlay(bundle_render):
    """Neither git Secret is mounted or referenced by the official chart any more, and the
    overlay writes down no credential (its only secret is the Secret reference)."""
    text = yaml.safe_dump_all(bundle_render)
    assert "git-credentials" not in text
    assert "git-push-credentials" not in text
    assert "GITSYNC_PASSWORD" not in text

    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    overlay = yaml.safe_load(OVERLAY.read_text())
    assert not {"password", "token", "login", "private_key", "uri"} & {str(k).lower() for k in keys(overlay)}
    assert "@" not in overlay_bundle()["kwargs"]["repo_url"]


# -- the connection Secret of charts/airflow-platform ----------------------------------------


def secret_data(docs: list[dict], name: str) -> dict[str, str]:
    found = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    assert len(found) == 1, f"the platform chart renders {len(found)} Secret(s) named {name}, not one"
    (secret,) = found
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_platform_chart_renders_the_connection_the_overlay_names():
    """Secret git-dags-connection holds an Airflow connection (JSON) for the git provider:
    the overlay's repository, the READ-ONLY git account of git-credentials."""
    from airflow.models.connection import Connection

    docs = render_platform()
    connection = Connection.from_json(secret_data(docs, CONN_SECRET["name"])[CONN_SECRET["key"]], conn_id="git_dags")
    read_only = secret_data(docs, "git-credentials")
    assert connection.conn_type == "git"
    assert connection.host == overlay_bundle()["kwargs"]["repo_url"]
    assert (connection.login, connection.password) == (read_only["GITSYNC_USERNAME"], read_only["GITSYNC_PASSWORD"])
    assert connection.password != secret_data(docs, "git-push-credentials")["password"]


# -- the real Airflow and the real git -------------------------------------------------------


@pytest.fixture
def git(tmp_path, monkeypatch):
    """The real git, isolated from this machine's configuration (as the pods run it)."""
    binary = shutil.which("git")
    if binary is None:
        unavailable("git is not installed")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")

    def run(*args: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            [binary, "-c", "user.name=dags-push", "-c", "user.email=dags-push@localhost", *args],
            cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stderr}"
        return result.stdout.strip()

    return run


class DagRepository:
    """A bare repository as scripts/dags-push.sh leaves the git server's: this working tree's
    dags/ (no __pycache__) under dags/, one commit per push on main."""

    def __init__(self, git, root: Path):
        self.git = git
        self.bare = root / "dags.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch", "main", str(self.bare))
        git("init", "--quiet", "--initial-branch", "main", str(self.work))

    def push(self, dags: Path, message: str, *, push: bool = True) -> str:
        """Commit ``dags`` as dags/ and push it (or not: a commit the server never sees)."""
        target = self.work / "dags"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(dags, target, ignore=shutil.ignore_patterns("__pycache__"))
        self.git("add", "--all", cwd=self.work)
        self.git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        if push:
            self.git("push", "--quiet", str(self.bare), "HEAD:main", cwd=self.work)
        return self.git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def bundles(bundle_render, tmp_path, monkeypatch):
    """Airflow configured as the rendered airflow.cfg configures the DAG processor, with the
    connection in the env var the Secret fills. ``bundles(repo_url)`` -> a new
    DagBundlesManager; ``bundles.storage_path(name)`` -> a new, empty bundle storage."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    config = json.loads(rendered_bundle_config(bundle_render))

    def manager(repo_url: str) -> DagBundlesManager:
        config[0]["kwargs"]["repo_url"] = repo_url
        monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(config))
        monkeypatch.setenv(
            CONN_ENV, json.dumps({"conn_type": "git", "host": repo_url, "login": "airflow", "password": "read-only"})
        )
        return DagBundlesManager()

    def storage_path(name: str) -> Path:
        """A fresh bundle storage: what a new pod starts with (an empty /tmp)."""
        path = tmp_path / name
        monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH", str(path))
        return path

    manager.storage_path = storage_path
    return manager


def bundle_version(bundle) -> str:
    version = bundle.get_current_version()
    return getattr(version, "version", version)   # a BundleVersion from Airflow 3.3 on


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and ".git" not in p.parts
    }


def test_airflow_builds_the_rendered_bundle(bundles):
    from airflow.providers.git.bundles.git import GitDagBundle

    bundles.storage_path("storage")
    (bundle,) = bundles("http://platform-git/dags.git").get_all_dag_bundles()
    assert isinstance(bundle, GitDagBundle)
    assert (bundle.name, bundle.tracking_ref, bundle.subdir, bundle.git_conn_id) == ("dags", "main", "dags", "git_dags")
    assert bundle.repo_url == "http://platform-git/dags.git"
    assert bundle.refresh_interval == 30
    assert bundle.supports_versioning
    # The connection in the form the platform chart renders it: the credential reaches git.
    assert (bundle.hook.user_name, bundle.hook.auth_token) == ("airflow", "read-only")


def test_the_bundle_builds_without_the_connection_where_nothing_clones(bundles, monkeypatch, airflow_db):
    """The scheduler and API server do not get the credential; repo_url in the overlay lets
    Airflow still build the bundle object there (no clone, no credential)."""
    bundles.storage_path("storage")
    manager = bundles("http://platform-git/dags.git")
    monkeypatch.delenv(CONN_ENV)
    bundle = manager.get_bundle("dags")
    assert bundle.repo_url == "http://platform-git/dags.git"
    assert bundle.hook is None


def test_dag_processor_clones_the_pushed_dags(bundles, git, tmp_path):
    repo = DagRepository(git, tmp_path / "server")
    commit = repo.push(DAGS, "dags")
    bundles.storage_path("dag-processor")
    bundle = bundles(str(repo.bare)).get_bundle("dags")
    bundle.initialize()

    assert bundle_version(bundle) == commit
    assert (bundle.path / "category_dags.py").is_file()
    assert files(bundle.path) == files(DAGS)


def test_dags_of_the_bundle_parse_like_the_working_tree(bundles, git, tmp_path):
    """categories.yaml is found next to the DAG files in the bundle's checkout too."""
    from airflow.dag_processing.dagbag import DagBag

    repo = DagRepository(git, tmp_path / "server")
    repo.push(DAGS, "dags")
    bundles.storage_path("dag-processor")
    bundle = bundles(str(repo.bare)).get_bundle("dags")
    bundle.initialize()

    from_bundle = DagBag(dag_folder=bundle.path, safe_mode=True)
    assert from_bundle.import_errors == {}
    assert set(from_bundle.dag_ids) == set(DagBag(dag_folder=DAGS, safe_mode=True).dag_ids)
    assert "category_electronics" in from_bundle.dag_ids


def test_a_task_pod_runs_the_version_of_its_dag_run(bundles, git, tmp_path):
    """Versioned runs: a run created at commit 1 executes commit 1's files, even after a push
    of commit 2 that the DAG processor has already picked up. The task pod starts with empty
    storage and clones that exact commit."""
    repo = DagRepository(git, tmp_path / "server")
    first = repo.push(DAGS, "dags")
    bundles.storage_path("dag-processor")
    manager = bundles(str(repo.bare))
    tracking = manager.get_bundle("dags")
    tracking.initialize()

    changed = tmp_path / "changed-dags"
    shutil.copytree(DAGS, changed, ignore=shutil.ignore_patterns("__pycache__"))
    (changed / "category_dags.py").write_text((DAGS / "category_dags.py").read_text() + "\n# commit 2\n")
    second = repo.push(changed, "commit 2")
    tracking.refresh()
    assert bundle_version(tracking) == second
    assert (tracking.path / "category_dags.py").read_text().endswith("# commit 2\n")

    bundles.storage_path("task-pod")
    pinned = manager.get_bundle("dags", version=first)
    pinned.initialize()
    assert bundle_version(pinned) == first
    assert files(pinned.path) == files(DAGS)


def test_a_run_whose_commit_is_gone_fails_instead_of_running_other_code(bundles, git, tmp_path):
    """E.g. main rewritten by a force-push (the platform's git server refuses those)."""
    from airflow.exceptions import AirflowException

    repo = DagRepository(git, tmp_path / "server")
    repo.push(DAGS, "dags")
    gone = repo.push(DAGS, "never pushed", push=False)
    storage = bundles.storage_path("task-pod")
    with pytest.raises(AirflowException, match=f"Version {gone} not found in the repository"):
        bundles(str(repo.bare)).get_bundle("dags", version=gone).initialize()
    assert not list(storage.rglob("category_dags.py"))
