"""The kind integration suite: brings the whole platform up on a kind cluster with the
same Makefile targets users run (`make up`), then drives it through the REST API.

Needs Docker, kind, helm, kubectl and internet (node, git-sync, PostgreSQL and official
Airflow images are pulled). Where any is missing the suite is skipped with a one-line
reason; it never pretends to pass. Run it with `make test-kind`.
KEEP_CLUSTER=1 keeps the cluster afterwards for inspection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
CLUSTER = os.environ.get("KIND_CLUSTER", "airflow-platform-test")
sys.path.insert(0, str(REPO / "scripts"))


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.kind)


def _missing_prerequisite() -> str | None:
    os.environ["PATH"] = f"{TOOLS}{os.pathsep}{os.environ['PATH']}"
    for tool in ("docker", "kind", "helm", "kubectl", "git"):
        if not shutil.which(tool):
            return f"{tool} not found (scripts/install-tools.sh --with-kind installs helm, kubectl, kind)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode:
        return "no Docker engine reachable (docker info failed)"
    probe = subprocess.run(["docker", "manifest", "inspect", "kindest/node:v1.34.0"], capture_output=True, timeout=60)
    if probe.returncode:
        return "no registry reachable: cannot pull kindest/node (kind needs internet)"
    return None


def make(*targets: str, **variables: str) -> None:
    settings = [f"{key}={value}" for key, value in {"KIND_CLUSTER": CLUSTER, **variables}.items()]
    subprocess.run(["make", "-C", str(REPO), *targets, *settings], check=True, timeout=3600)


@pytest.fixture(scope="session")
def platform():
    """The platform deployed on a fresh kind cluster, torn down afterwards."""
    missing = _missing_prerequisite()
    if missing:
        pytest.skip(f"kind suite: {missing}")
    os.environ["KUBECONFIG"] = str(REPO / ".local" / f"kubeconfig-{CLUSTER}")
    make("up")
    yield CLUSTER
    if os.environ.get("KEEP_CLUSTER") != "1":
        make("down")


@pytest.fixture(scope="session")
def api(platform):
    import platform_api

    with platform_api.port_forward(platform_api.API_SERVICE, platform_api.API_PORT) as port:
        yield platform_api.AirflowApi(
            f"http://127.0.0.1:{port}", platform_api.ADMIN_USER, platform_api.secret_value(platform_api.ADMIN_SECRET, "password")
        )
