"""No literal credential in values.yaml, its kind profile, the platform chart's values, or in
any rendered object of either chart (Secrets aside); and known-bad values prove the scan
finds each kind of leak, in the values and again in the render."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.support.credentials import find_literal_credentials
from tests.support.helm import REPO, render_official, render_platform

VALUES_FILES = ["values.yaml", "values-kind.yaml", "charts/airflow-platform/values.yaml",
                "charts/airflow-platform/values-kind.yaml"]


@pytest.mark.parametrize("path", VALUES_FILES)
def test_values_files_hold_no_literal_credential(path):
    assert find_literal_credentials(yaml.safe_load((REPO / path).read_text())) == []


@pytest.mark.parametrize("profile", [(), ("-f", str(REPO / "values-kind.yaml"))], ids=["default", "kind"])
def test_official_chart_render_holds_no_literal_credential(profile):
    objects = render_official(*profile)
    assert len(objects) >= 15
    findings = [f for obj in objects for f in find_literal_credentials(obj, f"{obj['kind']}/{obj['metadata']['name']}")]
    assert findings == []


def test_platform_chart_render_holds_no_literal_credential_outside_its_secrets():
    objects = render_platform()
    assert any(obj["kind"] == "Secret" for obj in objects)
    findings = [f for obj in objects for f in find_literal_credentials(obj, f"{obj['kind']}/{obj['metadata']['name']}")]
    assert findings == []


def _with(values: dict, path: str, value) -> dict:
    changed = copy.deepcopy(values)
    node = changed
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return changed


VALUES = yaml.safe_load((REPO / "values.yaml").read_text())
CREATE_USER = VALUES["createUserJob"]["args"][-1]
KNOWN_BAD = {
    # name: (values with one leak, what the render must then contain)
    "password on the create-user command line": (
        _with(VALUES, "createUserJob.args", ["bash", "-c", CREATE_USER + " --password hunter2"]),
        "Job/airflow-create-user",
    ),
    "password as an argument of its own": (
        _with(VALUES, "createUserJob.args", ["airflow", "users", "create", "-u", "admin", "-p", "hunter2"]),
        "Job/airflow-create-user",
    ),
    "--password= form": (
        _with(VALUES, "createUserJob.args", ["bash", "-c", "airflow users create --password=hunter2"]),
        "Job/airflow-create-user",
    ),
    "literal env var": (
        _with(VALUES, "env", [*VALUES["env"], {"name": "AIRFLOW__CORE__FERNET_KEY", "value": "bm90LWEtcmVhbC1rZXk="}]),
        "Deployment/airflow-scheduler",
    ),
    "connection URI with a password in config": (
        _with(VALUES, "config.database", {"sql_alchemy_conn": "postgresql://airflow:hunter2@db:5432/airflow"}),
        "ConfigMap/airflow-config",
    ),
    "fernet key in config": (
        _with(VALUES, "config.core", {**VALUES["config"]["core"], "fernet_key": "bm90LWEtcmVhbC1rZXk="}),
        "ConfigMap/airflow-config",
    ),
    "chart's own password field": (_with(VALUES, "createUserJob.defaultUser.password", "admin"), None),
    "webserverSecretKey": (_with(VALUES, "webserverSecretKey", "0123456789abcdef"), None),
}


@pytest.mark.parametrize("name", sorted(KNOWN_BAD))
def test_known_bad_values_are_caught_in_values_and_render(name, tmp_path):
    values, leaking_object = KNOWN_BAD[name]
    assert find_literal_credentials(values), f"the scan misses: {name}"
    if leaking_object is None:
        return
    path = tmp_path / "bad-values.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = render_official("-f", str(path))
    findings = [f for obj in objects for f in find_literal_credentials(obj, f"{obj['kind']}/{obj['metadata']['name']}")]
    assert any(f.startswith(leaking_object) for f in findings), findings


@pytest.mark.parametrize(
    "text",
    ['--password "$ADMIN_PASSWORD"', "--password ${ADMIN_PASSWORD}", "--password=$(cat /run/secret)",
     "http://platform-git/dags.git", "postgresql://user@host/db"],
)
def test_references_are_not_literals(text):
    assert find_literal_credentials({"args": ["bash", "-c", text]}) == []


def test_secrets_themselves_are_not_reported():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"password": "aHVudGVyMg=="}}
    assert find_literal_credentials(secret) == []
