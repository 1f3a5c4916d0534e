"""The platform image (images/Dockerfile): the official Airflow image + category_pipeline +
plugins/, DAGs not baked in.

Built once per session on a stand-in of the official base (scripts/make-standin-base.sh: no
registry needed; cached as an image, a minute or two the first time), with the real build
script (scripts/build-image.sh; BuildKit's layer cache makes reruns take seconds). Checked
with `docker run --rm --network none`: user, imports, plugins, no DAGs, nothing of the host's
CA certificates or pip configuration, every DAG imports, one category's extract -> process ->
load runs. IMAGE_TEST_BASE=<image> tests on another base instead, e.g. a pulled
apache/airflow:3.3.2-python3.12.

Needs a Docker engine: started here when the daemon is installed and we are root, and in CI
(CI set) installed first if need be (Debian's docker.io). Without one the module is skipped,
never in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STANDIN = "airflow-standin:3.3.2"
IMAGE = "airflow-platform:test-standin"
CI = bool(os.environ.get("CI"))
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
EXPECTED_DAGS = {"category_electronics", "category_fashion", "category_home", "advanced_data_pipeline"}


def _docker_cli() -> str | None:
    for candidate in (shutil.which("docker"), "/usr/bin/docker"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _engine_error(cli: str | None) -> str | None:
    """Why the engine cannot be used, or None when `docker info` answers."""
    if not cli:
        return "no docker client"
    try:
        info = subprocess.run(
            [cli, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if info.returncode == 0 and info.stdout.strip():
        return None
    return (info.stderr.strip().splitlines() or ["docker info failed"])[-1]


def _dockerd() -> str | None:
    found = shutil.which("dockerd")
    return found or next((p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)


def _ensure_engine() -> tuple[str | None, str | None]:
    """(docker client, problem): reach the engine, else start dockerd (root only; CI gets it
    from scripts/bootstrap.sh --with-docker). Waits up to 60 s for a started daemon."""
    cli = _docker_cli()
    why = _engine_error(cli)
    if why is None:
        return cli, None
    root = os.geteuid() == 0
    dockerd = _dockerd()
    if dockerd is None:
        return cli, f"{why}; no dockerd to start"
    if not root:
        return cli, f"{why}; not root, so not starting {dockerd}"
    log_path = Path(tempfile.gettempdir()) / "dockerd.log"
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(
            [dockerd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        why = _engine_error(cli)
        if why is None:
            return cli, None
        if daemon.poll() is not None:  # e.g. another session's dockerd is starting: give it a while
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            why = f"dockerd exited ({daemon.returncode}): {tail[0]}"
            deadline = min(deadline, time.monotonic() + 15)
        time.sleep(1)
    return cli, f"{why}; see {log_path}"


DOCKER, _PROBLEM = _ensure_engine()
if _PROBLEM and not CI:
    pytest.skip(f"no Docker engine: {' '.join(_PROBLEM.split())}"[:300], allow_module_level=True)


def _script(args: list[str], log: Path, env: dict[str, str] | None = None, timeout: int = 900) -> int:
    with open(log, "w") as out:
        return subprocess.run(
            args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, timeout=timeout
        ).returncode


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _size(image: str) -> int:
    return int(_docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def _docker(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker {' '.join(args)[:300]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _run(image: str, *command: str, entrypoint: str = "python", dags: bool = False, env: dict | None = None,
         timeout: int = 300, read_only: bool = False) -> str:
    """stdout of `docker run --rm --network none` (the entrypoint overridden: same on the
    official image, whose own entrypoint would wait for a database first). ``read_only``: as
    the charts run it, a read-only root filesystem with /tmp the only writable place."""
    args = ["run", "--rm", "--network", "none", "--entrypoint", entrypoint]
    if read_only:
        args += ["--read-only", "--tmpfs", "/tmp:rw,size=512m"]
    if dags:
        args += ["--volume", f"{REPO / 'dags'}:/opt/airflow/dags:ro"]
    for name, value in (env or {}).items():
        args += ["--env", f"{name}={value}"]
    return _docker(*args, image, *command, timeout=timeout).stdout


def _result(stdout: str) -> dict:
    """The JSON a snippet prints on its last `RESULT ` line (Airflow may log before it)."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """{"base": image, "image": image}: the stand-in base (unless IMAGE_TEST_BASE), then
    images/Dockerfile on it, each through its script. Build logs: in the failure message."""
    if _PROBLEM:
        pytest.fail(f"a Docker engine is required in CI: {_PROBLEM}")
    logs = tmp_path_factory.mktemp("image-build")
    base = os.environ.get("IMAGE_TEST_BASE")
    if not base:
        base = STANDIN
        log = logs / "make-standin-base.log"
        start = time.monotonic()
        rc = _script(["scripts/make-standin-base.sh"], log, timeout=1200)
        if rc == 3 and not CI:
            pytest.skip(f"cannot build the stand-in base: {_tail(log, 1)}")
        assert rc == 0, f"scripts/make-standin-base.sh failed ({rc}):\n{_tail(log)}"
        print(f"\n[image] stand-in base {STANDIN}: {time.monotonic() - start:.0f}s ({_tail(log, 1)})")
    log = logs / "build-image.log"
    start = time.monotonic()
    rc = _script(["scripts/build-image.sh", IMAGE], log, env={"AIRFLOW_IMAGE": base}, timeout=900)
    assert rc == 0, f"scripts/build-image.sh failed ({rc}):\n{_tail(log)}"
    print(f"[image] {IMAGE} on {base}: {time.monotonic() - start:.0f}s")
    return {"base": base, "image": IMAGE}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "images" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _packages(image: str) -> dict[str, str]:
    listing = json.loads(_run(image, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"))
    return {p["name"].lower().replace("_", "-"): p["version"] for p in listing}


def test_image_requirements_are_pyprojects_dependencies():
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [ln.strip() for ln in (REPO / "images" / "requirements-image.txt").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert sorted(listed) == sorted(declared)
    from packaging.requirements import Requirement

    pins = _pins()
    for requirement in map(Requirement, declared):
        # Every declared range has a pin, and the pin is inside the range.
        assert requirement.specifier.contains(pins[requirement.name.lower()]), requirement


def test_runs_as_the_airflow_user(built):
    assert _docker("image", "inspect", "--format", "{{.Config.User}}", built["image"]).stdout.strip() == "50000"
    assert _run(built["image"], "-u", entrypoint="id").strip() == "50000"
    assert _run(built["image"], "-g", entrypoint="id").strip() == "0"


def test_oci_labels(built):
    labels = json.loads(_docker("image", "inspect", "--format", "{{json .Config.Labels}}", built["image"]).stdout)
    assert labels["org.opencontainers.image.title"] == "airflow-platform"
    assert labels["org.opencontainers.image.base.name"] == built["base"]
    assert labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.revision"]


def test_package_and_its_dependencies_import(built):
    names = ["category-pipeline", *_pins()]
    snippet = (
        "import json, importlib.metadata as md, category_pipeline, numpy, pyarrow, psycopg, pydantic, yaml\n"
        # what the pipeline uses of pyarrow (the Dockerfile drops Arrow Flight only)
        "import pyarrow.compute, pyarrow.csv, pyarrow.dataset, pyarrow.parquet\n"
        "from pyarrow.fs import S3FileSystem, LocalFileSystem\n"
        "import category_pipeline.loader, category_pipeline.process\n"
        "print('RESULT ' + json.dumps({'location': category_pipeline.__file__, 'versions': {n: md.version(n)"
        f" for n in {names!r}}}}}))"
    )
    result = _result(_run(built["image"], "-c", snippet))
    assert result["location"].startswith("/home/airflow/.local/lib/"), result["location"]
    versions = {name.lower(): version for name, version in result["versions"].items()}
    assert versions.pop("category-pipeline")
    # What the base has keeps the base's version; the rest is pinned by constraints.txt.
    base = _packages(built["base"])
    assert versions == {name: base.get(name, pin) for name, pin in _pins().items()}


def test_the_image_only_adds_packages_to_its_base(built):
    base, image = _packages(built["base"]), _packages(built["image"])
    changed = {name: (version, image.get(name)) for name, version in base.items() if image.get(name) != version}
    assert not changed, f"base packages changed (base, image): {changed}"
    added = sorted(set(image) - set(base))
    print(f"\n[image] packages added to the base: {added}")
    assert "category-pipeline" in added
    assert set(added) <= {"category-pipeline", *_pins()}


def test_the_remote_log_handler_is_in_the_image(built):
    """values.yaml sends task logs to S3 ([logging] remote_logging): the Amazon provider's task
    handler must import where the tasks and the API server run (the base ships it)."""
    snippet = (
        "import json\n"
        "from airflow.providers.amazon.aws.log.s3_task_handler import S3RemoteLogIO\n"
        "from airflow.providers.amazon.aws.hooks.s3 import S3Hook\n"
        "print('RESULT ' + json.dumps({'handler': S3RemoteLogIO.__name__}))"
    )
    assert _result(_run(built["image"], "-c", snippet))["handler"] == "S3RemoteLogIO"


def test_plugins_are_in_place_and_no_dags_are_baked_in(built):
    snippet = (
        "import json, os\n"
        "plugin = '/opt/airflow/plugins/custom_load_operator.py'\n"
        "dags = '/opt/airflow/dags'\n"
        "print('RESULT ' + json.dumps({'plugin': os.path.isfile(plugin), 'plugin_uid': os.stat(plugin).st_uid,"
        " 'dags': sorted(os.listdir(dags)) if os.path.isdir(dags) else None}))"
    )
    result = _result(_run(built["image"], "-c", snippet))
    assert result["plugin"] and result["plugin_uid"] == 50000
    assert not result["dags"], f"/opt/airflow/dags is not empty: {result['dags']}"
    plugin = (REPO / "plugins" / "custom_load_operator.py").read_text()
    assert _run(built["image"], "/opt/airflow/plugins/custom_load_operator.py", entrypoint="cat") == plugin
    names = sorted(p.name for p in (REPO / "dags").iterdir() if p.is_file())
    found = _run(built["image"], "-c", "find / -xdev \\( " + " -o ".join(f"-name '{n}'" for n in names)
                 + " \\) 2>/dev/null; true", entrypoint="sh")
    assert found.strip() == "", f"DAG files baked into the image: {found}"


def test_no_build_leftovers(built):
    leftovers = _run(
        built["image"], "-c",
        "find /tmp /mnt /run/secrets /home/airflow/.cache /root/.cache -mindepth 1 2>/dev/null;"
        " find /home/airflow/.local -path '*category_pipeline*' -name '*.pyc'; true",
        entrypoint="sh",
    )
    assert leftovers.strip() == ""


def _host_cert_lines() -> list[str]:
    """A few base64 lines of each extra host CA: they must not be anywhere in the image."""
    lines = []
    for crt in sorted(HOST_CA_DIR.glob("**/*.crt")):
        body = [ln.strip() for ln in crt.read_text(errors="replace").splitlines() if ln.strip() and "-----" not in ln]
        lines += [ln for ln in body[1:3] + body[-3:-1] if len(ln) >= 40]
    return sorted(set(lines))


def _host_pip_values() -> list[str]:
    """Where the host's pip looks for packages (index URLs, find-links, constraints): none of
    it may be in the image's history or configuration."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = []
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.split(".")[-1] in {"index-url", "extra-index-url", "find-links", "constraint", "trusted-host"}:
            values += [v for v in value.strip("'").split() if v != "https://pypi.org/simple"]
    return sorted(set(values))


def test_nothing_of_the_host_ca_certificates_or_pip_configuration_is_in_the_image(built):
    image = built["image"]
    cert_names = sorted({crt.name for crt in HOST_CA_DIR.glob("**/*.crt")})
    cert_lines = _host_cert_lines()
    pip_values = _host_pip_values()

    if cert_names:
        found = _run(image, "-c", "find / -xdev \\( " + " -o ".join(f"-name '{n}'" for n in cert_names)
                     + " \\) 2>/dev/null; true", entrypoint="sh")
        assert found.strip() == "", f"host CA certificate files in the image: {found}"
    if cert_lines:
        patterns = " ".join(f"-e '{ln}'" for ln in cert_lines)
        found = _run(image, "-c", f"find / -xdev -type f -size -8M -print0 2>/dev/null"
                     f" | xargs -0 grep -lsF {patterns}; true", entrypoint="sh", timeout=600)
        assert found.strip() == "", f"host CA certificate content in: {found}"

    history = _docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = _docker("image", "inspect", image).stdout
    for text, where in ((history, "docker history"), (config, "the image configuration")):
        assert "BEGIN CERTIFICATE" not in text, where
        for secret in cert_lines + pip_values:
            assert secret not in text, f"{secret!r} in {where}"

    env = json.loads(_docker("image", "inspect", "--format", "{{json .Config.Env}}", image).stdout)
    baked = [e for e in env if e.split("=")[0] in {
        "PIP_CERT", "PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST",
        "PIP_FIND_LINKS", "PIP_CONSTRAINT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"}]
    assert baked == []
    pip_config = _run(image, "-m", "pip", "config", "list")
    for key in ("cert", "index-url", "extra-index-url", "trusted-host", "find-links", "constraint"):
        assert f".{key}=" not in pip_config, pip_config


def test_every_dag_imports_in_the_image(built):
    snippet = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder='/opt/airflow/dags', safe_mode=True)\n"
        "print('RESULT ' + json.dumps({'import_errors': {k: str(v) for k, v in bag.import_errors.items()},"
        " 'dag_ids': sorted(bag.dag_ids)}))"
    )
    result = _result(_run(built["image"], "-c", snippet, dags=True, env={"AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
                          read_only=True))
    assert result["import_errors"] == {}
    assert EXPECTED_DAGS <= set(result["dag_ids"]), result["dag_ids"]


def test_a_category_extracts_processes_and_loads_in_the_image(built):
    """On a read-only root filesystem, /tmp its only writable place, as the task pods run."""
    snippet = """
import json, sys
from datetime import date
from pathlib import Path
sys.path.insert(0, "/opt/airflow/plugins")
from custom_load_operator import CustomLoadOperator
from category_pipeline import extract, process
from category_pipeline.config import load_categories
from category_pipeline.storage import dataset_uri, staging_root

category = next(c for c in load_categories(Path("/opt/airflow/dags/categories.yaml")).categories if c.name == "home")
day = date(2026, 1, 15)
root = staging_root()
extracted = extract.extract(category, day, root)
validated = process.validate(
    extracted["raw_uri"], extracted["catalog_uri"], category.name, day,
    clean_uri=dataset_uri(root, category.name, day, "clean_orders"),
    quarantine_uri=dataset_uri(root, category.name, day, "quarantine"),
)
metrics = process.compute_metrics(validated["clean_uri"], dataset_uri(root, category.name, day, "metrics"))
load = CustomLoadOperator(
    task_id="load",
    datasets={"orders": validated["clean_uri"], "category_daily_metrics": metrics["metrics_uri"]},
    partition={"category": category.name, "order_date": day.isoformat()},
)
print("RESULT " + json.dumps({
    "staging": root, "extracted": extracted["rows"], "clean_rows": validated["clean_rows"],
    "quarantined_rows": validated["quarantined_rows"], "metrics_rows": metrics["rows"], "loaded": load.execute({}),
}))
"""
    env = {
        "PIPELINE_STAGING_URI": "/tmp/staging",
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": "/tmp/wh.db"}),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = _result(_run(built["image"], "-c", snippet, dags=True, env=env, read_only=True))
    print(f"\n[image] home category in the image: {json.dumps(result)}")
    assert result["staging"] == "/tmp/staging"
    assert result["extracted"] == result["clean_rows"] + result["quarantined_rows"] > 0
    assert result["loaded"]["orders"]["loaded"] == result["clean_rows"]
    assert result["loaded"]["category_daily_metrics"]["loaded"] == result["metrics_rows"] > 0


# P5 of BENCHMARKS.md: what images/Dockerfile may add to its base.
ADDED_BOUND_MB = 150


def test_image_adds_at_most_its_bound_to_the_base(built, report):
    """The base, the image, and what images/Dockerfile adds (bounded; the layers printed)."""
    base, image = _size(built["base"]), _size(built["image"])
    report(f"[image] {built['image']}: {(image - base) / 1e6:.1f} MB over {built['base']} (bound {ADDED_BOUND_MB} MB)")
    layers = _docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", built["image"]).stdout.splitlines()
    ours = [line[:110] for line in layers[: len(layers) - len(_docker("history", "-q", built["base"]).stdout.split())]]
    print(
        f"\n[image] sizes: base {built['base']} {base / 1e6:.0f} MB; {built['image']} {image / 1e6:.0f} MB;"
        f" added by images/Dockerfile {(image - base) / 1e6:.1f} MB"
    )
    for line in ours:
        if not line.startswith("0B"):
            print(f"[image]   {line}")
    assert (image - base) / 1e6 <= ADDED_BOUND_MB
