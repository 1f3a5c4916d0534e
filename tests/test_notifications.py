"""Failure notifications end to end: a category DAG built as dag_factory builds it, with
the callbacks of notifications.py, fails a real run (``dag.test()`` in a subprocess, the
real Airflow and its SQLite metadata DB). Its mail reaches a real SMTP server on loopback
(aiosmtpd) through the SMTP provider's notifier, its JSON a real HTTP server on loopback
through the HTTP provider's notifier; the test reads both."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from category_pipeline.config import Alerts
from category_pipeline.notifications import FailureEmail, FailureWebhook, error_line, failure_callbacks
from tests.conftest import DAGS, REPO
from tests.support.ports import free_port

SHIPPED = yaml.safe_load((DAGS / "categories.yaml").read_text())
ORDER_DATE = "2026-11-20"
API_BASE_URL = "http://airflow.example.test:8080"
WEBHOOK_PATH = "/services/T000/B000/not-a-real-secret"
SENDER = "airflow@pipeline.example"
ON_CALL = "oncall@pipeline.example"


# -- loopback receivers ------------------------------------------------------------------------


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1; yields the list the messages it accepted go to."""
    from aiosmtpd.controller import Controller

    received: list[dict] = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "data": envelope.content})
            return "250 Message accepted for delivery"

    controller = Controller(Keep(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, received
    finally:
        controller.stop()


@pytest.fixture
def webhook_server():
    """A real HTTP server on 127.0.0.1; yields (port, the requests it received)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def _connections(smtp_port: int, webhook_port: int) -> dict[str, str]:
    """The two connections as the cluster gets them from Secrets: environment variables."""
    return {
        "AIRFLOW_CONN_SMTP_ALERTS": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
            "extra": {"from_email": SENDER, "disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10},
        }),
        "AIRFLOW_CONN_ALERTS_WEBHOOK": json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}"}
        ),
    }


def _run(script: str, env: dict[str, str], path) -> dict:
    """``script``, written to ``path``, in a fresh Python (Airflow reads its settings at
    import): its last stdout line, JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    result = subprocess.run(
        [sys.executable, str(path)], env={**os.environ, **env}, cwd=REPO,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _wait_for(received: list, count: int) -> list:
    # The callbacks ran before dag.test() returned; the servers' threads may still be
    # storing the last message: a bounded wait, not a timing assertion.
    deadline = time.monotonic() + 10
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return received


# -- a failing category run -------------------------------------------------------------------

CATEGORY_RUN = """
import json, sys
from datetime import datetime, timezone
sys.path.insert(0, "plugins")  # the operator, as Airflow loads it
from custom_load_operator import CustomLoadOperator
from category_pipeline.config import categories_file, load_categories
from category_pipeline.dag_factory import build_category_dag
from category_pipeline.notifications import failure_callbacks

config = load_categories(categories_file("dags"))
assert not config.errors, config.errors
(category,) = config.categories
dag = build_category_dag(category, CustomLoadOperator)
# As default_args (the lead's wiring in dag_factory) puts them on every task.
for task in dag.tasks:
    task.on_failure_callback = failure_callbacks(category)
run = dag.test(logical_date=datetime.fromisoformat("{day}").replace(tzinfo=timezone.utc))
states = {{ti.task_id: ti.state for ti in run.get_task_instances()}}
print(json.dumps({{"state": run.state, "run_id": run.run_id, "states": states}}))
"""


def test_a_failed_category_run_mails_and_posts_dag_task_order_date_error_and_log_link(
    airflow_db, tmp_path, smtp_server, webhook_server
):
    smtp_port, mails = smtp_server
    webhook_port, posts = webhook_server
    # An empty day: validate fails the quality gate at once (no retry), nothing is loaded.
    defaults = {**SHIPPED["defaults"], "alerts": {
        "enabled": False,  # the category switches them on alone, as categories.yaml says
        "email": {"conn_id": "smtp_alerts", "to": ["someone-else@pipeline.example"]},
        "webhook": {"conn_id": "alerts_webhook"},
    }}
    entry = {"name": "home", "source": {"kind": "synthetic", "rows_per_day": 0, "products": 5},
             "alerts": {"enabled": True, "email": {"to": [ON_CALL]}}}
    categories = tmp_path / "categories.yaml"
    categories.write_text(yaml.safe_dump({"defaults": defaults, "categories": [entry]}))

    result = _run(CATEGORY_RUN.format(day=ORDER_DATE), {
        **_connections(smtp_port, webhook_port),
        "PIPELINE_CATEGORIES_FILE": str(categories),
        "PIPELINE_STAGING_URI": str(tmp_path / "staging"),
        "AIRFLOW__API__BASE_URL": API_BASE_URL,
    }, tmp_path / "run_category.py")
    assert result["state"] == "failed"
    assert result["states"]["process.validate"] == "failed"
    assert result["states"]["load"] == "upstream_failed"

    error = ("AirflowFailException: quality gate of home for 2026-11-20: 0 rows, fewer than quality.min_rows = 1; "
             "nothing was loaded (the warehouse keeps the day as it was) (not retried: a retry cannot fix this)")
    log_url = (f"{API_BASE_URL}/dags/category_home/runs/{result['run_id'].replace(':', '%3A').replace('+', '%2B')}"
               "/tasks/process.validate?try_number=1")

    # One failed task, one mail: upstream_failed tasks do not notify.
    (mail,) = _wait_for(mails, 1)
    assert mail["from"] == SENDER
    assert mail["to"] == [ON_CALL]  # the category's list replaced the defaults' one
    message = email.message_from_bytes(mail["data"], policy=email.policy.default)
    subject = str(message["Subject"])
    assert subject.startswith("[Airflow] category_home: process.validate failed for order date 2026-11-20 - ")
    assert error[:80] in subject
    body = message.get_body(("html", "plain")).get_content()
    for expected in ("category_home", "process.validate", ORDER_DATE, error, log_url):
        assert expected in body, f"{expected!r} not in the mail:\n{body}"

    (post,) = _wait_for(posts, 1)
    assert post["path"] == WEBHOOK_PATH
    assert post["content_type"] == "application/json"
    payload = json.loads(post["body"])
    assert {key: payload[key] for key in ("dag_id", "task_id", "order_date", "error", "log_url", "try_number")} == {
        "dag_id": "category_home", "task_id": "process.validate", "order_date": ORDER_DATE,
        "error": error, "log_url": log_url, "try_number": "1",
    }
    assert payload["text"].splitlines() == [
        f":red_circle: category_home: task process.validate failed for order date {ORDER_DATE}",
        f"Error: {error}",
        f"Log: {log_url}",
    ]


# -- two failures in one process, and retries ---------------------------------------------------

TWO_FAILURES_RUN = """
import json
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG, task
from category_pipeline.config import Alerts
from category_pipeline.notifications import failure_callbacks

alerts = Alerts.model_validate({{"email": {{"conn_id": "smtp_alerts", "to": ["{to}"]}},
                                 "webhook": {{"conn_id": "alerts_webhook"}}}})
with DAG("notify_twice", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         default_args={{"on_failure_callback": failure_callbacks(alerts),
                        "retries": 1, "retry_delay": timedelta(seconds=0)}}) as dag:
    @task
    def first():
        raise ValueError("first broke\\nsecond line, not in the message")

    @task
    def second():
        raise RuntimeError("second broke")

    first(); second()

if __name__ == "__main__":  # not when the bundle's parse imports this file
    run = dag.test(logical_date=datetime.fromisoformat("{day}").replace(tzinfo=timezone.utc))
    states = {{ti.task_id: [ti.state, ti.try_number] for ti in run.get_task_instances()}}
    print(json.dumps({{"state": run.state, "states": states}}))
"""


def test_each_failure_sends_its_own_message_once_after_the_last_try(airflow_db, tmp_path, smtp_server, webhook_server):
    """The notifiers are shared through default_args and both tasks fail in one process:
    each message names its own task and error (a notifier renders into itself), and a
    task's first try, retried, sends nothing."""
    smtp_port, mails = smtp_server
    webhook_port, posts = webhook_server
    result = _run(TWO_FAILURES_RUN.format(to=ON_CALL, day=ORDER_DATE), {
        **_connections(smtp_port, webhook_port), "AIRFLOW__API__BASE_URL": API_BASE_URL,
        # dag.test() runs a DAG its bundle holds: this file, in a DAGs folder of its own.
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
    }, tmp_path / "dags" / "notify_twice.py")
    assert result == {"state": "failed", "states": {"first": ["failed", 2], "second": ["failed", 2]}}

    subjects = sorted(
        str(email.message_from_bytes(mail["data"], policy=email.policy.default)["Subject"])
        for mail in _wait_for(mails, 2)
    )
    assert subjects == [
        f"[Airflow] notify_twice: first failed for order date {ORDER_DATE} - ValueError: first broke",
        f"[Airflow] notify_twice: second failed for order date {ORDER_DATE} - RuntimeError: second broke",
    ]
    payloads = sorted((json.loads(post["body"]) for post in _wait_for(posts, 2)), key=lambda p: p["task_id"])
    assert [(p["task_id"], p["error"], p["try_number"]) for p in payloads] == [
        ("first", "ValueError: first broke", "2"),
        ("second", "RuntimeError: second broke", "2"),
    ]
    assert all(p["log_url"].endswith(f"/tasks/{p['task_id']}?try_number=2") for p in payloads)


# -- which notifiers a configuration gives -----------------------------------------------------


def test_callbacks_follow_the_alerts_configuration():
    both = Alerts.model_validate({"email": {"conn_id": "smtp_alerts", "to": ON_CALL},
                                  "webhook": {"conn_id": "alerts_webhook"}})
    email_notifier, webhook_notifier = failure_callbacks(both)
    assert isinstance(email_notifier, FailureEmail)
    assert (email_notifier.smtp_conn_id, email_notifier.to) == ("smtp_alerts", [ON_CALL])
    assert isinstance(webhook_notifier, FailureWebhook)
    assert webhook_notifier.http_conn_id == "alerts_webhook"

    assert failure_callbacks(both.model_copy(update={"enabled": False})) == []
    assert failure_callbacks(Alerts()) == []
    (only,) = failure_callbacks(both.model_copy(update={"email": None}))
    assert isinstance(only, FailureWebhook)


def test_callbacks_refuse_anything_but_a_category_or_alerts():
    with pytest.raises(TypeError, match="needs a Category or Alerts, not dict"):
        failure_callbacks({"email": {"conn_id": "smtp_alerts"}})


@pytest.mark.parametrize(
    "error, line",
    [
        (ValueError("bad row\nTraceback detail"), "ValueError: bad row"),
        (ValueError("\n\n  indented first line  \nmore"), "ValueError: indented first line"),
        (KeyError("order_id"), "KeyError: 'order_id'"),
        (RuntimeError(), "RuntimeError"),
        ("Task killed externally\nby the scheduler", "Task killed externally"),
        (None, "(no error recorded)"),
        (ValueError("x" * 1000), "ValueError: " + "x" * 287 + "…"),  # 300 characters
    ],
)
def test_the_error_line_is_the_type_and_first_line(error, line):
    assert error_line(error) == line
