"""`make airflow PORT=N` in the background: the UI/API on 127.0.0.1:N only, a DAG run through
the REST API executes its tasks against that port, and a stop signal (SIGTERM to make, or
SIGINT/SIGHUP to the job's process group as a shell's `kill %1` or a terminal sends them)
stops every process and frees every port within 10 s.

Real `make`, real `airflow standalone`, a throwaway AIRFLOW_HOME; no mock."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
STOP_BOUND_SECONDS = 10  # the bound on stopping everything


def _platform_api():
    spec = importlib.util.spec_from_file_location("platform_api", REPO / "scripts" / "platform_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_for_api(port: int, make: subprocess.Popen, output: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=5):
                return
        except OSError:
            pass
        assert make.poll() is None, f"make airflow exited {make.returncode}:\n{output.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"no API on 127.0.0.1:{port} after {timeout:.0f} s:\n{output.read_text()[-3000:]}")


def _ignore_sigint_like_a_background_job():
    # A non-interactive shell starts `cmd &` with SIGINT ignored, in a group of its own here
    # so that the test can signal the job as a whole.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgid(0, 0)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_background_make_airflow_on_another_port_runs_a_dag_and_stops_cleanly(stop_signal, tmp_path):
    port = _free_port()
    state = tmp_path / "state"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(state / "airflow"),
        "PIPELINE_STAGING_URI": str(state / "staging"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(state / "warehouse.db")}),
        # The log servers of the scheduler and the triggerer: free ports, not the developer's.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
    }
    venv = Path(sys.prefix)
    output = tmp_path / "airflow.out"
    with output.open("wb") as sink:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-C", str(REPO), "airflow", f"PORT={port}",
             f"VENV={venv}", "-o", f"{venv}/.installed"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_ignore_sigint_like_a_background_job,
        )
    try:
        _wait_for_api(port, make, output)
        pids = {make.pid} | {p.pid for p in psutil.Process(make.pid).children(recursive=True)}
        api_addresses = {ip for ip, p in _listening(pids) if p == port}
        assert api_addresses == {"127.0.0.1"}, f"the API listens on {api_addresses}, not only on loopback"

        if stop_signal == signal.SIGTERM:
            # Tasks reach the execution API on `port` too: a run succeeds.
            password = json.loads((state / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
            api = _platform_api().AirflowApi(f"http://127.0.0.1:{port}", "admin", password["admin"])
            run_id = api.trigger("category_home", "2026-11-20")  # unpauses it first
            assert api.wait("category_home", run_id, timeout=600) == "success", output.read_text()[-5000:]

        # Everything running now, and every port it holds, recorded before the signal.
        pids = {make.pid} | {p.pid for p in psutil.Process(make.pid).children(recursive=True)}
        ports = _listening(pids)
        assert (("127.0.0.1", port)) in ports
        assert len(pids) >= 6, f"expected make, local_run, standalone and its components, got {len(pids)}"

        if stop_signal == signal.SIGTERM:
            os.kill(make.pid, signal.SIGTERM)  # `kill PID` of the make process
        else:
            os.killpg(make.pid, stop_signal)  # the whole job, as `kill -INT %1` or a hangup does
        signalled = time.monotonic()
        make.wait(timeout=STOP_BOUND_SECONDS + 5)
        # Processes re-parented elsewhere still count: check each recorded pid.
        while any(_alive(pid) for pid in pids) and time.monotonic() - signalled < STOP_BOUND_SECONDS:
            time.sleep(0.2)
        survivors = {pid: psutil.Process(pid).cmdline() for pid in pids if _alive(pid)}
        assert not survivors, f"still running {STOP_BOUND_SECONDS} s after {stop_signal.name}: {survivors}"
        still_held = {(ip, p) for ip, p in ports if _port_in_use(p)}
        assert not still_held, f"ports still held after {stop_signal.name}: {still_held}"
    finally:  # a failed test leaves nothing running either
        for pid in pids_started(make) | locals().get("pids", set()):
            if pid != make.pid and _alive(pid):
                psutil.Process(pid).kill()
        if make.poll() is None:
            make.kill()
            make.wait()


def pids_started(make: subprocess.Popen) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(make.pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _port_in_use(port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.net_connections(kind="tcp")
    )
