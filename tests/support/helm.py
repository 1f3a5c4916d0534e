"""Locating the real helm binary and the official Airflow chart for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The official chart version `make deploy` installs; keep in step with the Makefile.
AIRFLOW_CHART_VERSION = os.environ.get("AIRFLOW_CHART_VERSION", "1.20.0")
AIRFLOW_CHART_REPO = "https://airflow.apache.org"
PULLED_CHARTS = REPO / ".tools" / "charts"


class Unavailable(RuntimeError):
    """What a test needs is not on this machine; the message is the one-line reason."""


def helm_binary() -> str:
    found = shutil.which("helm") or shutil.which("helm", path=str(REPO / ".tools" / "bin"))
    if found:
        return found
    try:
        result = subprocess.run(
            [str(REPO / "scripts" / "install-tools.sh")], capture_output=True, text=True, timeout=300, check=True
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise Unavailable(f"helm not found and scripts/install-tools.sh failed: {exc}") from exc
    found = shutil.which("helm", path=result.stdout.strip().splitlines()[-1])
    if not found:
        raise Unavailable("helm not found after scripts/install-tools.sh")
    return found


def official_chart() -> Path:
    """The unpacked official chart: $AIRFLOW_CHART_DIR, else one pulled before into
    .tools/charts, else (only with AIRFLOW_CHART_PULL=1, it needs internet) `helm pull`."""
    configured = os.environ.get("AIRFLOW_CHART_DIR")
    if configured:
        chart = Path(configured)
        if not (chart / "Chart.yaml").is_file():
            raise Unavailable(f"AIRFLOW_CHART_DIR={configured} holds no Chart.yaml")
        return chart
    pulled = PULLED_CHARTS / f"airflow-{AIRFLOW_CHART_VERSION}" / "airflow"
    if (pulled / "Chart.yaml").is_file():
        return pulled
    if os.environ.get("AIRFLOW_CHART_PULL") != "1":
        raise Unavailable("official Airflow chart not available: set AIRFLOW_CHART_DIR or run `make chart-pull`")
    pulled.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [helm_binary(), "pull", "airflow", "--repo", AIRFLOW_CHART_REPO, "--version", AIRFLOW_CHART_VERSION,
             "--untar", "--untardir", str(pulled.parent)],
            capture_output=True, text=True, timeout=120, check=True,
        )
    except subprocess.SubprocessError as exc:
        raise Unavailable(f"helm pull of the official chart {AIRFLOW_CHART_VERSION} failed: {exc}") from exc
    return pulled


def helm(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise subprocess.CalledProcessError(result.returncode, ["helm", *args], result.stdout, result.stderr)
    return result.stdout
