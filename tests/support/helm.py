"""Locating the real helm binary and the official Airflow chart for tests, and rendering it.

The chart version is the Makefile's AIRFLOW_CHART_VERSION, the one `make deploy` installs:
read from there, so that there is one place to change it. Where the chart or helm is
missing, a test is skipped on a laptop and FAILS in CI (CI=true, where .ci/run sets
AIRFLOW_CHART_DIR): an official-chart test never passes by not running.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_CHART_REPO = "https://airflow.apache.org"
PULLED_CHARTS = REPO / ".tools" / "charts"


def makefile_chart_version() -> str:
    match = re.search(r"^AIRFLOW_CHART_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins no AIRFLOW_CHART_VERSION"
    return match.group(1)


AIRFLOW_CHART_VERSION = makefile_chart_version()


class Unavailable(RuntimeError):
    """What a test needs is not on this machine; the message is the one-line reason."""


def unavailable(reason: str):
    """Skip the test here, or fail it in CI, where everything it needs must be present."""
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


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


def official_chart_or_skip() -> Path:
    try:
        return official_chart()
    except Unavailable as exc:
        unavailable(str(exc))


def helm(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise subprocess.CalledProcessError(result.returncode, ["helm", *args], result.stdout, result.stderr)
    return result.stdout


@functools.lru_cache(maxsize=None)
def _render(chart: str, release: str, namespace: str, args: tuple[str, ...]) -> tuple[dict, ...]:
    output = helm("template", release, chart, "--namespace", namespace, *args)
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def render_official(*args: str, namespace: str = "airflow") -> list[dict]:
    """The official chart rendered as release `airflow` with values.yaml (and ``args``, e.g.
    ``-f values-kind.yaml``). Skipped where the chart is missing, failed in CI."""
    chart = official_chart_or_skip()
    return copy.deepcopy(list(_render(str(chart), "airflow", namespace, ("-f", str(REPO / "values.yaml"), *args))))


def render_platform(*args: str, namespace: str = "airflow") -> list[dict]:
    """This repo's charts/airflow-platform rendered as release `platform`."""
    try:
        return copy.deepcopy(list(_render(str(REPO / "charts" / "airflow-platform"), "platform", namespace, args)))
    except Unavailable as exc:
        unavailable(str(exc))
