"""The platform chart's monitoring (templates/monitoring.yaml): Grafana dashboard, PrometheusRule,
ServiceMonitor, rendered by the real helm and checked by the real promtool.

- The alert rules pass `promtool check rules` and the unit tests of tests/promtool/ (every alert
  firing and staying silent), run by `promtool test rules`.
- Every PromQL expression of the dashboard passes promtool (each one a recording rule).
- Every metric name in rules and dashboard is one that the statsd exporter produces from what
  Airflow and the pipeline send: the official chart's files/statsd-mappings.yml plus the
  statsd.extraMappings of values.yaml, applied to the StatsD names by a small matcher of the
  exporter's rules (glob `*` = one dot-separated part, regex, first match wins, `action: drop`,
  unmatched names escaped to `_`); plus kube-state-metrics' and Prometheus' `up`.

promtool comes from Debian's `prometheus` package (scripts/bootstrap.sh installs it); without it
the tests are skipped here and fail in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.helm import REPO, official_chart_or_skip, render_official, render_platform, unavailable

CHART = REPO / "charts" / "airflow-platform"
PROMTOOL_TESTS = REPO / "tests" / "promtool"
RULE_CRD = "monitoring.coreos.com/v1/PrometheusRule"
NAMESPACE = "airflow"
DASHBOARD = "platform-grafana-dashboard"
ALERTS = {
    "CategoryDagRunFailed", "CategoryNoSuccessfulRun", "CategoryQuarantineRatioTooHigh",
    "AirflowSchedulerHeartbeatMissing", "AirflowPodPending",
}
# Grafana's variables, replaced by plain values so that promtool can parse the expressions.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d",
    "$namespace": NAMESPACE, "$category": "home",
}
# Not from the statsd exporter: kube-state-metrics' pod phases, Prometheus' own scrape health.
OTHER_SOURCES = {"kube_pod_status_phase", "up"}

# What a category run sends (StatsD name after Airflow's prefix `airflow.`, StatsD type):
# the pipeline's metrics (the contract of issue 10) and Airflow's own, in the legacy names
# that carry dag_id/task_id (a task id of a TaskGroup with '__' for '.', as Airflow sends it).
CATEGORY, DAG_ID = "home", "category_home"
PIPELINE_STATS = [
    (f"pipeline.{CATEGORY}.rows_extracted", "c"),
    (f"pipeline.{CATEGORY}.rows_clean", "c"),
    (f"pipeline.{CATEGORY}.rows_quarantined.missing_field", "c"),
    (f"pipeline.{CATEGORY}.rows_loaded", "c"),
    (f"pipeline.{CATEGORY}.quarantine_ratio", "g"),
    (f"pipeline.{CATEGORY}.max_bad_row_ratio", "g"),
    *((f"pipeline.{CATEGORY}.step_duration.{step}", "ms") for step in ("extract", "validate", "compute_metrics", "load")),
]
AIRFLOW_STATS = [
    (f"dagrun.duration.success.{DAG_ID}", "ms"),
    (f"dagrun.duration.failed.{DAG_ID}", "ms"),
    (f"dag.{DAG_ID}.process__validate.duration", "ms"),
    (f"dag.{DAG_ID}.load.duration", "ms"),
    (f"ti.finish.{DAG_ID}.load.success", "c"),
    (f"ti.finish.{DAG_ID}.process__validate.failed", "c"),
    ("scheduler_heartbeat", "c"),
    ("dag_processor_heartbeat", "c"),
    # Airflow >= 3.2 also sends the new names, without dag_id/task_id in them.
    ("ti.finish", "c"),
    ("task.duration", "ms"),
    ("dagrun.duration.success", "ms"),
]
PIPELINE_METRICS = {
    "airflow_pipeline_rows_extracted", "airflow_pipeline_rows_clean", "airflow_pipeline_rows_quarantined",
    "airflow_pipeline_rows_loaded", "airflow_pipeline_quarantine_ratio", "airflow_pipeline_max_bad_row_ratio",
    "airflow_pipeline_step_duration",
}


# -- rendering ----------------------------------------------------------------------------------


def _find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


@pytest.fixture(scope="module")
def with_crd() -> list[dict]:
    return render_platform("--api-versions", RULE_CRD, "--set", "monitoring.serviceMonitor.enabled=true")


@pytest.fixture(scope="module")
def rule_groups(with_crd) -> dict:
    [rule] = _find(with_crd, "PrometheusRule", "platform-alerts")
    return rule["spec"]


@pytest.fixture(scope="module")
def dashboard(with_crd) -> dict:
    [config_map] = _find(with_crd, "ConfigMap", DASHBOARD)
    [(key, text)] = config_map["data"].items()
    assert key.endswith(".json")
    return json.loads(text)


def _expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _variable_selectors(dashboard: dict) -> list[str]:
    """The series selectors inside the dashboard variables' label_values(selector, label)."""
    selectors = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: not label_values(selector, label)"
            selectors.append(match.group(1))
    return selectors


def _grafana_free(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in re.sub(r'"[^"]*"', "", expr), f"unreplaced Grafana variable in: {expr}"
    return expr


def test_dashboard_is_a_configmap_for_grafanas_sidecar(with_crd, dashboard):
    [config_map] = _find(with_crd, "ConfigMap", DASHBOARD)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Runs by state", "Task durations (median)", "Rows per day", "Quarantine ratio vs quality gate",
            "Scheduler heartbeats / min", "Pods pending"} <= titles
    assert dashboard["uid"] == "airflow-platform"


def test_dashboard_label_and_switch_are_values():
    [config_map] = _find(render_platform("--set-json", 'monitoring.dashboard.labels={"grafana_dashboard":null,"team-dashboards":"airflow"}'),
                         "ConfigMap", DASHBOARD)
    assert config_map["metadata"]["labels"]["team-dashboards"] == "airflow"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert not _find(render_platform("--set", "monitoring.dashboard.enabled=false"), "ConfigMap", DASHBOARD)


def test_prometheus_rule_needs_the_crd_or_force(with_crd):
    assert not _find(render_platform(), "PrometheusRule"), "rendered without the CRD in the cluster"
    assert _find(with_crd, "PrometheusRule", "platform-alerts")
    assert _find(render_platform("--set", "monitoring.prometheusRule.force=true"), "PrometheusRule")
    assert not _find(render_platform("--api-versions", RULE_CRD, "--set", "monitoring.prometheusRule.enabled=false"),
                     "PrometheusRule")


def test_prometheus_rule_holds_every_alert(rule_groups):
    alerts = {rule["alert"] for group in rule_groups["groups"] for rule in group["rules"]}
    assert alerts == ALERTS
    text = json.dumps(rule_groups)
    assert "__" not in re.sub(r"__name__|[a-z]__[a-z]", "", text), "a placeholder of files/alert-rules.yaml is left"
    assert f'namespace=\\"{NAMESPACE}\\"' in text


def test_rule_thresholds_are_values():
    [rule] = _find(render_platform("--api-versions", RULE_CRD, "--set",
                                   "monitoring.prometheusRule.noSuccessHours=50,monitoring.prometheusRule.podPendingMinutes=3,"
                                   "monitoring.metricsSelector=job=\"statsd\""), "PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert "offset 50h" in rules["CategoryNoSuccessfulRun"]["expr"]
    assert rules["AirflowPodPending"]["for"] == "3m"
    assert 'airflow_scheduler_heartbeat{job="statsd"}' in rules["AirflowSchedulerHeartbeatMissing"]["expr"]


def test_service_monitor_selects_the_official_statsd_service(with_crd):
    assert not _find(render_platform(), "ServiceMonitor"), "the ServiceMonitor is optional, off by default"
    [monitor] = _find(with_crd, "ServiceMonitor", "platform-airflow-statsd")
    [service] = _find(render_official("--set", "statsd.enabled=true"), "Service", "airflow-statsd")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["port"] == 9102 and port["protocol"] == "TCP"


# -- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        unavailable("promtool not found (Debian package prometheus; scripts/bootstrap.sh installs it)")
    return found


def _promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_alert_rules_pass_promtool_check(promtool, rule_groups, tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    result = _promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_alert_rules_pass_their_promtool_unit_tests(promtool, rule_groups, tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    tests = sorted(PROMTOOL_TESTS.glob("*.yaml"))
    assert tests, "no unit test in tests/promtool"
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    result = _promtool(promtool, "test", "rules", *(t.name for t in tests), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_broken_rule(promtool, rule_groups, tmp_path):
    """The unit tests can fail: with the quarantine alert firing at its maximum (>=) they do."""
    broken = yaml.safe_load(yaml.safe_dump(rule_groups))
    for group in broken["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "CategoryQuarantineRatioTooHigh":
                rule["expr"] = rule["expr"].replace("> on (category)", ">= on (category)")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken))
    shutil.copy(PROMTOOL_TESTS / "alerts-test.yaml", tmp_path)
    result = _promtool(promtool, "test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert result.returncode != 0 and "CategoryQuarantineRatioTooHigh" in result.stdout + result.stderr


def test_every_alert_fires_and_stays_silent_in_the_unit_tests():
    fired, silent = set(), set()
    for test_file in PROMTOOL_TESTS.glob("*.yaml"):
        for test in yaml.safe_load(test_file.read_text())["tests"]:
            for case in test["alert_rule_test"]:
                (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert fired == ALERTS, f"never expected to fire: {ALERTS - fired}"
    assert silent == ALERTS, f"never expected to stay silent: {ALERTS - silent}"


def test_dashboard_expressions_pass_promtool(promtool, dashboard, tmp_path):
    expressions = _expressions(dashboard) + _variable_selectors(dashboard)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expression_{index}", "expr": _grafana_free(expr)} for index, expr in enumerate(expressions)
    ]}]}
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump(rules))
    result = _promtool(promtool, "check", "rules", "dashboard-rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


# -- metric names: what the statsd exporter produces -----------------------------------------


def _statsd_values() -> dict:
    return yaml.safe_load((REPO / "values.yaml").read_text()).get("statsd") or {}


def test_values_yaml_turns_on_the_statsd_exporter_with_the_pipeline_mappings():
    statsd = _statsd_values()
    assert statsd.get("enabled") is True, "values.yaml: statsd.enabled is not true"
    mapped = {mapping.get("name") for mapping in statsd.get("extraMappings") or []}
    assert PIPELINE_METRICS <= mapped, f"values.yaml lacks the pipeline mappings: {sorted(PIPELINE_METRICS - mapped)}"
    annotations = statsd.get("podAnnotations") or {}
    assert annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == "9102"


def _glob_pattern(glob: str) -> re.Pattern:
    # statsd_exporter's glob: `*` matches within one dot-separated part.
    return re.compile("".join("([^.]+)" if part == "*" else re.escape(part) for part in re.split(r"(\*)", glob)))


def _exporter_name(stat: str, stat_type: str, mappings: list[dict]) -> tuple[set[str], dict] | None:
    """Prometheus series names and labels the exporter makes of one StatsD metric, or None
    (dropped). Summaries (timers by default) and histograms add their suffixes."""
    for mapping in mappings:
        if mapping.get("match_type") == "regex":
            match = re.search(mapping["match"], stat)
        else:
            match = _glob_pattern(mapping["match"]).fullmatch(stat)
        if not match:
            continue
        if mapping.get("action") == "drop":
            return None
        name = mapping["name"]
        labels = {key: re.sub(r"\$(\d+)", lambda m: match.group(int(m.group(1))), str(value))
                  for key, value in (mapping.get("labels") or {}).items()}
        observer = mapping.get("observer_type", "summary")
        break
    else:
        name, labels, observer = re.sub(r"[^a-zA-Z0-9_]", "_", stat), {}, "summary"
    if stat_type != "ms":
        return {name}, labels
    suffixes = ("_bucket", "_sum", "_count") if observer == "histogram" else ("", "_sum", "_count")
    return {name + suffix for suffix in suffixes}, labels


@pytest.fixture(scope="module")
def produced() -> dict[str, dict]:
    """Prometheus name -> labels, of every StatsD metric a category run sends."""
    chart_file = official_chart_or_skip() / "files" / "statsd-mappings.yml"
    mappings = yaml.safe_load(chart_file.read_text())["mappings"] + (_statsd_values().get("extraMappings") or [])
    names = {}
    for stat, stat_type in PIPELINE_STATS + AIRFLOW_STATS:
        result = _exporter_name(f"airflow.{stat}", stat_type, mappings)
        if result:
            for name in result[0]:
                names[name] = result[1]
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "bool", "offset", "inf", "nan"}


def _metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers that are no function, keyword,
    label (in {...}, by/on/without/ignoring/group_x (...)), string or duration."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+[0-9a-z]+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in PROMQL_WORDS:
            names.add(match.group(1))
    return names


def test_metric_name_extraction():
    assert _metric_names('sum by (dag_id) (increase(a_b{x="y{z}"}[5m])) > on (c) max(d offset 1h) or absent(e)') == {
        "a_b", "d", "e"}


def test_the_pipeline_metrics_map_to_the_contracts_names(produced):
    families = set(produced) | {re.sub(r"_(bucket|sum|count)$", "", name) for name in produced}
    assert PIPELINE_METRICS <= families, f"values.yaml lacks the pipeline mappings: {PIPELINE_METRICS - families}"
    assert produced["airflow_pipeline_rows_quarantined"] == {"category": CATEGORY, "reason": "missing_field"}
    assert produced["airflow_pipeline_step_duration_bucket"] == {"category": CATEGORY, "step": "load"}
    assert produced["airflow_task_duration"] == {"dag_id": DAG_ID, "task_id": "load"}
    assert produced["airflow_ti_finish"]["dag_id"] == DAG_ID


def test_every_metric_in_rules_and_dashboard_is_produced(produced, rule_groups, dashboard):
    expressions = [rule["expr"] for group in rule_groups["groups"] for rule in group["rules"]]
    expressions += [_grafana_free(expr) for expr in _expressions(dashboard) + _variable_selectors(dashboard)]
    used = set().union(*map(_metric_names, expressions))
    assert {"airflow_dagrun_failed_count", "airflow_pipeline_quarantine_ratio", "kube_pod_status_phase"} <= used
    unknown = used - set(produced) - OTHER_SOURCES
    assert not unknown, f"metric names no mapping produces: {sorted(unknown)}"
