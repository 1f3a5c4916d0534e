"""The chart's in-cluster git server (charts/airflow-platform/files/git_http_server.py), for
real: started locally on a free loopback port, driven by the real git over smart HTTP and by
raw sockets where git would not send what a test needs (malformed or oversized bodies).

Without git the tests are skipped (they fail when $CI is set).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port

SCRIPT = Path(__file__).resolve().parent.parent / "charts" / "airflow-platform" / "files" / "git_http_server.py"
READ_USER = "airflow"  # the chart's defaults: gitCredentials.username / pushUsername
PUSH_USER = "dags-push"
TIMEOUT = 60
MEMORY_LIMIT = 256 * 1024 * 1024  # gitServer.resources.limits.memory


def _password() -> str:
    return secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


class Server:
    def __init__(self, root: Path, log: Path, read_password: str | None = None, push_password: str | None = None,
                 **limits: str):
        self.root = root
        self.log = log
        self.read_password = read_password or _password()
        self.push_password = push_password or _password()
        self.limits = limits  # extra environment, e.g. GIT_SERVER_MAX_WORKERS="1"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    @property
    def repo(self) -> Path:
        return self.root / "dags.git"

    @property
    def read_auth(self) -> tuple[str, str]:
        return READ_USER, self.read_password

    @property
    def push_auth(self) -> tuple[str, str]:
        return PUSH_USER, self.push_password

    def url(self, user: str | None = READ_USER, password: str | None = None) -> str:
        if user is None:
            return f"{self.base}/dags.git"
        if password is None:
            password = self.push_password if user == PUSH_USER else self.read_password
        return f"http://{user}:{password}@127.0.0.1:{self.port}/dags.git"

    def push_url(self) -> str:
        return self.url(PUSH_USER)

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.root.parent),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_SERVER_READ_USERNAME": READ_USER,
            "GIT_SERVER_READ_PASSWORD": self.read_password,
            "GIT_SERVER_PUSH_USERNAME": PUSH_USER,
            "GIT_SERVER_PUSH_PASSWORD": self.push_password,
            "GIT_SERVER_BIND": "127.0.0.1",
            "GIT_SERVER_PORT": str(self.port),
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.limits,
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
            request.add_header("Authorization", _basic(*auth))
        if data is not None:
            request.add_header("Content-Type", "application/x-git-receive-pack-request")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)

    def status(self, field: str) -> int:
        """A number from /proc/<pid>/status of the server, e.g. VmRSS (in bytes) or Threads."""
        return _proc_status(self.process.pid, field)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, *unit = value.split()
            return int(number) * (1024 if unit == ["kB"] else 1)
    raise KeyError(field)


def _tree_rss(pid: int) -> int:
    """VmRSS of a process and all its descendants (the git processes of the server)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += _proc_status(current, "VmRSS")
            for task in os.listdir(f"/proc/{current}/task"):
                stack.extend(int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, KeyError):
            pass  # it just exited (a zombie has no VmRSS)
    return total


def _read_status(connection: socket.socket) -> int:
    """The status code of the answer on a raw connection (0 when none came)."""
    data = b""
    try:
        while b"\r\n" not in data:
            block = connection.recv(4096)
            if not block:
                break
            data += block
    except (ConnectionError, TimeoutError):
        pass
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and data.startswith(b"HTTP/1.1 ") else 0


def _post_head(auth: tuple[str, str], *, chunked: bool = True, length: int | None = None, expect: bool = False) -> bytes:
    lines = [
        "POST /dags.git/git-receive-pack HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: {_basic(*auth)}",
        "Content-Type: application/x-git-receive-pack-request",
    ]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _closed_by_server(connection: socket.socket, within: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within `within` seconds."""
    connection.settimeout(within)
    try:
        while connection.recv(4096):
            pass
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


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
    server = Server(base / "srv", base / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_server(git_binary, tmp_path):
    """start_server(**limits): a server of this test only, with extra environment."""
    started: list[Server] = []

    def start(**limits: str) -> Server:
        folder = tmp_path / f"server-{len(started)}"
        folder.mkdir()
        running = Server(folder / "srv", folder / "server.log", **limits)
        started.append(running)
        running.start()
        return running

    yield start
    for running in started:
        running.stop()


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


def test_repository_is_created_bare_with_main_push_enabled_and_history_protected(server, git):
    assert (server.repo / "HEAD").read_text().strip() == "ref: refs/heads/main"
    assert git("--git-dir", str(server.repo), "rev-parse", "--is-bare-repository").stdout.strip() == "true"
    for key in ("http.receivepack", "receive.denyNonFastForwards", "receive.denyDeletes"):
        assert git("--git-dir", str(server.repo), "config", key).stdout.strip() == "true", key


def test_history_protection_is_restored_on_start_of_an_existing_repository(start_server, git):
    running = start_server()
    running.stop()
    for key in ("receive.denyNonFastForwards", "receive.denyDeletes"):
        git("--git-dir", str(running.repo), "config", key, "false")
    running.start()
    for key in ("receive.denyNonFastForwards", "receive.denyDeletes"):
        assert git("--git-dir", str(running.repo), "config", key).stdout.strip() == "true", key


def test_healthz_needs_no_credentials(server):
    status, _, body = server.request("/healthz")
    assert (status, body) == (200, b"ok\n")


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
@pytest.mark.parametrize(
    "auth",
    [None, (READ_USER, "wrong-password"), (PUSH_USER, "wrong-password"), ("someone", "read"), (READ_USER, ""),
     (READ_USER, "push"), (PUSH_USER, "read")],
    ids=["no-credentials", "wrong-read-password", "wrong-push-password", "wrong-user", "empty-password",
         "read-user-with-push-password", "push-user-with-read-password"],
)
def test_requests_without_the_right_credentials_get_401(server, service, auth):
    if auth:
        auth = (auth[0], {"read": server.read_password, "push": server.push_password}.get(auth[1], auth[1]))
    status, headers, _ = server.request(f"/dags.git/info/refs?service={service}", auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    status, _, _ = server.request(f"/dags.git/{service}", auth=auth, method="POST", data=b"0000")
    assert status == 401


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
def test_ref_advertisement_for_the_push_user(server, service):
    status, headers, body = server.request(f"/dags.git/info/refs?service={service}", auth=server.push_auth)
    assert status == 200
    assert headers["Content-Type"] == f"application/x-{service}-advertisement"
    assert body.startswith(b"001") and f"# service={service}".encode() in body


@pytest.mark.parametrize(
    "path",
    [
        "/dags.git/info/refs?service=git-receive-pack",
        "/dags.git/info/refs?service=git%2Dreceive%2Dpack",  # http-backend decodes the query
        "/dags.git/info/refs?service=git-upload-pack&service=git-receive-pack",
    ],
)
def test_the_read_user_may_not_reach_receive_pack(server, path):
    status, _, body = server.request(path, auth=server.read_auth)
    assert status == 403
    assert b"read-only" in body and b"git-push-credentials" in body
    status, _, _ = server.request("/dags.git/git-receive-pack", auth=server.read_auth, method="POST", data=b"0000")
    assert status == 403


def test_ref_advertisement_for_the_read_user(server):
    status, headers, body = server.request("/dags.git/info/refs?service=git-upload-pack", auth=server.read_auth)
    assert status == 200
    assert headers["Content-Type"] == "application/x-git-upload-pack-advertisement"


@pytest.mark.parametrize("path", ["/other.git/info/refs?service=git-upload-pack", "/dags.git/../x/info/refs", "/"])
def test_only_the_one_repository_is_served(server, path):
    status, _, _ = server.request(path, auth=server.read_auth)
    assert status == 404


def test_backend_status_header_is_passed_on(server):
    """http-backend answers `Status: 403` for a service it does not offer."""
    status, _, _ = server.request("/dags.git/info/refs?service=git-frobnicate", auth=server.read_auth)
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
    git("push", server.push_url(), "HEAD:main", cwd=tmp_path / "work")
    assert _server_ref(git, server) == commit

    git("clone", "--quiet", server.url(), str(tmp_path / "clone"))  # the read user
    clone = tmp_path / "clone"
    assert git("rev-parse", "HEAD", cwd=clone).stdout.strip() == commit
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone).stdout.strip() == "main"
    assert _tree(clone) == files

    # Protocol v0 as well as v2 (git's default, sent in the Git-Protocol header).
    git("-c", "protocol.version=0", "clone", "--quiet", server.url(), str(tmp_path / "clone-v0"))
    assert _tree(tmp_path / "clone-v0") == files

    log = server.log_text()
    assert f'{PUSH_USER} "POST /dags.git/git-receive-pack" 200' in log
    assert f'{READ_USER} "POST /dags.git/git-upload-pack" 200' in log


def test_the_read_user_can_clone_but_not_push(server, git, tmp_path):
    _work_tree(git, tmp_path / "seed", {"a.py": b"seed\n"})
    git("push", "--quiet", server.push_url(), "HEAD:refs/heads/read-only-check", cwd=tmp_path / "seed")
    before = _server_ref(git, server, "refs/heads/read-only-check")

    git("clone", "--quiet", "--branch", "read-only-check", server.url(), str(tmp_path / "clone"))
    assert (tmp_path / "clone" / "a.py").read_bytes() == b"seed\n"

    (tmp_path / "clone" / "a.py").write_bytes(b"changed by git-sync's account\n")
    git("commit", "--quiet", "-am", "sneaky", cwd=tmp_path / "clone")
    pushed = git("push", server.url(), "HEAD:refs/heads/read-only-check", cwd=tmp_path / "clone", check=False)
    assert pushed.returncode != 0
    assert "403" in pushed.stderr and "read-only" in pushed.stderr, pushed.stderr
    assert _server_ref(git, server, "refs/heads/read-only-check") == before
    assert f'{READ_USER} "GET /dags.git/info/refs?service=git-receive-pack" 403' in server.log_text()


def test_no_force_push_and_no_deletion_of_main(start_server, git, tmp_path):
    server = start_server()
    work = tmp_path / "work"
    _work_tree(git, work, {"a.py": b"one\n"})
    git("push", "--quiet", server.push_url(), "HEAD:main", cwd=work)
    git("commit", "--quiet", "--allow-empty", "-m", "two", cwd=work)
    git("push", "--quiet", server.push_url(), "HEAD:main", cwd=work)  # a fast-forward is fine
    main = _server_ref(git, server)
    assert main == git("rev-parse", "HEAD", cwd=work).stdout.strip()

    git("commit", "--quiet", "--amend", "--allow-empty", "-m", "rewritten", cwd=work)
    forced = git("push", "--force", server.push_url(), "HEAD:main", cwd=work, check=False)
    assert forced.returncode != 0
    assert "non-fast-forward" in forced.stderr, forced.stderr
    assert _server_ref(git, server) == main

    deleted = git("push", server.push_url(), ":main", cwd=work, check=False)
    assert deleted.returncode != 0
    assert "deletion prohibited" in deleted.stderr, deleted.stderr
    assert _server_ref(git, server) == main


def test_fetch_with_gzipped_request(server, git, tmp_path):
    """Many branches make a fetch request big enough for git to gzip it
    (Content-Encoding: gzip, passed to http-backend as HTTP_CONTENT_ENCODING)."""
    work = tmp_path / "work"
    _work_tree(git, work, {"README": b"branches\n"})
    for i in range(40):
        git("commit", "--quiet", "--allow-empty", "-m", f"branch {i}", cwd=work)
        git("branch", f"feature-{i:02d}", cwd=work)
    git("push", "--quiet", server.push_url(), "refs/heads/feature-*:refs/heads/feature-*", cwd=work)

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
    git("push", "--quiet", server.push_url(), "HEAD:refs/heads/protected", cwd=tmp_path / "seed")
    before = _server_ref(git, server, "refs/heads/protected")

    _work_tree(git, tmp_path / "evil", {"a.py": b"evil\n"})
    for url in (server.url(PUSH_USER, password="wrong-password"), server.url(user=None)):
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


# -- request bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("size_line", [b"-1", b"zz", b"", b"1" * 17, b"0x10", b"+5"])
def test_a_malformed_chunk_size_is_answered_400(server, size_line):
    """A chunk size of -1 once made the server read the whole body into memory."""
    with server.connect() as connection:
        connection.sendall(_post_head(server.push_auth) + size_line + b"\r\n" + b"x" * 100 + b"\r\n")
        assert _read_status(connection) == 400


def test_chunk_data_not_followed_by_crlf_is_answered_400(server):
    with server.connect() as connection:
        connection.sendall(_post_head(server.push_auth) + b"4\r\n0000garbage\r\n0\r\n\r\n")
        assert _read_status(connection) == 400


def test_a_body_over_the_limit_is_answered_413(start_server):
    running = start_server(GIT_SERVER_MAX_BODY_BYTES=str(64 * 1024))
    # Declared too large: refused before the body is sent (instead of "100 Continue").
    with running.connect() as connection:
        connection.sendall(_post_head(running.push_auth, chunked=False, length=64 * 1024 + 1, expect=True))
        assert _read_status(connection) == 413
    # Chunked: refused when the chunks add up to more than the limit.
    with running.connect() as connection:
        connection.sendall(_post_head(running.push_auth))
        block = b"%x\r\n" % (16 * 1024) + b"\0" * (16 * 1024) + b"\r\n"
        for _ in range(5):
            connection.sendall(block)
        assert _read_status(connection) == 413
    assert "413" in running.log_text()
    assert running.request("/healthz")[0] == 200


# -- bounded connections, workers and time ---------------------------------------------------


def test_idle_connections_are_dropped_after_the_idle_timeout(start_server):
    running = start_server(GIT_SERVER_IDLE_TIMEOUT="1")
    with running.connect() as silent, running.connect() as stalled_body:
        stalled_body.sendall(_post_head(running.push_auth) + b"10\r\n0123")  # then nothing
        assert _closed_by_server(silent, within=15)
        assert _closed_by_server(stalled_body, within=15)


def test_a_request_is_aborted_after_the_request_time_limit(start_server):
    """A body trickling in more often than the idle timeout still ends at the time limit."""
    running = start_server(GIT_SERVER_REQUEST_TIMEOUT="2")
    closed = threading.Event()
    with running.connect() as connection:
        connection.sendall(_post_head(running.push_auth))

        def watch():
            if _closed_by_server(connection, within=30):
                closed.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for _ in range(300):  # up to 60 s of one byte every 0.2 s
            if closed.is_set():
                break
            try:
                connection.sendall(b"1\r\nx\r\n")
            except OSError:
                break
            time.sleep(0.2)
        watcher.join(timeout=35)
    assert closed.is_set()
    assert "over the request time limit of 2 s" in running.log_text()
    assert running.request("/healthz")[0] == 200


def test_connections_over_the_cap_are_answered_503(start_server):
    running = start_server(GIT_SERVER_MAX_CONNECTIONS="5")
    idle = [running.connect() for _ in range(5)]
    try:
        time.sleep(0.5)  # let the event loop accept them (no timing is asserted)
        with running.connect() as one_more:
            assert _read_status(one_more) == 503
    finally:
        for connection in idle:
            connection.close()


def test_requests_over_the_worker_pool_are_answered_503_while_healthz_still_answers(start_server, git, tmp_path):
    running = start_server(GIT_SERVER_MAX_WORKERS="1", GIT_SERVER_MAX_QUEUED="1")
    with running.connect() as busy, running.connect() as queued:
        busy.sendall(_post_head(running.push_auth) + b"4\r\n0000\r\n")  # holds the one worker
        time.sleep(0.5)
        queued.sendall(_post_head(running.push_auth) + b"4\r\n0000\r\n0\r\n\r\n")  # waits for it
        time.sleep(0.5)  # let the event loop take both (no timing is asserted)
        listed = git("ls-remote", running.url(), check=False)
        assert listed.returncode != 0 and "503" in listed.stderr, listed.stderr
        assert running.request("/healthz")[0] == 200
        busy.sendall(b"0\r\n\r\n")
        assert _read_status(busy) == 200
        assert _read_status(queued) == 200
    # One worker and one place in the queue: enough for git's requests one after the other.
    assert git("ls-remote", running.url()).returncode == 0
    assert "turned away: all workers busy" in running.log_text()


# -- the load test of issue 8 ----------------------------------------------------------------

IDLE_CONNECTIONS = 200
BODY_BYTES = 100 * 1000 * 1000


class _BigChunkedPush(threading.Thread):
    """Sends a 100 MB chunked body to git-receive-pack as the push user, pausing after 32 MiB
    until `resume` is set; `status` is the answer."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server = server
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.sent = 0
        self.status = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        block = os.urandom(1024 * 1024)
        chunk = b"%x\r\n" % len(block) + block + b"\r\n"
        try:
            with self.server.connect() as connection:
                connection.sendall(_post_head(self.server.push_auth))
                try:
                    while self.sent < BODY_BYTES:
                        if self.sent >= 32 * 1024 * 1024 and not self.paused.is_set():
                            self.paused.set()
                            self.resume.wait(timeout=TIMEOUT)
                        connection.sendall(chunk)
                        self.sent += len(block)
                    connection.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server stopped reading: its answer is still to be read
                self.status = _read_status(connection)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.paused.set()


class _RssSampler(threading.Thread):
    """The largest RSS of the server and its git processes, sampled every 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, _tree_rss(self.pid))


def test_idle_connections_and_a_100_mb_chunked_body_leave_it_responsive_and_small(start_server, git, tmp_path, report):
    running = start_server()
    commit = _work_tree(git, tmp_path / "work", {"dags/a.py": b"# a DAG\n"})
    git("push", "--quiet", running.push_url(), "HEAD:main", cwd=tmp_path / "work")
    baseline = running.status("VmRSS")
    sampler = _RssSampler(running.process.pid)
    sampler.start()

    idle = []
    try:
        for i in range(IDLE_CONNECTIONS):
            connection = running.connect()
            if i % 2:  # half of them send half a request head and stall (slowloris)
                connection.sendall(b"POST /dags.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n")
            idle.append(connection)
        push = _BigChunkedPush(running)
        push.start()
        assert push.paused.wait(timeout=TIMEOUT), "the big body did not get going"

        # With 200 idle connections open and the big body half sent: still serving.
        assert running.request("/healthz")[0] == 200
        git("clone", "--quiet", running.url(), str(tmp_path / "clone-during"))
        assert git("rev-parse", "HEAD", cwd=tmp_path / "clone-during").stdout.strip() == commit
        threads_during = running.status("Threads")

        push.resume.set()
        push.join(timeout=TIMEOUT * 2)
        assert not push.is_alive() and push.error is None, push.error
        assert push.status == 413, running.log_text()[-3000:]

        git("clone", "--quiet", running.url(), str(tmp_path / "clone-after"))
        assert _server_ref(git, running) == commit  # nothing of the big body landed
        # Every idle connection is still waiting (the idle timeout is 30 s), costing no thread.
        assert running.request("/healthz")[0] == 200
    finally:
        sampler.stop.set()
        sampler.join()
        for connection in idle:
            connection.close()

    peak_server = running.status("VmHWM")
    report(
        f"[git-server] {IDLE_CONNECTIONS} idle connections + a {BODY_BYTES // 10**6} MB chunked push "
        f"(answered {push.status}): server RSS {baseline / 2**20:.1f} MiB before, peak {peak_server / 2**20:.1f} MiB; "
        f"server + git processes peak {sampler.peak / 2**20:.1f} MiB (limit {MEMORY_LIMIT // 2**20} MiB); "
        f"{threads_during} threads with the connections open"
    )
    assert peak_server < MEMORY_LIMIT
    assert sampler.peak < MEMORY_LIMIT
    # Far less than the body: it was streamed, not held.
    assert peak_server - baseline < 32 * 2**20
    # No thread per connection: the event loop, at most 8 workers and their helper threads.
    assert threads_during < 40


# -- starting and stopping -------------------------------------------------------------------


def test_stops_on_sigterm(git_binary, tmp_path):
    server = Server(tmp_path / "srv", tmp_path / "server.log")
    server.start()
    assert server.stop() == 0
    assert "shutting down" in server.log_text()


def _start_with(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PATH": os.environ.get("PATH", os.defpath), "GIT_PROJECT_ROOT": str(tmp_path), "GIT_SERVER_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


ACCOUNTS = {
    "GIT_SERVER_READ_USERNAME": READ_USER,
    "GIT_SERVER_READ_PASSWORD": "r",
    "GIT_SERVER_PUSH_USERNAME": PUSH_USER,
    "GIT_SERVER_PUSH_PASSWORD": "p",
}


@pytest.mark.parametrize("missing", sorted(ACCOUNTS))
def test_refuses_to_start_without_both_accounts(tmp_path, missing):
    result = _start_with({k: v for k, v in ACCOUNTS.items() if k != missing}, tmp_path)
    assert result.returncode != 0
    assert missing in result.stderr
    assert not (tmp_path / "dags.git").exists()


def test_refuses_to_start_when_both_accounts_are_one_user(tmp_path):
    result = _start_with({**ACCOUNTS, "GIT_SERVER_PUSH_USERNAME": READ_USER}, tmp_path)
    assert result.returncode != 0
    assert "must be different users" in result.stderr


@pytest.mark.parametrize("name, value", [("GIT_SERVER_MAX_WORKERS", "0"), ("GIT_SERVER_MAX_BODY_BYTES", "lots")])
def test_refuses_to_start_with_a_bad_limit(tmp_path, name, value):
    result = _start_with({**ACCOUNTS, name: value}, tmp_path)
    assert result.returncode != 0
    assert name in result.stderr and value in result.stderr
