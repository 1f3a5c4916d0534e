"""The kind integration suite: brings the whole platform up on a new kind cluster with the
same Makefile targets users run (`make up`: the kind profile), in a namespace other than
the default one (so that every piece is seen to follow NAMESPACE), then drives it through
the REST API.

Needs Docker and internet (node, git-sync, PostgreSQL and official Airflow images are
pulled); helm, kubectl and kind are installed by scripts/install-tools.sh. Where the suite
cannot run, it stops the session with a one-line reason and a non-zero exit
(tests/kind/preflight.py): it never skips into a pass. Run it with `make test-kind`.

KEEP_CLUSTER=1 keeps the cluster afterwards for inspection. The next run deletes a kept
cluster and starts anew, unless REUSE_CLUSTER=1 asks to reuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kind import preflight

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
CLUSTER = os.environ.get("KIND_CLUSTER", "airflow-platform-test")
NAMESPACE = os.environ.get("KIND_NAMESPACE", "pipelines")
PROFILE = "kind"
sys.path.insert(0, str(REPO / "scripts"))


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.kind)


def make(*targets: str, **variables: str) -> None:
    settings = {"KIND_CLUSTER": CLUSTER, "NAMESPACE": NAMESPACE, "PROFILE": PROFILE, **variables}
    subprocess.run(
        ["make", "-C", str(REPO), *targets, *(f"{key}={value}" for key, value in settings.items())],
        check=True, timeout=3600,
    )


def cluster_exists(name: str = CLUSTER) -> bool:
    listing = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, timeout=60)
    return name in listing.stdout.split()


def bring_up(make=make, exists=cluster_exists, reuse: bool = False) -> str:
    """`make up` on a new cluster: one kept by an earlier run (KEEP_CLUSTER=1) is deleted
    first, unless ``reuse`` (REUSE_CLUSTER=1). Returns what was done, for the log."""
    if exists():
        if reuse:
            done = f"reusing the kept cluster {CLUSTER} (REUSE_CLUSTER=1)"
        else:
            make("down")
            done = f"deleted the cluster {CLUSTER} kept by an earlier run (REUSE_CLUSTER=1 would reuse it), then created it anew"
    else:
        done = f"created the cluster {CLUSTER}"
    make("up")
    return done


@pytest.fixture(scope="session")
def platform():
    """The platform deployed on a new kind cluster (`make up`), deleted afterwards."""
    reason = preflight.problem()
    if reason:
        pytest.exit(f"make test-kind: cannot run: {reason}", returncode=1)
    os.environ["PATH"] = f"{TOOLS}{os.pathsep}{os.environ['PATH']}"
    os.environ["KUBECONFIG"] = str(REPO / ".local" / f"kubeconfig-{CLUSTER}")
    os.environ["NAMESPACE"] = NAMESPACE  # scripts/platform_api.py and dags-push.sh follow it
    print(f"kind suite: {bring_up(reuse=os.environ.get('REUSE_CLUSTER') == '1')}")
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
