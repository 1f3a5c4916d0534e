"""`make deploy` as the Makefile runs it, checked against renders of both charts with the
real helm: what it waits for can become ready, every piece follows NAMESPACE, the kind
profile fits a laptop, and the official chart is the one version the tests render.

The commands come from `make -n deploy` (the recipe itself, not a copy of it); each
`helm upgrade --install` is rendered with `helm template` and the same arguments."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.support.helm import (
    AIRFLOW_CHART_VERSION,
    REPO,
    Unavailable,
    helm,
    official_chart_or_skip,
)

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
# A kind node on a 2-CPU Docker VM: its control plane requests ~0.95 CPU, so the platform
# gets at most ~0.6 CPU of requests to leave room for a category's task pods (0.35 CPU).
KIND_BUDGET = {"cpu": 0.6, "memory_gib": 2.0}


def make_dry_run(target: str, **variables: str) -> list[list[str]]:
    """The shell commands `make -n <target>` would run, one argv per logical line."""
    chart = official_chart_or_skip()
    settings = {"AIRFLOW_CHART_DIR": str(chart), **variables}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO), target, *(f"{k}={v}" for k, v in settings.items())],
        capture_output=True, text=True, check=True, timeout=60,
    )
    logical = result.stdout.replace("\\\n", " ")
    return [shlex.split(line) for line in logical.splitlines() if line.strip() and not line.startswith("#")]


class HelmInstall:
    """One `helm upgrade --install RELEASE CHART ...` of the recipe."""

    def __init__(self, argv: list[str]):
        start = argv.index("upgrade")
        self.release, self.chart = argv[start + 2], argv[start + 3]
        self.flags = argv[start + 4:]
        self.wait = "--wait" in self.flags
        self.namespace = self.flags[self.flags.index("--namespace") + 1]

    def template_args(self) -> list[str]:
        """The same values, for `helm template` (which has no install-only flags)."""
        args, flags = [], iter(self.flags)
        for flag in flags:
            if flag in ("--wait", "--create-namespace", "--install", "--atomic"):
                continue
            if flag == "--timeout":
                next(flags)
                continue
            args.append(flag)
        return args

    def render(self) -> list[dict]:
        chart = self.chart if self.chart.startswith("/") else str(REPO / self.chart)
        args = [str(REPO / a) if a.startswith(("values", "charts/")) else a for a in self.template_args()]
        try:
            output = helm("template", self.release, chart, *args)
        except Unavailable as exc:
            pytest.skip(str(exc))
        return [doc for doc in yaml.safe_load_all(output) if doc]


def helm_installs(commands: list[list[str]]) -> list[HelmInstall]:
    return [HelmInstall(argv) for argv in commands if "helm" in argv and "upgrade" in argv]


def _pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" else spec["template"]["spec"]


def claims_without_a_consumer(objects: list[dict]) -> set[str]:
    """PVCs of a render that no pod of the same render mounts: under a WaitForFirstConsumer
    StorageClass they stay Pending, so a `--wait` on that release never ends."""
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    mounted = set()
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            for volume in _pod_spec(obj).get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    mounted.add(volume["persistentVolumeClaim"]["claimName"])
    return claims - mounted


PROFILES = ["", "kind"]


@pytest.mark.parametrize("profile", [*PROFILES, "single-node"], ids=["default", "kind", "single-node"])
def test_deploy_waits_only_for_what_can_become_ready(profile):
    """helm --wait on a release with a claim no pod of that release mounts hangs until its
    timeout (helm/helm#10196): such a release must be installed without --wait, and its
    workloads waited for by name."""
    commands = make_dry_run("deploy", PROFILE=profile)
    installs = helm_installs(commands)
    assert [i.release for i in installs] == ["platform", "airflow"]
    for install in installs:
        objects = install.render()
        orphans = claims_without_a_consumer(objects)
        if install.wait:
            assert not orphans, f"release {install.release} is installed with --wait but claims {orphans} bind only later"
            continue
        # Without --wait: the recipe waits for every workload of the release, by its label.
        (wait,) = [" ".join(argv) for argv in commands if "rollout" in argv and "status" in argv]
        assert f"get statefulsets,deployments -l app.kubernetes.io/instance={install.release} -o name" in wait
        assert "test -n $workloads" in wait  # an empty or failed listing is an error, not "all ready"
        workloads = [o for o in objects if o["kind"] in LONG_RUNNING]
        assert {o["kind"] for o in workloads} == {"StatefulSet", "Deployment"}
        for obj in workloads:
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == install.release, obj["metadata"]["name"]


def test_the_single_node_render_has_the_claims_that_made_deploy_hang():
    """The check above is not vacuous: with the single-node option the platform chart renders
    claims that only the other release's pods mount (so the platform release must not --wait
    on them)."""
    (platform, _) = helm_installs(make_dry_run("deploy", PROFILE="single-node"))
    assert claims_without_a_consumer(platform.render()) == {"pipeline-staging", "airflow-logs"}
    assert not platform.wait


def _read_write_once_claims(objects: list[dict]) -> set[str]:
    return {
        o["metadata"]["name"] for o in objects
        if o["kind"] == "PersistentVolumeClaim" and "ReadWriteOnce" in o["spec"]["accessModes"]
    }


def _task_pod_claims(objects: list[dict]) -> set[str]:
    (template,) = [yaml.safe_load(o["data"]["pod_template_file.yaml"]) for o in objects
                   if o["kind"] == "ConfigMap" and "pod_template_file.yaml" in o.get("data", {})]
    return {v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v}


@pytest.mark.parametrize("profile", PROFILES, ids=["default", "kind"])
def test_no_task_pod_mounts_a_read_write_once_volume_by_default(profile):
    """On more than one node a ReadWriteOnce claim mounts on one node only: the task pods of
    the default install (both charts, as `make deploy` renders them) mount none; staging and
    logs are in the object store."""
    objects = [obj for install in helm_installs(make_dry_run("deploy", PROFILE=profile)) for obj in install.render()]
    assert _task_pod_claims(objects) == set()
    assert not {"pipeline-staging", "airflow-logs"} & _read_write_once_claims(objects)


def test_the_single_node_option_puts_task_pods_on_the_volumes():
    objects = [obj for install in helm_installs(make_dry_run("deploy", PROFILE="single-node")) for obj in install.render()]
    assert _task_pod_claims(objects) == {"pipeline-staging", "airflow-logs"} <= _read_write_once_claims(objects)


# -- namespace -----------------------------------------------------------------------------

OTHER_NAMESPACE = "analytics"


def test_every_deploy_command_follows_namespace():
    commands = make_dry_run("deploy", NAMESPACE=OTHER_NAMESPACE)
    cluster_commands = [argv for argv in commands if {"helm", "kubectl"} & set(argv) and "pull" not in argv]
    assert len(cluster_commands) >= 3
    for argv in cluster_commands:
        text = " ".join(argv)
        assert f"--namespace {OTHER_NAMESPACE}" in text or f"-n {OTHER_NAMESPACE}" in text, text
    (push,) = [argv for argv in commands if any(a.endswith("dags-push.sh") for a in argv)]
    assert f"NAMESPACE={OTHER_NAMESPACE}" in push
    for target in ("ui", "trigger", "dags-push"):
        text = " ".join(" ".join(argv) for argv in make_dry_run(target, NAMESPACE=OTHER_NAMESPACE))
        assert f"NAMESPACE={OTHER_NAMESPACE}" in text or f"-n {OTHER_NAMESPACE}" in text, target
        assert not re.search(r"(-n|--namespace)[ =]airflow\b|NAMESPACE=airflow\b", text), target


def test_both_charts_render_into_another_namespace_with_nothing_left_in_airflow():
    installs = helm_installs(make_dry_run("deploy", NAMESPACE=OTHER_NAMESPACE))
    objects = {install.release: install.render() for install in installs}
    for release, docs in objects.items():
        for obj in docs:
            namespace = obj["metadata"].get("namespace", OTHER_NAMESPACE)
            assert namespace == OTHER_NAMESPACE, f"{release}: {obj['kind']}/{obj['metadata']['name']} in {namespace}"
            text = yaml.safe_dump(obj)
            assert not re.search(r"\.airflow\.svc|namespace: airflow\b", text), f"{obj['kind']}/{obj['metadata']['name']}"
    # git-sync's repository is a Service of the platform release in the same namespace.
    repo = yaml.safe_load((REPO / "values.yaml").read_text())["dags"]["gitSync"]["repo"]
    host = repo.split("/")[2]
    services = {o["metadata"]["name"] for o in objects["platform"] if o["kind"] == "Service"}
    assert host in services or host.removesuffix(f".{OTHER_NAMESPACE}.svc.cluster.local") in services, host
    for obj in objects["platform"]:
        if obj["kind"] == "Secret":
            for value in obj.get("data", {}).values():
                import base64

                decoded = base64.b64decode(value).decode()
                if "svc.cluster.local" in decoded:
                    assert f".{OTHER_NAMESPACE}.svc.cluster.local" in decoded


def test_the_platform_client_follows_namespace(monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    import platform_api

    monkeypatch.setenv("NAMESPACE", OTHER_NAMESPACE)
    assert platform_api.current_namespace() == OTHER_NAMESPACE
    monkeypatch.delenv("NAMESPACE")
    assert platform_api.current_namespace() == "airflow"


# -- requests of a profile -----------------------------------------------------------------

_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def cpu_cores(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|k)?", str(quantity))
    assert match, quantity
    return float(match.group(1)) * _MEMORY_UNITS.get(match.group(2) or "", 1)


def pod_requests(pod_spec: dict) -> tuple[float, float]:
    """What the scheduler reserves for a pod: its containers' requests, or its largest init
    container's where that is more (init containers run one at a time, before the rest)."""

    def total(containers):
        requests = [c.get("resources", {}).get("requests", {}) for c in containers]
        return sum(cpu_cores(r.get("cpu", 0)) for r in requests), sum(memory_bytes(r.get("memory", 0)) for r in requests)

    cpu, memory = total(pod_spec["containers"])
    for init in pod_spec.get("initContainers", []):
        init_cpu, init_memory = total([init])
        cpu, memory = max(cpu, init_cpu), max(memory, init_memory)
    return cpu, memory


def total_requests(objects: list[dict]) -> dict[str, float]:
    """CPU cores and GiB the long-running pods of a render request, replicas counted."""
    cpu = memory = 0.0
    for obj in objects:
        if obj["kind"] in LONG_RUNNING:
            replicas = obj["spec"].get("replicas", 1)
            pod_cpu, pod_memory = pod_requests(_pod_spec(obj))
            cpu += replicas * pod_cpu
            memory += replicas * pod_memory
    return {"cpu": round(cpu, 3), "memory_gib": round(memory / 2**30, 2)}


def _limits(objects: list[dict]) -> dict[tuple[str, str], list]:
    return {
        (o["kind"], o["metadata"]["name"]): [c.get("resources", {}).get("limits") for c in _pod_spec(o)["containers"]]
        for o in objects
        if o["kind"] in WORKLOAD_KINDS
    }


@pytest.fixture(scope="module")
def profile_renders() -> dict[str, list[dict]]:
    return {
        profile or "default": [obj for install in helm_installs(make_dry_run("deploy", PROFILE=profile)) for obj in install.render()]
        for profile in PROFILES
    }


def test_kind_profile_fits_a_two_cpu_docker_vm(profile_renders, report):
    totals = {name: total_requests(objects) for name, objects in profile_renders.items()}
    summary = "; ".join(f"{name}: {t['cpu']:.2f} CPU, {t['memory_gib']:.2f} GiB" for name, t in totals.items())
    report(f"[deploy] requests of both releases before any task pod: {summary}")
    assert totals["default"]["cpu"] > KIND_BUDGET["cpu"]  # the problem the profile solves
    assert totals["kind"]["cpu"] <= KIND_BUDGET["cpu"], totals["kind"]
    assert totals["kind"]["memory_gib"] <= KIND_BUDGET["memory_gib"], totals["kind"]


def test_kind_profile_changes_requests_not_limits(profile_renders):
    assert _limits(profile_renders["kind"]) == _limits(profile_renders["default"])


def test_requests_arithmetic():
    spec = {
        "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
            {"resources": {"requests": {"cpu": "0.5", "memory": "512Mi"}}},
            {"resources": {}},
        ],
    }
    assert pod_requests(spec) == (1.0, 1.5 * 2**30)
    assert memory_bytes("1G") == 1e9 and memory_bytes("1073741824") == 2**30


def test_up_deploys_with_the_kind_profile():
    text = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO), "up"], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"make.* deploy PROFILE=kind\b", text), text


def test_an_unknown_profile_is_refused():
    chart = official_chart_or_skip()
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "deploy", "PROFILE=tiny", f"AIRFLOW_CHART_DIR={chart}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "PROFILE=tiny: no values-tiny.yaml" in result.stderr


# -- one official chart version ------------------------------------------------------------


def test_one_official_chart_version_everywhere():
    """The version `make deploy` installs (Makefile), the one the tests render
    (AIRFLOW_CHART_DIR), and the ones the docs name are the same."""
    chart = yaml.safe_load((official_chart_or_skip() / "Chart.yaml").read_text())
    assert chart["name"] == "airflow"
    assert chart["version"] == AIRFLOW_CHART_VERSION == "1.22.0"
    pull = " ".join(" ".join(argv) for argv in make_dry_run("chart-pull", AIRFLOW_CHART_DIR="/nonexistent/airflow"))
    assert f"--version {AIRFLOW_CHART_VERSION}" in pull
    for doc in ("README.md", "values.yaml"):
        named = set(re.findall(r"--version (\d+\.\d+\.\d+)|airflow (\d+\.\d+\.\d+)", (REPO / doc).read_text()))
        versions = {v for pair in named for v in pair if v}
        assert versions == {AIRFLOW_CHART_VERSION}, (doc, versions)
    labels = {o["metadata"].get("labels", {}).get("chart") for o in helm_installs(make_dry_run("deploy"))[1].render()}
    assert {label for label in labels if label and label.startswith("airflow-")} == {f"airflow-{AIRFLOW_CHART_VERSION}"}


# -- pod security --------------------------------------------------------------------------

RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def test_deploy_enforces_restricted_pod_security_on_the_namespace_before_installing():
    commands = make_dry_run("deploy", NAMESPACE=OTHER_NAMESPACE)
    (label_at,) = [i for i, argv in enumerate(commands)
                   if "kubectl" in argv and argv[argv.index("kubectl") + 3:][:2] == ["label", "namespace"]]
    argv = commands[label_at]
    assert argv[argv.index("namespace") + 1] == OTHER_NAMESPACE
    labels = dict(a.split("=", 1) for a in argv if a.startswith("pod-security.kubernetes.io/"))
    assert RESTRICTED_LABELS.items() <= labels.items()
    assert "--overwrite" in argv
    first_install = min(i for i, argv in enumerate(commands) if "upgrade" in argv and "helm" in argv)
    assert label_at < first_install, "the namespace must be labelled before any pod is created in it"
