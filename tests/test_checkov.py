"""checkov, a scanner of Kubernetes manifests for insecure settings, passes on what we deploy:
the official chart rendered with values.yaml, the KubernetesExecutor's task pod template, and
the platform chart with its defaults and without the git server. Every check that fails is
listed, with its reason, in tests/checkov-skips.yaml; a failure missing there fails the test,
and so does an entry there that no failure needs any more (a stale skip).

checkov runs from its own venv (scripts/install-checkov.sh, .tools/checkov): its pins clash
with Airflow's. Missing and not installable: skipped here, failed in CI.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import pod_template
from tests.support.helm import REPO, render_official, render_platform, unavailable

SKIPS_FILE = REPO / "tests" / "checkov-skips.yaml"
INSTALLER = REPO / "scripts" / "install-checkov.sh"
NAMESPACE = "airflow"
CHECK_ID = re.compile(r"^CKV2?_K8S_\d+$")
# The file of a scan that holds other manifests the scanned ones depend on (see _scans).
CONTEXT_FILE = "context.yaml"
# What a CKV_K8S_38 skip says when the token is off on the workload's ServiceAccount instead.
TOKEN_OFF_ON_SERVICE_ACCOUNT = "ServiceAccount mounts no token"


@dataclass(frozen=True)
class Failure:
    check_id: str
    check_name: str
    resource: str  # Kind/name of the rendered manifest that holds the failing setting

    def __str__(self) -> str:
        return f"{self.check_id} {self.resource}: {self.check_name}"


@dataclass(frozen=True)
class Scan:
    failures: list[Failure]
    resources: set[str]  # Kind/name of every manifest that checkov checked
    seconds: float


# --- the skip file ------------------------------------------------------------------------------


def load_skips(path: Path = SKIPS_FILE) -> dict[tuple[str, str], str]:
    """(check id, Kind/name glob) -> reason, from the skip file:

        CKV_K8S_43:
          "Deployment/airflow-*": the image is built locally; ...
    """
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a mapping of check id -> {{resource glob: reason}}")
    skips = {}
    for check_id, entries in data.items():
        if not CHECK_ID.match(str(check_id)):
            raise ValueError(f"{path.name}: {check_id!r} is not a checkov Kubernetes check id (CKV_K8S_n, CKV2_K8S_n)")
        if not isinstance(entries, dict) or not entries:
            raise ValueError(f"{path.name}: {check_id} needs a mapping of Kind/name glob -> reason")
        for resource, reason in entries.items():
            if not re.match(r"^[A-Za-z*?\[\]]+/\S+$", str(resource)):
                raise ValueError(f"{path.name}: {check_id}: {resource!r} is not Kind/name (globs allowed)")
            if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
                raise ValueError(f"{path.name}: {check_id} {resource}: the reason must be one non-empty line")
            skips[(check_id, resource)] = reason.strip()
    return skips


def skip_for(failure: Failure, skips: dict[tuple[str, str], str]) -> tuple[str, str] | None:
    for check_id, pattern in skips:
        if check_id == failure.check_id and fnmatch.fnmatchcase(failure.resource, pattern):
            return check_id, pattern
    return None


def unlisted(failures: list[Failure], skips: dict[tuple[str, str], str]) -> list[Failure]:
    return [f for f in failures if skip_for(f, skips) is None]


def stale(failures: list[Failure], skips: dict[tuple[str, str], str]) -> list[tuple[str, str]]:
    used = {skip_for(f, skips) for f in failures}
    return [key for key in skips if key not in used]


# --- running checkov ----------------------------------------------------------------------------


def checkov_binary() -> str:
    """The pinned checkov of .tools/checkov, installed by the (idempotent) script when missing."""
    try:
        result = subprocess.run([str(INSTALLER)], capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        unavailable(f"scripts/install-checkov.sh could not run: {exc}")
    if result.returncode or not result.stdout.strip():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        unavailable(f"scripts/install-checkov.sh failed (exit {result.returncode}): {last}")
    return result.stdout.strip().splitlines()[-1]


def write_manifests(path: Path, docs: list[dict]) -> list[tuple[int, str]]:
    """Writes ``docs`` as one multi-document YAML file; returns (first line, Kind/name) of each."""
    starts, lines, chunks = [], 1, []
    for doc in docs:
        text = yaml.safe_dump(doc, sort_keys=False)
        starts.append((lines, f"{doc['kind']}/{doc['metadata']['name']}"))
        chunks.append(text)
        lines += text.count("\n") + 1  # the document and its --- separator
    path.write_text("---\n".join(chunks))
    return starts


def run_checkov(binary: str, folder: Path, docs: list[dict], context: list[dict] = ()) -> Scan:
    """checkov over ``docs`` (written to folder/manifests.yaml). ``context``: manifests that
    checkov's graph checks need to see (written beside them), whose own results are dropped."""
    folder.mkdir(parents=True)
    starts = write_manifests(folder / "manifests.yaml", docs)
    if context:
        write_manifests(folder / CONTEXT_FILE, list(context))
    env = {
        **os.environ,
        # What `helm install --namespace airflow` gives every manifest (CKV_K8S_21 reads it).
        "HELM_NAMESPACE": NAMESPACE,
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    }
    started = time.monotonic()
    result = subprocess.run(
        # --skip-download: no call to the vendor's platform (no network here, nor needed).
        # No --quiet: with it the JSON report leaves out the passed checks, and so the
        # manifests that passed every check (test_checkov_checked_the_workloads_of_the_render).
        [binary, "-d", str(folder), "--framework", "kubernetes", "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    seconds = time.monotonic() - started
    if result.returncode not in (0, 1):  # 1: some check failed
        raise AssertionError(f"checkov exited {result.returncode}: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failures, resources = [], set()
    for part in reports:
        if part.get("check_type") != "kubernetes":
            continue
        summary = part["summary"]
        assert summary["parsing_errors"] == 0, f"checkov could not parse: {part['results'].get('parsing_errors')}"
        for outcome in ("passed_checks", "failed_checks"):
            for check in part["results"][outcome]:
                if Path(check["file_path"]).name == CONTEXT_FILE:
                    continue
                resource = _resource_at(starts, check["file_line_range"][0])
                resources.add(resource)
                if outcome == "failed_checks":
                    failures.append(Failure(check["check_id"], check["check_name"], resource))
    return Scan(sorted(set(failures), key=str), resources, seconds)


def _resource_at(starts: list[tuple[int, str]], line: int) -> str:
    """The manifest a checkov result points into: checkov's own resource ids would name the
    Pods it synthesizes from Deployments by their labels."""
    found = [name for first, name in starts if first <= line]
    assert found, f"checkov points at line {line}, before any manifest"
    return found[-1]


# --- the scans ----------------------------------------------------------------------------------


def _network_policies() -> list[dict]:
    return [d for d in render_platform() if d["kind"] == "NetworkPolicy"]


# id: (manifests, context, the resources it must have checked, so that an empty render fails)
SCANS = {
    # The platform chart's NetworkPolicies are what select the Airflow pods (CKV2_K8S_6).
    "official": (lambda: render_official(), _network_policies, {
        "Deployment/airflow-scheduler", "Deployment/airflow-api-server", "Deployment/airflow-dag-processor",
        "Deployment/airflow-triggerer", "Job/airflow-run-airflow-migrations", "Job/airflow-create-user"}),
    "task-pod-template": (lambda: [pod_template.from_chart()], _network_policies, {"Pod/placeholder-name"}),
    "platform": (lambda: render_platform(), list, {
        "StatefulSet/platform-warehouse", "StatefulSet/platform-metadata-db", "Deployment/platform-git"}),
    "platform-without-git-server": (lambda: render_platform("--set", "gitServer.enabled=false"), list, {
        "StatefulSet/platform-warehouse", "StatefulSet/platform-metadata-db"}),
}


@pytest.fixture(scope="module")
def checkov() -> str:
    return checkov_binary()


@pytest.fixture(scope="module")
def scans(checkov, tmp_path_factory) -> dict[str, Scan]:
    folder = tmp_path_factory.mktemp("checkov")
    done = {}
    for scan_id, (manifests, context, _) in SCANS.items():
        done[scan_id] = run_checkov(checkov, folder / scan_id, manifests(), context())
    return done


@pytest.fixture(scope="module")
def skips() -> dict[tuple[str, str], str]:
    return load_skips()


@pytest.mark.parametrize("scan_id", SCANS)
def test_checkov_checked_the_workloads_of_the_render(scans, scan_id, report):
    expected = SCANS[scan_id][2]
    scan = scans[scan_id]
    assert expected <= scan.resources, f"not checked: {sorted(expected - scan.resources)}"
    if scan_id == "platform-without-git-server":
        assert "Deployment/platform-git" not in scan.resources
    report(f"checkov {scan_id}: {len(scan.resources)} manifests, {len(scan.failures)} failed checks, {scan.seconds:.1f}s")


@pytest.mark.parametrize("scan_id", SCANS)
def test_every_failed_check_is_in_the_skip_file(scans, skips, scan_id):
    missing = unlisted(scans[scan_id].failures, skips)
    assert not missing, (
        f"checkov failures not in {SKIPS_FILE.name} (fix the values, or list them there with a reason):\n  "
        + "\n  ".join(map(str, missing)))


def test_no_stale_entry_in_the_skip_file(scans, skips):
    failures = [f for scan in scans.values() for f in scan.failures]
    unused = stale(failures, skips)
    assert not unused, (
        f"entries of {SKIPS_FILE.name} that no checkov failure needs any more (remove them):\n  "
        + "\n  ".join(f"{check_id} {resource}" for check_id, resource in unused))


def test_token_skips_hold_because_the_service_account_mounts_none(scans, skips):
    """checkov reads automountServiceAccountToken only from the pod spec; where the chart can
    set it only on the ServiceAccount, a skip says TOKEN_OFF_ON_SERVICE_ACCOUNT, and holds
    only while that ServiceAccount really mounts no token."""
    render = render_official()
    accounts = {d["metadata"]["name"]: d for d in render if d["kind"] == "ServiceAccount"}
    pod_specs = {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
                 for d in render if d["kind"] in ("Deployment", "StatefulSet", "Job")}
    patterns = [resource for (check_id, resource), reason in skips.items()
                if check_id == "CKV_K8S_38" and TOKEN_OFF_ON_SERVICE_ACCOUNT in reason]
    covered = [f.resource for f in scans["official"].failures if f.check_id == "CKV_K8S_38"
               and any(fnmatch.fnmatchcase(f.resource, p) for p in patterns)]
    assert bool(covered) == bool(patterns), "a ServiceAccount token skip matches no workload of the official chart"
    for resource in covered:
        account = accounts[pod_specs[resource]["serviceAccountName"]]
        assert account.get("automountServiceAccountToken") is False, (
            f"{resource}: {SKIPS_FILE.name} says its ServiceAccount mounts no token, but ServiceAccount "
            f"{account['metadata']['name']} has automountServiceAccountToken={account.get('automountServiceAccountToken')}")


# --- the harness itself -------------------------------------------------------------------------


def test_checkov_fails_a_privileged_pod_and_the_skip_file_does_not_hide_it(checkov, skips, tmp_path):
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged-probe", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    scan = run_checkov(checkov, tmp_path / "bad", [pod])
    privileged = [f for f in scan.failures if f.check_id == "CKV_K8S_16"]
    assert [str(f) for f in privileged] == [
        "CKV_K8S_16 Pod/privileged-probe: Container should not be privileged"]
    assert privileged[0] in unlisted(scan.failures, skips)


def test_unlisted_and_stale_are_found():
    skips = {("CKV_K8S_43", "Deployment/airflow-*"): "built here", ("CKV_K8S_8", "Pod/gone"): "stale"}
    failures = [Failure("CKV_K8S_43", "Image should use digest", "Deployment/airflow-scheduler"),
                Failure("CKV_K8S_43", "Image should use digest", "StatefulSet/platform-warehouse"),
                Failure("CKV_K8S_22", "Read-only root filesystem", "Deployment/airflow-scheduler")]
    assert unlisted(failures, skips) == failures[1:]
    assert stale(failures, skips) == [("CKV_K8S_8", "Pod/gone")]


def test_the_skip_file_is_well_formed_and_bad_ones_are_named(tmp_path):
    assert load_skips(), f"{SKIPS_FILE.name} is empty: then delete it"
    for text, message in [
        ("- CKV_K8S_1\n", "expected a mapping"),
        ("CKV_K8S_X:\n  Pod/a: r\n", "'CKV_K8S_X' is not a checkov Kubernetes check id"),
        ("CKV_K8S_8:\n  airflow-scheduler: r\n", "'airflow-scheduler' is not Kind/name"),
        ("CKV_K8S_8:\n  Pod/a: ''\n", "CKV_K8S_8 Pod/a: the reason must be one non-empty line"),
        ("CKV_K8S_8: []\n", "CKV_K8S_8 needs a mapping"),
    ]:
        bad = tmp_path / "checkov-skips.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            load_skips(bad)
