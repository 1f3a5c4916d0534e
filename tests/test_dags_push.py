"""scripts/dags-push.sh against the chart's git server, run locally: what `make dags-push`
sends is exactly dags/ at the subPath git-sync reads, once per change."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import DAGS, REPO
from tests.test_git_server import USER, Server

PUSH = REPO / "scripts" / "dags-push.sh"


@pytest.fixture
def server(tmp_path):
    if not shutil.which("git"):
        pytest.skip("git not installed")
    root = tmp_path / "srv"
    root.mkdir()
    running = Server(root, tmp_path / "server.log", password="s3cret-Pa55")
    running.start()
    yield running
    running.stop()


def _push(server: Server, *args: str, dags=DAGS) -> str:
    env = {**os.environ, "GIT_URL": server.url(user=None), "GIT_USERNAME": USER,
           "GIT_PASSWORD": server.password, "DAGS_DIR": str(dags)}
    return subprocess.run([str(PUSH), *args], env=env, check=True, capture_output=True, text=True, timeout=120).stdout


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
    assert "pushed" in _push(server, "--if-empty", "seed")
    _clone(server, tmp_path / "clone")
    assert _files(tmp_path / "clone") == {f"dags/{name}": data for name, data in _files(DAGS).items()}


def test_if_empty_does_not_overwrite_and_unchanged_dags_make_no_commit(server, tmp_path):
    _push(server, "seed")
    assert "not pushing" in _push(server, "--if-empty")
    assert "unchanged" in _push(server)
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


# -- the Basic auth header: one line on Linux and macOS ---------------------------------------

# user:password is 104 bytes -> 140 base64 characters: GNU base64 wraps at 76 unless told
# not to (-w0, GNU only); the script strips newlines instead. Characters the shell could mangle.
LONG_PASSWORD = "Lg-" + "x9$Q%`'\"\\ !*?[]{}ü" * 5


def test_auth_header_is_pythons_base64_of_user_and_a_long_password(tmp_path):
    """The header the real script sends, caught by a server that answers 404 to everything."""
    import base64
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
               "GIT_USERNAME": USER, "GIT_PASSWORD": LONG_PASSWORD, "DAGS_DIR": str(DAGS),
               "GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path)}
        subprocess.run([str(PUSH), "seed"], env=env, capture_output=True, text=True, timeout=120)
    finally:
        httpd.shutdown()
        httpd.server_close()
    token = base64.b64encode(f"{USER}:{LONG_PASSWORD}".encode()).decode()
    assert len(token) > 76
    assert seen, "git sent no request"
    assert set(seen) == {f"Basic {token}"}


def test_push_with_a_long_password(tmp_path):
    if not shutil.which("git"):
        pytest.skip("git not installed")
    root = tmp_path / "srv"
    root.mkdir()
    running = Server(root, tmp_path / "server.log", password=LONG_PASSWORD)
    running.start()
    try:
        assert "pushed" in _push(running, "seed")
        from urllib.parse import quote

        url = running.url(password=quote(LONG_PASSWORD, safe=""))
        subprocess.run(["git", "clone", "--quiet", "--branch", "main", url, str(tmp_path / "clone")],
                       check=True, capture_output=True, timeout=60)
        assert (tmp_path / "clone" / "dags" / "categories.yaml").is_file()
    finally:
        running.stop()
