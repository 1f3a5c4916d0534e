"""Can the kind suite run here? Installs what it can (helm, kubectl, kind for this OS and
architecture, through scripts/install-tools.sh) and finds what it cannot: a Docker engine
and the internet (kind pulls its node image, the cluster pulls PostgreSQL, git-sync and the
Airflow base image).

    python -m tests.kind.preflight      # `make test-kind` runs this first

Prints nothing and exits 0 when the suite can run; otherwise prints one line,
"make test-kind: cannot run: <reason>", and exits 1. The suite never skips into a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
# What kind pulls first; any answer (even 401) from it proves the network path works.
REGISTRY_PROBE = "https://registry-1.docker.io/v2/"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _docker_problem() -> str | None:
    if not shutil.which("docker"):
        return "no docker command (install Docker)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 30 s"
    if info.returncode:
        return f"no Docker engine reachable (docker info: {_last_line(info.stderr) or 'failed'})"
    return None


def _network_problem() -> str | None:
    try:
        urllib.request.urlopen(REGISTRY_PROBE, timeout=15).close()
    except urllib.error.HTTPError:
        return None  # the registry answered (401 without a token): it is reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no internet: {REGISTRY_PROBE} is unreachable ({reason}); kind and the cluster pull images"
    return None


def _tools_problem() -> str | None:
    try:
        result = subprocess.run(
            [str(REPO / "scripts" / "install-tools.sh"), "--with-kind"],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "scripts/install-tools.sh --with-kind did not finish within 600 s"
    if result.returncode:
        return f"scripts/install-tools.sh --with-kind failed: {_last_line(result.stderr) or 'no message'}"
    path = f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"
    missing = [tool for tool in ("kind", "helm", "kubectl", "git") if not shutil.which(tool, path=path)]
    if missing:
        return f"{', '.join(missing)} not found after scripts/install-tools.sh --with-kind"
    return None


def problem() -> str | None:
    """The one-line reason the kind suite cannot run here, or None."""
    return _docker_problem() or _network_problem() or _tools_problem()


def main() -> int:
    reason = problem()
    if reason:
        print(f"make test-kind: cannot run: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
