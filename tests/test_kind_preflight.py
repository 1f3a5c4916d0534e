"""`make test-kind` where it cannot run stops with a one-line reason and a non-zero exit,
never an all-skipped pass: the Makefile target, the preflight, and the suite's own fixture.

Docker is taken away or replaced by a stub that fails (`docker info` exits 1): a stub at the
boundary of a Docker engine, which these tests must not need. The network check is pointed
at a closed port on loopback, so the result does not depend on this machine's network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.kind import preflight
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = Path(sys.executable)
VENV = Path(sys.prefix)


def _failing_docker(folder: Path) -> Path:
    stub = folder / "docker"
    stub.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    stub.chmod(0o755)
    return folder


def _reason_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "cannot run" in line]


def test_make_test_kind_without_docker_exits_non_zero_with_one_line(tmp_path):
    # Only the stub folder and the basic system folders: no docker, no kind on PATH.
    env = {**os.environ, "PATH": f"{_failing_docker(tmp_path)}:/usr/bin:/bin"}
    result = subprocess.run(
        # -o: the venv counts as installed (this test must not reinstall it on a bare PATH).
        ["make", "--no-print-directory", "-C", str(REPO), "test-kind", f"VENV={VENV}", "-o", f"{VENV}/.installed"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode != 0
    (reason,) = _reason_lines(result.stderr)
    assert reason.startswith("make test-kind: cannot run: no Docker engine reachable"), reason
    assert "Cannot connect to the Docker daemon" in reason
    assert "collected" not in result.stdout  # the suite did not start, so nothing was skipped


def test_preflight_names_a_missing_docker_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert preflight.problem() == "no docker command (install Docker)"


def test_preflight_names_a_missing_network(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    ok = tmp_path / "docker"
    ok.write_text("#!/bin/sh\nexit 0\n")
    ok.chmod(0o755)
    monkeypatch.setattr(preflight, "REGISTRY_PROBE", f"https://127.0.0.1:{free_port()}/v2/")
    reason = preflight.problem()
    assert reason.startswith("no internet: https://127.0.0.1:"), reason
    assert "kind and the cluster pull images" in reason


def test_the_suite_itself_exits_non_zero_instead_of_skipping(tmp_path):
    """pytest -m kind tests/kind, run without `make` (whose preflight would stop first)."""
    env = {**os.environ, "PATH": f"{_failing_docker(tmp_path)}:{VENV_PYTHON.parent}:/usr/bin:/bin"}
    result = subprocess.run(
        [str(VENV_PYTHON), "-m", "pytest", "-m", "kind", "tests/kind", "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "make test-kind: cannot run: no Docker engine reachable" in result.stdout + result.stderr
    assert " passed" not in result.stdout and " skipped" not in result.stdout


def test_a_kept_cluster_is_deleted_before_the_next_run_unless_reuse_is_asked():
    """The suite's bring-up with `make` and `kind get clusters` recorded instead of run
    (no cluster can exist here): a kept cluster is never silently reused."""
    from tests.kind.conftest import bring_up

    calls: list[str] = []
    bring_up(make=calls.append, exists=lambda: True)
    assert calls == ["down", "up"]

    calls.clear()
    assert "reusing" in bring_up(make=calls.append, exists=lambda: True, reuse=True)
    assert calls == ["up"]

    calls.clear()
    bring_up(make=calls.append, exists=lambda: False)
    assert calls == ["up"]
