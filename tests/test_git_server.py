"""The chart's in-cluster git server (charts/airflow-platform/files/git_http_server.py), for
real: started locally on a free loopback port, driven by the real git over smart HTTP.

Without git the tests are skipped (they fail when $CI is set).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port

SCRIPT = Path(__file__).resolve().parent.parent / "charts" / "airflow-platform" / "files" / "git_http_server.py"
USER = "airflow"
TIMEOUT = 60


class Server:
    def __init__(self, root: Path, log: Path, password: str):
        self.root = root
        self.log = log
        self.password = password
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    @property
    def repo(self) -> Path:
        return self.root / "dags.git"

    def url(self, user: str | None = USER, password: str | None = None) -> str:
        if user is None:
            return f"{self.base}/dags.git"
        return f"http://{user}:{password or self.password}@127.0.0.1:{self.port}/dags.git"

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.root.parent),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_SERVER_USERNAME": USER,
            "GIT_SERVER_PASSWORD": self.password,
            "GIT_SERVER_BIND": "127.0.0.1",
            "GIT_SERVER_PORT": str(self.port),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server not healthy within 15 s:\n{self.log_text()}")

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode if self.process else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def request(self, path: str, *, auth: tuple[str, str] | None = None, method: str = "GET", data: bytes | None = None):
        """(status, headers, body) of one raw HTTP request."""
        request = urllib.request.Request(f"{self.base}{path}", method=method, data=data)
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        if data is not None:
            request.add_header("Content-Type", "application/x-git-receive-pack-request")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()


@pytest.fixture(scope="module")
def git_binary() -> str:
    git = shutil.which("git")
    if git is None:
        if os.environ.get("CI"):
            pytest.fail("git is required in CI")
        pytest.skip("git is not installed")
    return git


@pytest.fixture(scope="module")
def server(git_binary, tmp_path_factory):
    base = tmp_path_factory.mktemp("git-server")
    server = Server(base / "srv", base / "server.log", secrets.token_urlsafe(24).replace("-", "x").replace("_", "y"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def git(git_binary, tmp_path):
    """Run the real git with an isolated configuration: no credential helpers, no prompts."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "LC_ALL": "C",
    }

    def run(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [git_binary, "-c", "credential.helper=", "-c", "init.defaultBranch=main", *args],
            cwd=cwd or tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    return run


def _work_tree(git, path: Path, files: dict[str, bytes]) -> str:
    """A repository at `path` with one commit of `files` on main; its commit id."""
    git("init", "--quiet", str(path))
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    git("add", "--all", cwd=path)
    git("commit", "--quiet", "-m", "DAGs", cwd=path)
    return git("rev-parse", "HEAD", cwd=path).stdout.strip()


def _server_ref(git, server: Server, ref: str = "refs/heads/main") -> str | None:
    result = git("--git-dir", str(server.repo), "rev-parse", "--verify", "--quiet", ref, check=False)
    return result.stdout.strip() or None


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(path).parts
    }


# -- the repository and the endpoints --------------------------------------------------------


def test_repository_is_created_bare_with_main_and_push_enabled(server, git):
    assert (server.repo / "HEAD").read_text().strip() == "ref: refs/heads/main"
    assert git("--git-dir", str(server.repo), "rev-parse", "--is-bare-repository").stdout.strip() == "true"
    assert git("--git-dir", str(server.repo), "config", "http.receivepack").stdout.strip() == "true"


def test_healthz_needs_no_credentials(server):
    status, _, body = server.request("/healthz")
    assert (status, body) == (200, b"ok\n")


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
@pytest.mark.parametrize(
    "auth",
    [None, (USER, "wrong-password"), ("someone", None), (USER, "")],
    ids=["no-credentials", "wrong-password", "wrong-user", "empty-password"],
)
def test_requests_without_the_right_credentials_get_401(server, service, auth):
    if auth and auth[1] is None:
        auth = (auth[0], server.password)
    status, headers, _ = server.request(f"/dags.git/info/refs?service={service}", auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    status, _, _ = server.request(f"/dags.git/{service}", auth=auth, method="POST", data=b"0000")
    assert status == 401


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
def test_ref_advertisement_with_credentials(server, service):
    status, headers, body = server.request(f"/dags.git/info/refs?service={service}", auth=(USER, server.password))
    assert status == 200
    assert headers["Content-Type"] == f"application/x-{service}-advertisement"
    assert body.startswith(b"001") and f"# service={service}".encode() in body


@pytest.mark.parametrize("path", ["/other.git/info/refs?service=git-upload-pack", "/dags.git/../x/info/refs", "/"])
def test_only_the_one_repository_is_served(server, path):
    status, _, _ = server.request(path, auth=(USER, server.password))
    assert status == 404


def test_backend_status_header_is_passed_on(server):
    """http-backend answers `Status: 403` for a service it does not offer."""
    status, _, _ = server.request("/dags.git/info/refs?service=git-frobnicate", auth=(USER, server.password))
    assert status == 403


# -- git itself ------------------------------------------------------------------------------


def test_push_and_clone_round_trip(server, git, tmp_path):
    files = {
        "dags/category_dags.py": b"# generated DAGs\n",
        "dags/categories.yaml": b"categories: []\n",
        # Larger than git's http.postBuffer (1 MiB): the push goes out with chunked encoding.
        "data/blob.bin": os.urandom(3 * 1024 * 1024),
    }
    commit = _work_tree(git, tmp_path / "work", files)
    git("push", server.url(), "HEAD:main", cwd=tmp_path / "work")
    assert _server_ref(git, server) == commit

    git("clone", "--quiet", server.url(), str(tmp_path / "clone"))
    clone = tmp_path / "clone"
    assert git("rev-parse", "HEAD", cwd=clone).stdout.strip() == commit
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone).stdout.strip() == "main"
    assert _tree(clone) == files

    # Protocol v0 as well as v2 (git's default, sent in the Git-Protocol header).
    git("-c", "protocol.version=0", "clone", "--quiet", server.url(), str(tmp_path / "clone-v0"))
    assert _tree(tmp_path / "clone-v0") == files

    log = server.log_text()
    assert f'{USER} "POST /dags.git/git-receive-pack" 200' in log
    assert f'{USER} "POST /dags.git/git-upload-pack" 200' in log


def test_fetch_with_gzipped_request(server, git, tmp_path):
    """Many branches make a fetch request big enough for git to gzip it
    (Content-Encoding: gzip, passed to http-backend as HTTP_CONTENT_ENCODING)."""
    work = tmp_path / "work"
    _work_tree(git, work, {"README": b"branches\n"})
    for i in range(40):
        git("commit", "--quiet", "--allow-empty", "-m", f"branch {i}", cwd=work)
        git("branch", f"feature-{i:02d}", cwd=work)
    git("push", "--quiet", server.url(), "refs/heads/feature-*:refs/heads/feature-*", cwd=work)

    mirror = tmp_path / "mirror"
    git("init", "--quiet", "--bare", str(mirror))
    git("--git-dir", str(mirror), "fetch", "--quiet", server.url(), "refs/heads/feature-*:refs/heads/feature-*")
    for i in (0, 39):
        expected = git("rev-parse", f"feature-{i:02d}", cwd=work).stdout.strip()
        assert git("--git-dir", str(mirror), "rev-parse", f"feature-{i:02d}").stdout.strip() == expected
    gzipped = [line for line in server.log_text().splitlines() if "git-upload-pack\" 200" in line and "enc=gzip" in line]
    assert gzipped, server.log_text()


def test_wrong_password_cannot_push_or_clone(server, git, tmp_path):
    _work_tree(git, tmp_path / "seed", {"a.py": b"seed\n"})
    git("push", "--quiet", "--force", server.url(), "HEAD:refs/heads/protected", cwd=tmp_path / "seed")
    before = _server_ref(git, server, "refs/heads/protected")

    _work_tree(git, tmp_path / "evil", {"a.py": b"evil\n"})
    for url in (server.url(password="wrong-password"), server.url(user=None)):
        pushed = git("push", "--force", url, "HEAD:refs/heads/protected", cwd=tmp_path / "evil", check=False)
        assert pushed.returncode != 0
        assert "Authentication failed" in pushed.stderr or "401" in pushed.stderr or "could not read Username" in pushed.stderr, pushed.stderr
        assert _server_ref(git, server, "refs/heads/protected") == before

        cloned = git("clone", url, str(tmp_path / "stolen"), check=False)
        assert cloned.returncode != 0
        assert not (tmp_path / "stolen" / "a.py").exists()

    log = server.log_text()
    assert '- "GET /dags.git/info/refs?service=git-receive-pack" 401' in log
    assert '- "GET /dags.git/info/refs?service=git-upload-pack" 401' in log


def test_stops_on_sigterm(git_binary, tmp_path):
    server = Server(tmp_path / "srv", tmp_path / "server.log", "pw")
    server.start()
    assert server.stop() == 0
    assert "shutting down" in server.log_text()


def test_refuses_to_start_without_credentials(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PATH": os.environ.get("PATH", os.defpath), "GIT_PROJECT_ROOT": str(tmp_path), "GIT_SERVER_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode != 0
    assert "GIT_SERVER_PASSWORD" in result.stderr
    assert not (tmp_path / "dags.git").exists()
