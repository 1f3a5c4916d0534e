"""A real `airflow api-server` process for tests: started on a free loopback port with a
given environment, waited for until it answers, stopped with everything it started; and a
small JSON client for its REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

START_TIMEOUT = 120  # seconds; it answers after ~10 s here


class ApiServerFailed(RuntimeError):
    """The api-server exited or did not answer; the message ends with its output."""


def request(method: str, url: str, body: dict | None = None, token: str | None = None,
            accept: str = "application/json") -> tuple[int, object]:
    """(status, body): the body parsed as JSON when it is JSON, else text."""
    headers = {"Accept": accept}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                    timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class ApiServer:
    """``argv`` (e.g. the chart's ``bash -c 'exec airflow api-server'``) run in ``cwd`` with
    ``env``, on 127.0.0.1:``port``; its output goes to ``log``."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    port: int = 0
    _process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ApiServer":
        self.port = self.port or free_port()
        env = {**self.env, "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port),
               "AIRFLOW__API__WORKERS": "1"}
        with self.log.open("w") as output:
            # Its own session: stop() ends the group, i.e. this server and whatever it started.
            self._process = subprocess.Popen(self.argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                             stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_answering(f"{self.base}/api/v2/monitor/health")
        return self

    def _wait_until_answering(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ApiServerFailed(f"airflow api-server exited with {self._process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ApiServerFailed(f"airflow api-server did not answer {url} within {START_TIMEOUT}s:\n{self.output()}")

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        self._process = None
