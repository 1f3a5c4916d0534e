"""scripts/dags-push.sh against the chart's git server, run locally: what `make dags-push`
sends is exactly dags/ at the subPath git-sync reads, once per change; it pushes with the
push account only, and no process it starts carries a credential in its arguments."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import DAGS, REPO
from tests.test_git_server import PUSH_USER, READ_USER, Server

PUSH = REPO / "scripts" / "dags-push.sh"


@pytest.fixture
def server(tmp_path):
    if not shutil.which("git"):
        pytest.skip("git not installed")
    root = tmp_path / "srv"
    root.mkdir()
    running = Server(root, tmp_path / "server.log", read_password="r3ad-Pa55", push_password="s3cret-Pa55")
    running.start()
    yield running
    running.stop()


def _push(server: Server, *args: str, dags=DAGS, user: str = PUSH_USER, password: str | None = None,
          check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_URL": server.url(user=None), "GIT_USERNAME": user,
           "GIT_PASSWORD": password or server.push_password, "DAGS_DIR": str(dags), **(env or {})}
    return subprocess.run([str(PUSH), *args], env=env, check=check, capture_output=True, text=True, timeout=120)


def _clone(server: Server, target) -> None:
    subprocess.run(["git", "clone", "--quiet", "--branch", "main", server.url(), str(target)],
                   check=True, capture_output=True, timeout=60)


def _files(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and ".git" not in p.relative_to(folder).parts
    }


def test_push_seeds_the_server_with_exactly_dags(server, tmp_path):
    assert "pushed" in _push(server, "--if-empty", "seed").stdout
    _clone(server, tmp_path / "clone")
    assert _files(tmp_path / "clone") == {f"dags/{name}": data for name, data in _files(DAGS).items()}


def test_if_empty_does_not_overwrite_and_unchanged_dags_make_no_commit(server, tmp_path):
    _push(server, "seed")
    assert "not pushing" in _push(server, "--if-empty").stdout
    assert "unchanged" in _push(server).stdout
    _clone(server, tmp_path / "clone")
    log = subprocess.run(["git", "-C", str(tmp_path / "clone"), "log", "--oneline"], capture_output=True, text=True)
    assert len(log.stdout.splitlines()) == 1


def test_a_changed_category_list_is_pushed_as_a_new_commit(server, tmp_path):
    _push(server, "seed")
    changed = tmp_path / "dags"
    shutil.copytree(DAGS, changed, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((changed / "categories.yaml").read_text())
    config["categories"].append({"name": "toys"})
    (changed / "categories.yaml").write_text(yaml.safe_dump(config))
    _push(server, "add toys", dags=changed)

    _clone(server, tmp_path / "clone")
    pushed = yaml.safe_load((tmp_path / "clone" / "dags" / "categories.yaml").read_text())
    assert [c["name"] for c in pushed["categories"]][-1] == "toys"
    log = subprocess.run(["git", "-C", str(tmp_path / "clone"), "log", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.splitlines() == ["add toys", "seed"]


def test_the_read_account_cannot_push(server, tmp_path):
    refused = _push(server, "seed", user=READ_USER, password=server.read_password, check=False)
    assert refused.returncode != 0
    assert "403" in refused.stderr and "read-only" in refused.stderr, refused.stderr
    assert not (server.repo / "refs" / "heads" / "main").exists()
    assert "pushed" in _push(server, "seed").stdout  # the push account can


# -- no credential on any command line -------------------------------------------------------

# Every command the script runs itself (git's own helpers are seen through GIT_TRACE).
COMMANDS = ("git", "base64", "tr", "sed", "cp", "find", "rm", "mkdir", "mktemp", "date", "dirname",
            "kubectl", "curl", "python3", "seq", "sleep")


def _recording_path(folder: Path, log: Path) -> str:
    """A PATH whose first folder holds a shim for each of COMMANDS: it appends its argv
    (NUL-separated, one record per line) to `log`, then runs the real command."""
    folder.mkdir()
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        shim = folder / name
        shim.write_text(f'#!/bin/sh\n{{ printf "%s\\0" "$0" "$@"; printf "\\n"; }} >> "{log}"\nexec "{real}" "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


def _secrets_of(user: str, password: str) -> list[str]:
    """What must appear in no argv: the password, and the Basic token that carries it."""
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def test_no_argv_of_any_process_carries_the_password(server, tmp_path):
    argv_log = tmp_path / "argv.log"
    trace = tmp_path / "git-trace.log"
    path = _recording_path(tmp_path / "shims", argv_log)
    env = {"PATH": path, "GIT_TRACE": str(trace)}
    _push(server, "seed", env=env)
    changed = tmp_path / "dags"
    shutil.copytree(DAGS, changed, ignore=shutil.ignore_patterns("__pycache__"))
    (changed / "extra.py").write_text("# one more\n")
    _push(server, "second", dags=changed, env=env)  # the clone-then-push path as well

    recorded = argv_log.read_bytes().split(b"\0\n")
    commands = [record.split(b"\0") for record in recorded if record]
    # The check saw the pushes (it cannot pass by seeing nothing).
    assert any(Path(argv[0].decode()).name == "git" and b"push" in argv for argv in commands), commands
    assert "git-remote-http" in trace.read_text() or "remote-curl" in trace.read_text()
    text = argv_log.read_text(errors="replace") + trace.read_text(errors="replace")
    for secret in _secrets_of(PUSH_USER, server.push_password):
        assert secret not in text
    assert f'{PUSH_USER} "POST /dags.git/git-receive-pack" 200' in server.log_text()


def test_the_script_reads_git_push_credentials_from_the_cluster(server, tmp_path):
    """Without GIT_URL the script asks kubectl for Secret git-push-credentials and forwards a
    port. There is no cluster here: a stand-in `kubectl` (the boundary) answers for the
    Secret and forwards the port to the local server; it refuses any other Secret."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    forwarder = tmp_path / "forward.py"
    forwarder.write_text(
        "import socket, sys, threading\n"
        "listen = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
        "def pipe(a, b):\n"
        "    try:\n"
        "        while data := a.recv(65536): b.sendall(data)\n"
        "    except OSError: pass\n"
        "    finally:\n"
        "        for s in (a, b):\n"
        "            try: s.shutdown(socket.SHUT_WR)\n"
        "            except OSError: pass\n"
        "while True:\n"
        "    client, _ = listen.accept()\n"
        "    upstream = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n"
        "    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()\n"
        "    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()\n"
    )
    kubectl = fake / "kubectl"
    kubectl.write_text(
        "#!/usr/bin/env bash\n"
        'echo "$*" >> "$KUBECTL_LOG"\n'
        'case "$*" in\n'
        '  *"get secret git-push-credentials"*username*) printf %s "$PUSH_USERNAME" ;;\n'
        '  *"get secret git-push-credentials"*password*) printf %s "$PUSH_PASSWORD" ;;\n'
        '  *"port-forward svc/platform-git "*) port="${*: -1}"; exec "$PYTHON" "$FORWARDER" "${port%%:80}" "$SERVER_PORT" ;;\n'
        '  *) echo "unexpected: kubectl $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    kubectl.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_URL", "GIT_USERNAME", "GIT_PASSWORD")}
    env.update({
        "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "KUBECTL_LOG": str(tmp_path / "kubectl.log"),
        "PUSH_USERNAME": PUSH_USER,
        "PUSH_PASSWORD": server.push_password,
        "PYTHON": sys.executable,
        "FORWARDER": str(forwarder),
        "SERVER_PORT": str(server.port),
        "DAGS_DIR": str(DAGS),
        "NAMESPACE": "airflow",
    })
    result = subprocess.run([str(PUSH), "seed"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pushed" in result.stdout
    calls = (tmp_path / "kubectl.log").read_text()
    assert "get secret git-push-credentials" in calls and "git-credentials " not in calls
    assert f'{PUSH_USER} "POST /dags.git/git-receive-pack" 200' in server.log_text()


# -- the Basic auth header: one line on Linux and macOS ---------------------------------------

# user:password is 104 bytes -> 140 base64 characters: GNU base64 wraps at 76 unless told
# not to (-w0, GNU only); the script strips newlines instead. Characters the shell could mangle.
LONG_PASSWORD = "Lg-" + "x9$Q%`'\"\\ !*?[]{}ü" * 5


def test_auth_header_is_pythons_base64_of_user_and_a_long_password(tmp_path):
    """The header the real script sends, caught by a server that answers 404 to everything."""
    import http.server
    import threading

    if not shutil.which("git"):
        pytest.skip("git not installed")
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "GIT_URL": f"http://127.0.0.1:{httpd.server_address[1]}/dags.git",
               "GIT_USERNAME": PUSH_USER, "GIT_PASSWORD": LONG_PASSWORD, "DAGS_DIR": str(DAGS),
               "GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path)}
        subprocess.run([str(PUSH), "seed"], env=env, capture_output=True, text=True, timeout=120)
    finally:
        httpd.shutdown()
        httpd.server_close()
    token = base64.b64encode(f"{PUSH_USER}:{LONG_PASSWORD}".encode()).decode()
    assert len(token) > 76
    assert seen, "git sent no request"
    assert set(seen) == {f"Basic {token}"}


def test_push_with_a_long_password(tmp_path):
    if not shutil.which("git"):
        pytest.skip("git not installed")
    root = tmp_path / "srv"
    root.mkdir()
    running = Server(root, tmp_path / "server.log", push_password=LONG_PASSWORD)
    running.start()
    try:
        assert "pushed" in _push(running, "seed").stdout
        _clone(running, tmp_path / "clone")
        assert (tmp_path / "clone" / "dags" / "categories.yaml").is_file()
    finally:
        running.stop()
