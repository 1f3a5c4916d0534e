#!/usr/bin/env python3
"""A small client of a deployed platform: Airflow's REST API (v2) through a port-forward.

    python scripts/platform_api.py trigger CATEGORY [--date YYYY-MM-DD] [--wait]
    python scripts/platform_api.py backfill CATEGORY --from YYYY-MM-DD --to YYYY-MM-DD [--no-wait]
    python scripts/platform_api.py password        # the UI admin password

The namespace is $NAMESPACE (`make` passes its NAMESPACE), default "airflow", or --namespace.
Used by `make trigger`, `make backfill TARGET=cluster`, `make ui` and the kind test suite.
Standard library only (urllib, not the apache-airflow-client package), so it runs before any
virtualenv exists; kubectl must be on PATH. The backfill's progress line and table come from
src/category_pipeline/backfill.py, whose shared part is standard library only as well.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# The backfill helpers shared with the laptop mode (standard library only).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from category_pipeline import backfill as shared  # noqa: E402

DEFAULT_NAMESPACE = "airflow"
API_SERVICE = "svc/airflow-api-server"
API_PORT = 8080
ADMIN_SECRET = "airflow-admin-credentials"
ADMIN_USER = "admin"


def current_namespace() -> str:
    """The platform's namespace: $NAMESPACE, as `make` passes it, else "airflow"."""
    return os.environ.get("NAMESPACE") or DEFAULT_NAMESPACE


def kubectl(*args: str, namespace: str | None = None, check: bool = True) -> str:
    namespace = namespace or current_namespace()
    result = subprocess.run(["kubectl", "-n", namespace, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def secret_value(name: str, key: str, namespace: str | None = None) -> str:
    encoded = kubectl("get", "secret", name, "-o", f"jsonpath={{.data.{key}}}", namespace=namespace)
    return base64.b64decode(encoded).decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def port_forward(target: str, remote_port: int, namespace: str | None = None) -> Iterator[int]:
    """Forward a free local port to ``target``; yields the local port."""
    local = _free_port()
    process = subprocess.Popen(
        ["kubectl", "-n", namespace or current_namespace(), "port-forward", target, f"{local}:{remote_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"port-forward to {target} failed: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.3)
        yield local
    finally:
        process.terminate()
        process.wait(timeout=10)


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url.rstrip("/")
        self.token = self._token(username, password)

    def _token(self, username: str, password: str) -> str:
        body = self._request("POST", "/auth/token", {"username": username, "password": password}, auth=False)
        return body["access_token"]

    def _request(self, method: str, path: str, payload: dict | None = None, auth: bool = True, raw: bool = False):
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=json.dumps(payload).encode() if payload is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read().decode()
        return data if raw else json.loads(data)

    def get(self, path: str, raw: bool = False):
        return self._request("GET", path, raw=raw)

    def dag_exists(self, dag_id: str) -> bool:
        try:
            self.get(f"/api/v2/dags/{dag_id}")
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        """Wait until the DAG processor has parsed ``dag_id`` (a new deploy or push needs a
        git-sync period plus a parse): unpausing or triggering it before then is a 404."""
        deadline = time.monotonic() + timeout
        while not self.dag_exists(dag_id):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id} is not in the Airflow API after {timeout:.0f} s: the DAG processor has not parsed it "
                    "(see the import errors in the UI, or kubectl logs deploy/airflow-dag-processor -c dag-processor)"
                )
            time.sleep(3)

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, logical_date: str, run_id: str | None = None) -> str:
        """Trigger one run for ``logical_date`` under a run id of our own (a valid pod label
        value, so its task pods can be found by it), after the DAG is parsed and unpaused.

        Unpausing also lets the scheduler start the DAG's latest scheduled run: whatever
        follows this run must select by the returned run id, never by DAG id alone."""
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        run_id = run_id or f"manual-{logical_date}-{uuid.uuid4().hex[:8]}"
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": f"{logical_date}T00:00:00Z"},
        )
        return run["dag_run_id"]

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{self.quote(run_id)}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(5)
        raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")

    @staticmethod
    def quote(run_id: str) -> str:
        return urllib.parse.quote(run_id, safe="")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        entry = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{self.quote(run_id)}/taskInstances/{task_id}/xcomEntries/{key}")
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        return self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{self.quote(run_id)}/taskInstances/{task_id}/logs/{try_number}", raw=True
        )

    # --- backfills (Airflow 3's Backfill: its runs are executed by the cluster's scheduler) ---

    def create_backfill(self, dag_id: str, start: str, end: str, max_active_runs: int = 10) -> dict:
        """POST /api/v2/backfills for the order dates ``start``..``end`` (both included), after
        the DAG is parsed and unpaused (queued runs of a paused DAG never start). Finished runs
        of those days are re-processed: a rerun replaces the days' partitions again."""
        from_date, to_date = shared.date_window(shared.parse_day(start, "FROM"), shared.parse_day(end, "TO"))
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        try:
            return self._request("POST", "/api/v2/backfills", {
                "dag_id": dag_id, "from_date": from_date, "to_date": to_date,
                "reprocess_behavior": shared.REPROCESS_BEHAVIOR, "max_active_runs": max_active_runs,
            })
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise shared.BackfillError(f"POST /api/v2/backfills for {dag_id} refused ({exc.code}): {detail}") from None

    def backfill(self, backfill_id: int) -> dict:
        return self.get(f"/api/v2/backfills/{backfill_id}")

    def backfills(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/backfills?dag_id={urllib.parse.quote(dag_id)}")["backfills"]

    def backfill_runs(self, backfill: dict) -> list[dict]:
        """The backfill's runs: the backfill-type runs of its window (a rerun re-uses the
        day's run, so there is one per day), oldest first."""
        query = urllib.parse.urlencode({
            "run_type": "backfill", "logical_date_gte": backfill["from_date"], "logical_date_lte": backfill["to_date"],
            "order_by": "logical_date", "limit": 1000,
        })
        runs = self.get(f"/api/v2/dags/{backfill['dag_id']}/dagRuns?{query}")["dag_runs"]
        return [{"order_date": run["logical_date"][:10], "run_id": run["dag_run_id"], "state": run["state"]} for run in runs]

    def watch_backfill(self, backfill: dict, timeout: float = shared.DEFAULT_TIMEOUT, poll: float = 5.0,
                       out=None) -> list[dict]:
        """Print progress until the scheduler marks the backfill complete; its runs."""
        progress = shared.Progress(backfill["dag_id"], out)
        deadline = time.monotonic() + timeout
        while True:
            runs = self.backfill_runs(backfill)
            progress.update(Counter(run["state"] for run in runs), len(runs))
            if self.backfill(backfill["id"])["completed_at"] and all(r["state"] in shared.FINISHED for r in runs):
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill['id']} of {backfill['dag_id']} did not finish within {timeout:.0f} s")
            time.sleep(poll)

    def rows_loaded(self, dag_id: str, runs: list[dict]) -> list[dict]:
        """Per day: the run's state and what its load reported (orders rows loaded, and the
        rows of the day's earlier load they replaced)."""
        table = []
        for run in runs:
            orders = {}
            if run["state"] == "success":
                orders = (self.xcom(dag_id, run["run_id"], "load") or {}).get("orders", {})
            table.append({"order_date": run["order_date"], "run": run["state"],
                          "orders_loaded": orders.get("loaded"), "replaced": orders.get("replaced")})
        return table


def run_backfill(api: AirflowApi, dag_id: str, start: str, end: str, wait: bool = True,
                 timeout: float = shared.DEFAULT_TIMEOUT, poll: float = 5.0) -> int:
    """`make backfill TARGET=cluster`: create the backfill, follow it, print the per-day table."""
    try:
        backfill = api.create_backfill(dag_id, start, end)
    except shared.BackfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"backfill {backfill['id']} of {dag_id}, {start}..{end}: created", flush=True)
    if not wait:
        return 0
    runs = api.watch_backfill(backfill, timeout=timeout, poll=poll)
    print(f"\norders of {dag_id} per order date, as each run's load reported them:\n")
    print(shared.format_table(api.rows_loaded(dag_id, runs), ("order_date", "run", "orders_loaded", "replaced")))
    failed = [run for run in runs if run["state"] != "success"]
    print(f"\n{len(runs) - len(failed)}/{len(runs)} backfill runs succeeded")
    return 1 if failed or not runs else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    trigger = sub.add_parser("trigger", help="trigger category_<CATEGORY> (or any DAG id)")
    trigger.add_argument("category")
    trigger.add_argument("--date", default=time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400)))
    trigger.add_argument("--wait", action="store_true", help="wait for the run to finish")
    backfill = sub.add_parser("backfill", help="backfill category_<CATEGORY> over order dates FROM..TO")
    backfill.add_argument("category")
    backfill.add_argument("--from", dest="start", required=True, help="first order date, YYYY-MM-DD")
    backfill.add_argument("--to", dest="end", required=True, help="last order date, YYYY-MM-DD (included)")
    backfill.add_argument("--no-wait", action="store_true", help="create it and return (the scheduler runs it)")
    sub.add_parser("password", help="print the UI admin password")
    parser.add_argument("--namespace", help=f"the platform's namespace (default: $NAMESPACE or {DEFAULT_NAMESPACE})")
    args = parser.parse_args(argv)
    if args.namespace:
        os.environ["NAMESPACE"] = args.namespace

    if args.command == "backfill":
        try:  # a bad date range fails here, before any cluster call
            shared.date_window(shared.parse_day(args.start, "FROM"), shared.parse_day(args.end, "TO"))
        except shared.BackfillError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    password = secret_value(ADMIN_SECRET, "password")
    if args.command == "password":
        print(password)
        return 0
    dag_id = args.category if args.category.startswith(("category_", "advanced_")) else f"category_{args.category}"
    with port_forward(API_SERVICE, API_PORT) as port:
        api = AirflowApi(f"http://127.0.0.1:{port}", ADMIN_USER, password)
        if args.command == "backfill":
            return run_backfill(api, dag_id, args.start, args.end, wait=not args.no_wait)
        run_id = api.trigger(dag_id, args.date)
        print(f"triggered {dag_id} for {args.date}: run {run_id}")
        if args.wait:
            state = api.wait(dag_id, run_id)
            print(f"{dag_id} {run_id}: {state}")
            return 0 if state == "success" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
