"""The platform's own Helm chart, charts/airflow-platform, rendered by the real helm.

What the official Airflow chart's values rely on (fixed names, Secret keys, connection URIs),
the security settings of every pod, the NetworkPolicies, the toggles, strict validation of
every object against the Kubernetes 1.34 schemas (kind v0.30's node image), and that
credentials are read back from the cluster instead of being generated anew.

helm is found on PATH, else installed by scripts/install-tools.sh; without it (or without
kubernetes-validate) the tests are skipped, and fail when $CI is set.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.support.helm import Unavailable, helm_binary, unavailable

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "airflow-platform"
RELEASE = "platform"
NAMESPACE = "airflow"
KUBE_VERSION = "1.34.0"  # kindest/node:v1.34.0, the node image of kind v0.30 (scripts/install-tools.sh)
HELM_TIMEOUT = 120

# Default-deny, DNS, and each flow as the server's ingress + its clients' egress
# (tests/test_network_policies.py evaluates them).
NETWORK_POLICIES = {
    "platform-default-deny", "platform-dns",
    *(f"platform-{server}{side}" for server in ("warehouse", "metadata-db", "git", "api-server", "triggerer",
                                               "object-store", "statsd")
      for side in ("", "-clients")),
    "platform-object-store-buckets",
}
# Every object of a default render: (kind, name). The names are fixed: the official chart's
# values refer to them.
DEFAULT_OBJECTS = {
    ("Service", "platform-warehouse"),
    ("StatefulSet", "platform-warehouse"),
    ("Service", "platform-metadata-db"),
    ("StatefulSet", "platform-metadata-db"),
    ("Secret", "warehouse-connection"),
    ("Secret", "airflow-metadata-connection"),
    ("Secret", "airflow-fernet-key"),
    ("Secret", "airflow-api-secret-key"),
    ("Secret", "airflow-jwt-secret"),
    ("Secret", "git-credentials"),
    ("ConfigMap", "platform-git-server"),
    ("Deployment", "platform-git"),
    ("Service", "platform-git"),
    ("ServiceAccount", "airflow-task-runner"),
    *{("NetworkPolicy", name) for name in NETWORK_POLICIES},
    ("Secret", "airflow-admin-credentials"),
    ("Secret", "warehouse-superuser"),
    ("Secret", "metadata-db-superuser"),
    ("ConfigMap", "platform-warehouse-initdb"),
    ("ConfigMap", "platform-metadata-db-initdb"),
    ("Secret", "git-push-credentials"),
    ("Secret", "git-dags-connection"),
    ("Role", "airflow-task-pod-launcher"),
    ("RoleBinding", "airflow-task-pod-launcher"),
    ("Role", "airflow-task-log-reader"),
    ("RoleBinding", "airflow-task-log-reader"),
    ("ValidatingAdmissionPolicy", "airflow-platform-task-pods-airflow"),
    ("ValidatingAdmissionPolicyBinding", "airflow-platform-task-pods-airflow"),
    ("Service", "platform-object-store"),
    ("StatefulSet", "platform-object-store"),
    ("ConfigMap", "platform-object-store-buckets"),
    ("Job", "platform-object-store-buckets-1"),  # named after the release revision (1 in `helm template`)
    ("Secret", "object-store-credentials"),
    ("ConfigMap", "platform-grafana-dashboard"),  # the PrometheusRule needs its CRD (tests/test_monitoring.py)
}
# Cluster-scoped: named after the namespace, so that one release per namespace can coexist.
CLUSTER_SCOPED_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
SECRET_KEYS = {
    "warehouse-connection": {"uri", "password"},
    "airflow-metadata-connection": {"connection", "password"},
    "airflow-fernet-key": {"fernet-key"},
    "airflow-api-secret-key": {"api-secret-key"},
    "airflow-jwt-secret": {"jwt-secret"},
    "git-credentials": {"GITSYNC_USERNAME", "GITSYNC_PASSWORD", "GIT_SYNC_USERNAME", "GIT_SYNC_PASSWORD"},
    "git-push-credentials": {"username", "password"},
    "git-dags-connection": {"connection"},
    "airflow-admin-credentials": {"username", "password"},
    "warehouse-superuser": {"username", "password"},
    "metadata-db-superuser": {"username", "password"},
    "object-store-credentials": {"access-key-id", "secret-access-key", "connection"},
}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> "Helm":
    try:
        path = helm_binary()
    except Unavailable as exc:
        unavailable(str(exc))
    return Helm(path, tmp_path_factory.mktemp("helm-home"))


class Helm:
    """The helm binary, with its cache/config/data (and HOME) in a throwaway folder."""

    def __init__(self, path: str, home: Path):
        self.path = path
        self.env = {
            **os.environ,
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-kubeconfig"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.path, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=HELM_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    def template(self, *args: str, namespace: str = NAMESPACE) -> list[dict]:
        """Objects of `helm template platform <chart> --namespace <ns> <args>`."""
        result = self.run("template", RELEASE, str(CHART), "--namespace", namespace, *args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _index(objects: list[dict]) -> dict[tuple[str, str], dict]:
    index = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in index, f"rendered twice: {key}"
        index[key] = obj
    return index


def _secret_data(obj: dict) -> dict[str, str]:
    assert "stringData" not in obj
    return {key: base64.b64decode(value).decode() for key, value in obj["data"].items()}


def _pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.fixture(scope="module")
def rendered(helm) -> list[dict]:
    """The default render, once per module."""
    return helm.template()


@pytest.fixture(scope="module")
def objects(rendered) -> dict[tuple[str, str], dict]:
    return _index(rendered)


@pytest.fixture(scope="module")
def secrets(objects) -> dict[str, dict[str, str]]:
    return {name: _secret_data(obj) for (kind, name), obj in objects.items() if kind == "Secret"}


# -- chart, lint, schema ----------------------------------------------------------------------


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "airflow-platform"
    assert chart["version"] == "0.1.0"
    assert str(chart["appVersion"]) == "0.1.0"
    assert chart["kubeVersion"] == ">=1.29.0-0"  # 1.29 with admissionPolicy.enabled=false


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["--set", "gitServer.persistence.enabled=true,metadataDatabase.enabled=false,networkPolicies.enabled=false"],
    ],
    ids=["defaults", "toggled"],
)
def test_helm_lint_strict(helm, sets):
    result = helm.run("lint", "--strict", str(CHART), *sets)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "setting, complaint",
    [
        ("bogus=1", "'bogus' not allowed"),
        ("warehouse.persistance.size=1Gi", "'persistance' not allowed"),
        ("staging.accessMode=ReadWriteSometimes", "accessMode"),
        ("gitServer.uid=0", "uid"),
    ],
)
def test_values_schema_rejects_typos_and_bad_values(helm, setting, complaint):
    result = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert complaint in result.stderr, result.stderr


def test_values_file_matches_its_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    assert schema["additionalProperties"] is False


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, str(i)))
    else:
        yield path, node


def test_no_credentials_in_chart_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    suspicious = re.compile(r"pass|secret|token|fernet|jwt|key|^uri$|^connection$", re.IGNORECASE)
    leaves = list(_walk(values))
    assert leaves
    for path, value in leaves:
        if "matchExpressions" in path:  # a label selector's `key`
            continue
        assert not suspicious.search(path[-1]), f"{'.'.join(path)}: credentials have no place in values.yaml"
        if isinstance(value, str):
            assert not re.search(r"://[^/\s]*:[^/\s]*@", value), f"{'.'.join(path)} holds a URI with a password"


# -- objects and names ------------------------------------------------------------------------


def test_rendered_objects_are_exactly_the_contract(objects):
    assert set(objects) == DEFAULT_OBJECTS


def test_every_object_is_namespaced_and_labelled(rendered):
    for obj in rendered:
        meta = obj["metadata"]
        assert obj["apiVersion"] and obj["kind"] and meta["name"]
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in meta and meta["name"].endswith(f"-{NAMESPACE}"), meta["name"]
        else:
            assert meta["namespace"] == NAMESPACE, meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "airflow-platform"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "airflow-platform"
        assert labels["app.kubernetes.io/component"], meta["name"]


def test_rbac_objects_are_namespaced_roles_only(rendered):
    """Rights in this namespace only (tests/test_rbac.py compares who gets which)."""
    rbac = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered if obj["kind"] in RBAC_KINDS}
    assert rbac and {kind for kind, _ in rbac} == {"Role", "RoleBinding"}


def test_task_service_account_mounts_no_token(objects):
    account = objects[("ServiceAccount", "airflow-task-runner")]
    assert account["automountServiceAccountToken"] is False


# -- secrets ----------------------------------------------------------------------------------


def test_secret_keys_are_exactly_the_contract(secrets):
    assert {name: set(data) for name, data in secrets.items()} == SECRET_KEYS


def test_secrets_are_kept_on_uninstall(objects):
    for (kind, name), obj in objects.items():
        if kind == "Secret":
            assert obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", name
            assert obj["type"] == "Opaque"


def _assert_uri(uri: str, *, user: str, password: str, host: str, database: str):
    parts = urlsplit(uri)
    assert parts.scheme == "postgresql"
    assert parts.username == user
    assert parts.password == password
    assert parts.hostname == host
    assert parts.port == 5432
    assert parts.path == f"/{database}"
    assert uri == f"postgresql://{user}:{password}@{host}:5432/{database}"


@pytest.mark.parametrize(
    "secret,key,user,host,database",
    [
        ("warehouse-connection", "uri", "warehouse", "platform-warehouse", "warehouse"),
        ("airflow-metadata-connection", "connection", "airflow", "platform-metadata-db", "airflow"),
    ],
)
def test_connection_points_at_its_database(secrets, secret, key, user, host, database):
    data = secrets[secret]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["password"])
    _assert_uri(
        data[key], user=user, password=data["password"], host=f"{host}.airflow.svc.cluster.local", database=database
    )


def test_connection_hosts_follow_the_namespace(helm):
    secrets = {
        obj["metadata"]["name"]: _secret_data(obj)
        for obj in helm.template("--show-only", "templates/secrets.yaml", namespace="data")
    }
    assert "@platform-warehouse.data.svc.cluster.local:5432/" in secrets["warehouse-connection"]["uri"]
    assert "@platform-metadata-db.data.svc.cluster.local:5432/" in secrets["airflow-metadata-connection"]["connection"]


def test_git_credentials(secrets, helm):
    data = secrets["git-credentials"]
    assert data["GITSYNC_USERNAME"] == data["GIT_SYNC_USERNAME"] == "airflow"
    assert data["GITSYNC_PASSWORD"] == data["GIT_SYNC_PASSWORD"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["GITSYNC_PASSWORD"])

    other = _index(helm.template("--show-only", "templates/secrets.yaml", "--set", "gitCredentials.username=bob"))
    data = _secret_data(other[("Secret", "git-credentials")])
    assert data["GITSYNC_USERNAME"] == data["GIT_SYNC_USERNAME"] == "bob"


def test_generated_values_are_distinct_and_long(secrets):
    generated = [
        secrets["warehouse-connection"]["password"],
        secrets["airflow-metadata-connection"]["password"],
        secrets["airflow-fernet-key"]["fernet-key"],
        secrets["airflow-api-secret-key"]["api-secret-key"],
        secrets["airflow-jwt-secret"]["jwt-secret"],
        secrets["git-credentials"]["GITSYNC_PASSWORD"],
    ]
    assert len(set(generated)) == len(generated)
    assert all(len(value) >= 32 for value in generated)
    assert len(secrets["airflow-jwt-secret"]["jwt-secret"]) >= 64


def test_fernet_keys_are_valid(helm, secrets):
    from cryptography.fernet import Fernet

    keys = [secrets["airflow-fernet-key"]["fernet-key"]]
    # More renders: a standard-base64 '+' or '/' shows up in three of four keys.
    for _ in range(7):
        rendered = _index(helm.template("--show-only", "templates/secrets.yaml"))
        keys.append(_secret_data(rendered[("Secret", "airflow-fernet-key")])["fernet-key"])
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", key), key
        assert len(base64.urlsafe_b64decode(key)) == 32
        fernet = Fernet(key.encode())
        assert fernet.decrypt(fernet.encrypt(b"connection password")) == b"connection password"


def test_no_secret_value_outside_the_secrets(rendered, secrets):
    values = {value for data in secrets.values() for value in data.values() if len(value) >= 16}
    assert len(values) >= 8
    for obj in rendered:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        leaked = [value for value in values if value in text]
        assert not leaked, f"{obj['kind']}/{obj['metadata']['name']} contains a secret value"
    # Workloads take credentials from the Secrets, never as literal values.
    for obj in rendered:
        if obj["kind"] in WORKLOAD_KINDS:
            for container in _containers(_pod_spec(obj)):
                for name, item in _env(container).items():
                    if re.search(r"PASSWORD|SECRET|KEY", name):
                        assert "value" not in item and "secretKeyRef" in item["valueFrom"], name


# -- PostgreSQL -------------------------------------------------------------------------------

POSTGRES = [
    # (name, component, secret, database/user, the superuser's secret)
    ("platform-warehouse", "warehouse", "warehouse-connection", "warehouse", "warehouse-superuser"),
    ("platform-metadata-db", "metadata-db", "airflow-metadata-connection", "airflow", "metadata-db-superuser"),
]


@pytest.mark.parametrize("name, component, secret, database, superuser_secret", POSTGRES)
def test_postgres_statefulset(objects, name, component, secret, database, superuser_secret):
    sts = objects[("StatefulSet", name)]
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert spec["serviceName"] == name
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/component"] == component

    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default unless set
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}

    (container,) = _pod_spec(sts)["containers"]
    assert container["image"] == "postgres:17.6-bookworm"
    assert container["ports"] == [{"name": "postgresql", "containerPort": 5432, "protocol": "TCP"}]
    env = _env(container)
    assert env["POSTGRES_DB"]["value"] == database
    # The bootstrap superuser; the application role (APP_USER) is made by the init script
    # (tests/test_database_roles.py runs it).
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["POSTGRES_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": superuser_secret, "key": "password"}}
    assert env["APP_USER"]["value"] == database
    assert env["APP_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": secret, "key": "password"}}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    pgdata = env["PGDATA"]["value"]
    assert pgdata.startswith(mounts["data"].rstrip("/") + "/") and pgdata != mounts["data"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[0] == "pg_isready"
        assert f"--username={database}" in command and f"--dbname={database}" in command

    service = objects[("Service", name)]
    assert service["spec"]["clusterIP"] == "None"  # headless: the StatefulSet's governing Service
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(5432, "postgresql")]


def test_both_databases_come_from_one_template(objects):
    """The metadata database is the warehouse's StatefulSet with other names and sizes."""

    def shape(obj, renames):
        obj = copy.deepcopy(obj)
        assert obj["metadata"].pop("namespace") == NAMESPACE
        text = json.dumps(obj, sort_keys=True)
        for old, new in renames:
            text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
        obj = json.loads(text)
        container = _pod_spec(obj)["containers"][0]
        container.pop("args", None)  # postgresConfig differs
        container.pop("resources")
        obj["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] = None
        return obj

    warehouse = shape(
        objects[("StatefulSet", "platform-warehouse")],
        [("platform-warehouse-initdb", "INITDB"), ("warehouse-superuser", "SUPERUSER"),
         ("platform-warehouse", "NAME"), ("warehouse-connection", "SECRET"), ("warehouse", "DB")],
    )
    metadata = shape(
        objects[("StatefulSet", "platform-metadata-db")],
        [("platform-metadata-db-initdb", "INITDB"), ("metadata-db-superuser", "SUPERUSER"),
         ("platform-metadata-db", "NAME"), ("airflow-metadata-connection", "SECRET"), ("metadata-db", "DB"), ("airflow", "DB")],
    )
    assert warehouse == metadata


def test_postgres_settings_are_overridable(helm):
    objects = _index(
        helm.template(
            "--show-only", "templates/warehouse.yaml",
            "--set", "warehouse.image.tag=17.7-bookworm,warehouse.persistence.size=20Gi",
            "--set", "warehouse.persistence.storageClassName=fast-ssd",
            "--set", "warehouse.postgresConfig.shared_buffers=256MB",
        )
    )
    sts = objects[("StatefulSet", "platform-warehouse")]
    container = _pod_spec(sts)["containers"][0]
    assert container["image"] == "postgres:17.7-bookworm"
    assert container["args"] == ["postgres", "-c", "shared_buffers=256MB"]
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast-ssd"
    assert claim["resources"]["requests"]["storage"] == "20Gi"


def test_metadata_db_allows_enough_connections(objects):
    container = _pod_spec(objects[("StatefulSet", "platform-metadata-db")])["containers"][0]
    assert container["args"] == ["postgres", "-c", "max_connections=200"]


# -- pods: security and resources -------------------------------------------------------------

SECURE_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_USERS = {
    ("StatefulSet", "platform-warehouse"): (999, 999),
    ("StatefulSet", "platform-metadata-db"): (999, 999),
    ("Deployment", "platform-git"): (50000, 0),
    ("StatefulSet", "platform-object-store"): (10001, 10001),
    ("Job", "platform-object-store-buckets-1"): (50000, 0),
}


def _workloads(rendered):
    return {(o["kind"], o["metadata"]["name"]): o for o in rendered if o["kind"] in WORKLOAD_KINDS}


def test_every_pod_runs_as_non_root_with_least_privilege(rendered):
    workloads = _workloads(rendered)
    assert set(workloads) == set(POD_USERS)
    for key, obj in workloads.items():
        uid, fs_group = POD_USERS[key]
        pod = _pod_spec(obj)
        assert pod["automountServiceAccountToken"] is False, key
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, key
        assert pod["securityContext"]["runAsNonRoot"] is True, key
        assert pod["securityContext"]["runAsUser"] == uid, key
        assert pod["securityContext"]["fsGroup"] == fs_group, key
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, key
        for container in _containers(pod):
            context = container["securityContext"]
            assert SECURE_CONTAINER.items() <= context.items(), (key, container["name"])
            assert context["runAsUser"] == uid, (key, container["name"])
            assert "privileged" not in context or context["privileged"] is False


def test_every_container_has_requests_and_limits(rendered):
    for key, obj in _workloads(rendered).items():
        for container in _containers(_pod_spec(obj)):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (key, container["name"], kind)


def test_read_only_root_filesystems_have_writable_scratch(rendered):
    for key, obj in _workloads(rendered).items():
        pod = _pod_spec(obj)
        volumes = {v["name"] for v in pod.get("volumes", [])} | {
            t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])
        }
        for container in _containers(pod):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, (key, container["name"])
            assert set(mounts.values()) <= volumes, key


# -- git server -------------------------------------------------------------------------------


def test_git_server(objects):
    deployment = objects[("Deployment", "platform-git")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    assert container["image"] == "airflow-platform:0.1.0"
    assert container["command"] == ["python3", "/opt/git-server/git_http_server.py"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}

    env = _env(container)
    assert env["GIT_SERVER_READ_USERNAME"]["valueFrom"] == {"secretKeyRef": {"name": "git-credentials", "key": "GITSYNC_USERNAME"}}
    assert env["GIT_SERVER_READ_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "git-credentials", "key": "GITSYNC_PASSWORD"}}
    assert env["GIT_SERVER_PUSH_USERNAME"]["valueFrom"] == {"secretKeyRef": {"name": "git-push-credentials", "key": "username"}}
    assert env["GIT_SERVER_PUSH_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "git-push-credentials", "key": "password"}}
    assert {k: env[k]["value"] for k in env if k.startswith("GIT_SERVER_MAX") or k.endswith("_TIMEOUT")} == {
        "GIT_SERVER_MAX_CONNECTIONS": "512", "GIT_SERVER_MAX_WORKERS": "8", "GIT_SERVER_MAX_QUEUED": "16",
        "GIT_SERVER_IDLE_TIMEOUT": "30", "GIT_SERVER_REQUEST_TIMEOUT": "300", "GIT_SERVER_MAX_BODY_BYTES": "67108864"}
    assert env["GIT_PROJECT_ROOT"]["value"] == "/srv/git"
    assert env["GIT_SERVER_REPO"]["value"] == "dags.git"
    assert env["GIT_SERVER_PORT"]["value"] == "8080"

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/srv/git"]]["emptyDir"]  # persistence off by default
    assert volumes[mounts["/opt/git-server"]]["configMap"]["name"] == "platform-git-server"

    script = objects[("ConfigMap", "platform-git-server")]["data"]["git_http_server.py"]
    assert script.strip() == (CHART / "files" / "git_http_server.py").read_text().strip()

    service = objects[("Service", "platform-git")]
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"]["labels"]


def test_git_server_persistence(helm):
    objects = _index(
        helm.template(
            "--show-only", "templates/git-server.yaml",
            "--set", "gitServer.persistence.enabled=true,gitServer.persistence.storageClassName=standard",
        )
    )
    claim = objects[("PersistentVolumeClaim", "platform-git")]
    assert claim["spec"]["storageClassName"] == "standard"
    pod = _pod_spec(objects[("Deployment", "platform-git")])
    repositories = {v["name"]: v for v in pod["volumes"]}["repositories"]
    assert repositories == {"name": "repositories", "persistentVolumeClaim": {"claimName": "platform-git"}}


# NetworkPolicies: tests/test_network_policies.py evaluates them as a pod-to-pod matrix.


# -- staging ----------------------------------------------------------------------------------


def test_logs_volume(helm):
    objects = _index(helm.template("-f", SINGLE_NODE))
    claim = objects[("PersistentVolumeClaim", "airflow-logs")]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"] == "5Gi"


def test_staging_volume(helm):
    objects = _index(helm.template("-f", SINGLE_NODE))
    claim = objects[("PersistentVolumeClaim", "pipeline-staging")]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"] == "5Gi"
    assert "storageClassName" not in claim

    (other,) = helm.template(
        "--show-only", "templates/volumes.yaml",
        "--set", "staging.enabled=true,staging.accessMode=ReadWriteMany,staging.storageClassName=nfs,staging.size=50Gi",
    )
    assert other["spec"]["accessModes"] == ["ReadWriteMany"]
    assert other["spec"]["storageClassName"] == "nfs"
    assert other["spec"]["resources"]["requests"]["storage"] == "50Gi"


# -- toggles ----------------------------------------------------------------------------------

TOGGLES = {
    "gitServer.enabled=false": {
        ("ConfigMap", "platform-git-server"),
        ("Deployment", "platform-git"),
        ("Service", "platform-git"),
        ("NetworkPolicy", "platform-git"),
        ("NetworkPolicy", "platform-git-clients"),
    },
    "metadataDatabase.enabled=false": {
        ("Service", "platform-metadata-db"),
        ("StatefulSet", "platform-metadata-db"),
        ("Secret", "airflow-metadata-connection"),
        ("Secret", "metadata-db-superuser"),
        ("ConfigMap", "platform-metadata-db-initdb"),
        ("NetworkPolicy", "platform-metadata-db"),
        ("NetworkPolicy", "platform-metadata-db-clients"),
    },
    "networkPolicies.enabled=false": {key for key in DEFAULT_OBJECTS if key[0] == "NetworkPolicy"},
    "taskServiceAccount.create=false": {("ServiceAccount", "airflow-task-runner")},
    "monitoring.dashboard.enabled=false": {("ConfigMap", "platform-grafana-dashboard")},
    "gitCredentials.create=false": {
        ("Secret", "git-credentials"), ("Secret", "git-push-credentials"), ("Secret", "git-dags-connection"),
    },
    "rbac.create=false": {key for key in DEFAULT_OBJECTS if key[0] in ("Role", "RoleBinding")},
    "admissionPolicy.enabled=false": {key for key in DEFAULT_OBJECTS if key[0] in CLUSTER_SCOPED_KINDS},
    # An external store whose Secret the user creates: no server, no Job, no Secret, no flow
    # (tests/test_object_store_chart.py covers the other credential sources).
    "objectStore.enabled=false,objectStore.credentials.source=existingSecret": {
        key for key in DEFAULT_OBJECTS if "object-store" in key[1]
    },
}


@pytest.mark.parametrize("setting", sorted(TOGGLES))
def test_toggle_removes_exactly_its_objects(helm, setting):
    objects = _index(helm.template("--set", setting))
    assert set(objects) == DEFAULT_OBJECTS - TOGGLES[setting]


SINGLE_NODE = str(CHART / "values-single-node.yaml")


def test_the_single_node_option_trades_the_object_store_for_the_volumes(helm):
    """values-single-node.yaml: the two claims, and no store (its Secret stays, holding only
    a connection nobody uses: credentials.source=none)."""
    objects = set(_index(helm.template("-f", SINGLE_NODE)))
    claims = {("PersistentVolumeClaim", "pipeline-staging"), ("PersistentVolumeClaim", "airflow-logs")}
    store = {key for key in DEFAULT_OBJECTS if "object-store" in key[1]} - {("Secret", "object-store-credentials")}
    assert objects == (DEFAULT_OBJECTS - store) | claims


# -- strict schema validation -----------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes_validate():
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import all_versions
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)")
    assert KUBE_VERSION in all_versions(), all_versions()
    return kubernetes_validate


@pytest.fixture(scope="module")
def all_variants(helm, rendered) -> list[dict]:
    """The default render plus one with every optional field switched on."""
    return rendered + helm.template(
        "--set", "gitServer.persistence.enabled=true,gitServer.persistence.storageClassName=standard",
        "--set", "warehouse.persistence.storageClassName=standard,staging.storageClassName=standard",
        "--set", "staging.accessMode=ReadWriteMany,warehouse.postgresConfig.work_mem=16MB",
        "--set", "objectStore.persistence.storageClassName=standard,staging.enabled=true,logs.enabled=true",
        "--set-json", 'imagePullSecrets=[{"name":"regcred"}]',
    )


def test_every_object_validates_strictly_against_kubernetes_1_34(kubernetes_validate, all_variants):
    kinds = set()
    for obj in all_variants:
        try:
            assert kubernetes_validate.validate(obj, KUBE_VERSION, strict=True) == "1.34"
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        kinds.add(obj["kind"])
    assert {"StatefulSet", "Deployment", "Job", "Service", "Secret", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize(
    "where, typo",
    [(("spec",), "replicass"), (("spec", "template", "spec", "containers", 0), "securityContxt")],
)
def test_validator_rejects_typos(kubernetes_validate, objects, where, typo):
    broken = copy.deepcopy(objects[("StatefulSet", "platform-warehouse")])
    node = broken
    for part in where:
        node = node[part]
    node[typo] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match=typo):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


# -- credentials are kept: helm's lookup against a (fake) cluster ------------------------------

EXISTING = {
    "warehouse-connection": {"password": "KeptWarehousePassword0123456789", "uri": "stale"},
    "airflow-metadata-connection": {"password": "KeptMetadataPassword0123456789", "connection": "stale"},
    "airflow-fernet-key": {"fernet-key": "a2VwdC1mZXJuZXQta2V5LTMyLWJ5dGVzLWxvbmchISE="},
    "airflow-api-secret-key": {"api-secret-key": "KeptApiSecretKey"},
    "airflow-jwt-secret": {"jwt-secret": "KeptJwtSecret"},
    "git-credentials": {"GITSYNC_USERNAME": "someone-else", "GITSYNC_PASSWORD": "KeptGitPassword"},
    "airflow-admin-credentials": {"username": "admin", "password": "KeptAdminPassword"},
    "warehouse-superuser": {"username": "postgres", "password": "KeptWarehouseSuperuserPassword"},
    "metadata-db-superuser": {"username": "postgres", "password": "KeptMetadataSuperuserPassword"},
    "object-store-credentials": {"access-key-id": "KEPTACCESSKEY", "secret-access-key": "KeptObjectStoreSecret",
                                 "connection": "stale"},
}


class _FakeKubernetes(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API for `helm template --dry-run=server`: discovery, the
    Secrets in EXISTING (owned by release `platform`, as after an earlier install), 404 for
    everything else."""

    @staticmethod
    def _resources(group_version, *kinds, namespaced=True):
        return {
            "kind": "APIResourceList",
            "groupVersion": group_version,
            "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for plural, kind in kinds
            ],
        }

    def discovery(self):
        groups = ("apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "admissionregistration.k8s.io")
        return {
            "/version": {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "platform": "linux/amd64"},
            "/api": {"kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]},
            "/api/v1": self._resources(
                "v1", ("secrets", "Secret"), ("services", "Service"), ("configmaps", "ConfigMap"),
                ("persistentvolumeclaims", "PersistentVolumeClaim"), ("serviceaccounts", "ServiceAccount"),
                ("endpoints", "Endpoints"),
            ),
            "/apis/apps/v1": self._resources("apps/v1", ("statefulsets", "StatefulSet"), ("deployments", "Deployment")),
            "/apis/batch/v1": self._resources("batch/v1", ("jobs", "Job")),
            "/apis/networking.k8s.io/v1": self._resources("networking.k8s.io/v1", ("networkpolicies", "NetworkPolicy")),
            "/apis/rbac.authorization.k8s.io/v1": self._resources(
                "rbac.authorization.k8s.io/v1", ("roles", "Role"), ("rolebindings", "RoleBinding")),
            "/apis/admissionregistration.k8s.io/v1": self._resources(
                "admissionregistration.k8s.io/v1", ("validatingadmissionpolicies", "ValidatingAdmissionPolicy"),
                ("validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding"), namespaced=False),
        }

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.server.requests.append(path)
        discovery = self.discovery()
        if path in discovery:
            return self._send(200, discovery[path])
        parts = path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets" and parts[5] in EXISTING:
            return self._send(200, {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {
                    "name": parts[5], "namespace": parts[3],
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": parts[3]},
                },
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in EXISTING[parts[5]].items()},
            })
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_cluster(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKubernetes)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
        "current-context": "fake",
    }))
    try:
        yield kubeconfig, server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_upgrade_keeps_the_credentials_in_the_cluster(helm, fake_cluster):
    """What `helm upgrade` renders when the Secrets exist: their values, not new ones."""
    kubeconfig, requests = fake_cluster
    secrets = {
        obj["metadata"]["name"]: _secret_data(obj)
        for obj in helm.template(
            "--dry-run=server", "--disable-openapi-validation", "--kubeconfig", str(kubeconfig),
            "--show-only", "templates/secrets.yaml",
        )
    }
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/warehouse-connection" in requests  # lookup did ask

    warehouse = EXISTING["warehouse-connection"]["password"]
    assert secrets["warehouse-connection"] == {
        "password": warehouse,
        "uri": f"postgresql://warehouse:{warehouse}@platform-warehouse.airflow.svc.cluster.local:5432/warehouse",
    }
    metadata = EXISTING["airflow-metadata-connection"]["password"]
    assert secrets["airflow-metadata-connection"] == {
        "password": metadata,
        "connection": f"postgresql://airflow:{metadata}@platform-metadata-db.airflow.svc.cluster.local:5432/airflow",
    }
    for name in ("airflow-fernet-key", "airflow-api-secret-key", "airflow-jwt-secret", "airflow-admin-credentials",
                 "warehouse-superuser", "metadata-db-superuser"):
        assert secrets[name] == EXISTING[name]
    # The object store's keys are kept, its connection made anew from them.
    store = secrets["object-store-credentials"]
    assert (store["access-key-id"], store["secret-access-key"]) == ("KEPTACCESSKEY", "KeptObjectStoreSecret")
    assert json.loads(store["connection"])["password"] == "KeptObjectStoreSecret"
    # The password is kept; the user name comes from the values.
    git = EXISTING["git-credentials"]["GITSYNC_PASSWORD"]
    assert secrets["git-credentials"] == {
        "GITSYNC_USERNAME": "airflow", "GIT_SYNC_USERNAME": "airflow",
        "GITSYNC_PASSWORD": git, "GIT_SYNC_PASSWORD": git,
    }


def test_git_accounts_must_be_two_users(helm):
    with pytest.raises(AssertionError, match="must be different users"):
        helm.template("--show-only", "templates/git-server.yaml", "--set", "gitCredentials.pushUsername=airflow")


DIGEST = "sha256:" + "cd" * 32


@pytest.mark.parametrize("image_value, workload", [
    ("warehouse.image", ("StatefulSet", "platform-warehouse")),
    ("metadataDatabase.image", ("StatefulSet", "platform-metadata-db")),
    ("gitServer.image", ("Deployment", "platform-git")),
    ("objectStore.image", ("StatefulSet", "platform-object-store")),
    ("objectStore.bucketJob.image", ("Job", "platform-object-store-buckets-1")),
])
def test_an_image_digest_pins_the_image(helm, image_value, workload):
    objects = _index(helm.template("--set", f"{image_value}.digest={DIGEST}"))
    (container,) = _pod_spec(objects[workload])["containers"]
    repository = container["image"].split("@")[0]
    assert container["image"] == f"{repository}@{DIGEST}"
    for key, other in objects.items():
        if key[0] in WORKLOAD_KINDS and key != workload:
            assert all(DIGEST not in c["image"] for c in _pod_spec(other)["containers"]), key


def test_a_malformed_digest_is_refused(helm):
    result = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "warehouse.image.digest=sha256:abc")
    assert result.returncode != 0 and "/warehouse/image/digest" in result.stderr, result.stderr
