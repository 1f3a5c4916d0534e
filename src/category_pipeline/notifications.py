"""Who hears of a failed task: the ``alerts`` of categories.yaml as Airflow notifiers.

``failure_callbacks(category)`` (or the defaults' ``Alerts``, for the summary DAG) gives the
``on_failure_callback`` list of a DAG's tasks: e-mail through the SMTP provider's
SmtpNotifier, and JSON through the HTTP provider's HttpNotifier to a webhook (a Slack
incoming webhook reads its ``text``; other receivers read the named fields). Both name the
DAG, the task, the order date (the run's logical date, ``ds``), the error's first line and
the task log's UI link. Host, login, password and the webhook URL are the connections'
(from Secrets); categories.yaml names only the connection ids.

Task-level callbacks (through ``default_args``) run in the task's own process after its last
try, where the connections and the error are at hand; a retry sends nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from airflow.providers.http.notifications.http import HttpNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from category_pipeline.config import Alerts, Category, EmailAlert, WebhookAlert, clip

# A subject line and a chat message stay readable whatever the exception says.
MAX_ERROR_LINE_CHARS = 300
WEBHOOK_TIMEOUT_SECONDS = 30

SUBJECT = (
    "[Airflow] {{ failure.dag_id }}: {{ failure.task_id }} failed for order date {{ failure.order_date }}"
    " - {{ failure.error }}"
)
HTML = """<p><b>{{ failure.dag_id | e }}</b>: task <b>{{ failure.task_id | e }}</b> failed for order date
<b>{{ failure.order_date | e }}</b> (run {{ failure.run_id | e }}, try {{ failure.try_number }}).</p>
<p>Error: <code>{{ failure.error | e }}</code></p>
<p>Log: <a href="{{ failure.log_url | e }}">{{ failure.log_url | e }}</a></p>"""
TEXT = (
    ":red_circle: {{ failure.dag_id }}: task {{ failure.task_id }} failed for order date {{ failure.order_date }}"
    "\nError: {{ failure.error }}\nLog: {{ failure.log_url }}"
)
# The webhook's JSON: `text` for Slack (and Mattermost, ...), the fields for anything else.
WEBHOOK_JSON = {
    "text": TEXT,
    "dag_id": "{{ failure.dag_id }}",
    "task_id": "{{ failure.task_id }}",
    "order_date": "{{ failure.order_date }}",
    "run_id": "{{ failure.run_id }}",
    "try_number": "{{ failure.try_number }}",
    "error": "{{ failure.error }}",
    "log_url": "{{ failure.log_url }}",
}


def error_line(error: BaseException | str | None) -> str:
    """The error's first non-empty line, after its type (``QualityGateError: ...``)."""
    if error is None:
        return "(no error recorded)"
    text = str(error)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if isinstance(error, BaseException):
        first = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return clip(first, MAX_ERROR_LINE_CHARS)


def failure_details(context: Any) -> dict[str, Any]:
    """What a failure message says, from a task callback's context."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", ""),
        "task_id": getattr(ti, "task_id", ""),
        "order_date": context.get("ds") or "",
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", ""),
        "try_number": getattr(ti, "try_number", ""),
        "error": error_line(context.get("exception")),
        "log_url": getattr(ti, "log_url", ""),
    }


class _RenderedPerFailure:
    """Render and send a copy of the notifier for each failure.

    BaseNotifier renders its template fields into itself, irreversibly: one instance shared
    by a DAG's tasks (default_args) would send the first failure's text again for the next
    failure in the same process (``dag.test()``, a local executor's forked worker)."""

    def __call__(self, *args) -> None:
        if len(args) != 1:  # not a task callback (the legacy SLA signature): as the provider does
            return super().__call__(*args)
        context = args[0]
        fresh = copy.copy(self)
        super(_RenderedPerFailure, fresh).__call__({**context, "failure": failure_details(context)})


class FailureEmail(_RenderedPerFailure, SmtpNotifier):
    """The SMTP provider's notifier, one rendering per failure."""


class FailureWebhook(_RenderedPerFailure, HttpNotifier):
    """The HTTP provider's notifier, one rendering per failure."""


def _email_notifier(alert: EmailAlert) -> FailureEmail:
    return FailureEmail(
        smtp_conn_id=alert.conn_id,
        to=list(alert.to),
        from_email=alert.from_email,
        subject=SUBJECT,
        html_content=HTML,
    )


def _webhook_notifier(alert: WebhookAlert) -> FailureWebhook:
    return FailureWebhook(
        http_conn_id=alert.conn_id,
        method="POST",
        json=copy.deepcopy(WEBHOOK_JSON),
        # HttpHook waits forever by default: a hanging receiver must not hold the task's slot.
        extra_options={"timeout": WEBHOOK_TIMEOUT_SECONDS},
    )


def failure_callbacks(category_or_defaults: Category | Alerts) -> list:
    """The ``on_failure_callback`` list for a category's tasks (its merged ``alerts``) or for
    a DAG that is no category (the defaults' ``alerts``, ``load_categories(...).alerts``);
    empty when alerts are off or name no channel."""
    alerts = category_or_defaults.alerts if isinstance(category_or_defaults, Category) else category_or_defaults
    if not isinstance(alerts, Alerts):
        raise TypeError(f"failure_callbacks needs a Category or Alerts, not {type(category_or_defaults).__name__}")
    if not alerts.enabled:
        return []
    callbacks = []
    if alerts.email is not None:
        callbacks.append(_email_notifier(alerts.email))
    if alerts.webhook is not None:
        callbacks.append(_webhook_notifier(alerts.webhook))
    return callbacks
