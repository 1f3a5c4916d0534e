#!/usr/bin/env python3
"""A small git server over smart HTTP, for development clusters (kind).

Serves one bare repository, $GIT_PROJECT_ROOT/$GIT_SERVER_REPO (default /srv/git/dags.git),
by running `git http-backend` as a CGI program for each request. The repository is created
on start when missing (`git init --bare`, HEAD -> main, http.receivepack on).

Every request except GET /healthz needs HTTP basic auth with GIT_SERVER_USERNAME and
GIT_SERVER_PASSWORD: clone and fetch as well as push. Python standard library only.

Environment:
  GIT_SERVER_USERNAME, GIT_SERVER_PASSWORD   the one account (required)
  GIT_PROJECT_ROOT                           folder of the repository (default /srv/git)
  GIT_SERVER_REPO                            repository name (default dags.git)
  GIT_SERVER_BIND, GIT_SERVER_PORT           listen address (default 0.0.0.0:8080)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024
log = logging.getLogger("git-http-server")


@dataclass(frozen=True)
class Settings:
    username: str
    password: str
    root: str
    repo: str
    bind: str
    port: int

    @property
    def repo_path(self) -> str:
        return os.path.join(self.root, self.repo)

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        username = env.get("GIT_SERVER_USERNAME", "")
        password = env.get("GIT_SERVER_PASSWORD", "")
        if not username or not password:
            raise SystemExit("GIT_SERVER_USERNAME and GIT_SERVER_PASSWORD must be set")
        repo = env.get("GIT_SERVER_REPO", "dags.git")
        if "/" in repo or repo in ("", ".", ".."):
            raise SystemExit(f"GIT_SERVER_REPO must be a plain name, not {repo!r}")
        return cls(
            username=username,
            password=password,
            root=os.path.abspath(env.get("GIT_PROJECT_ROOT", "/srv/git")),
            repo=repo,
            bind=env.get("GIT_SERVER_BIND", "0.0.0.0"),
            port=int(env.get("GIT_SERVER_PORT", "8080")),
        )


def git_env(settings: Settings) -> dict[str, str]:
    """The environment of every git process: a minimal one, plus the repository as a
    safe.directory (git refuses repositories owned by another uid, e.g. on a volume that an
    earlier pod with another uid initialised)."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": settings.repo_path,
    }


def init_repository(settings: Settings) -> None:
    """Create the bare repository when missing; allow pushes over HTTP in any case."""
    path = settings.repo_path
    env = git_env(settings)
    if not os.path.isfile(os.path.join(path, "HEAD")):
        os.makedirs(settings.root, exist_ok=True)
        subprocess.run(["git", "init", "--bare", "--quiet", path], env=env, check=True)
        subprocess.run(["git", "--git-dir", path, "symbolic-ref", "HEAD", "refs/heads/main"], env=env, check=True)
        log.info("created bare repository %s (default branch main)", path)
    subprocess.run(["git", "--git-dir", path, "config", "http.receivepack", "true"], env=env, check=True)


class GitHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 (so that `Expect: 100-continue` is answered), but one request per connection:
    # a response body of unknown length then simply ends with the connection.
    protocol_version = "HTTP/1.1"
    server_version = "platform-git/1"
    timeout = 300  # seconds of socket inactivity before a connection is dropped

    server: "GitHTTPServer"

    # -- plumbing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def send_response(self, code, message=None) -> None:
        self._status = code
        super().send_response(code, message)

    def log_request(self, code="-", size="-") -> None:
        pass  # one line per request is written by _handle

    def log_message(self, format, *args) -> None:
        log.warning("%s %s", self.client_address[0], format % args)

    def _handle(self) -> None:
        self.close_connection = True
        self._status = None
        self._user = "-"
        self._bytes = 0
        started = time.monotonic()
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            log.warning("%s connection lost: %s", self.client_address[0], exc)
        except Exception:
            log.exception("error handling %s %s", self.command, self.path)
            if self._status is None:
                self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        finally:
            encoding = self.headers.get("Content-Encoding") if self.headers else None
            log.info(
                '%s %s "%s %s" %s %dB %.3fs%s',
                self.client_address[0],
                self._user,
                self.command,
                self.path,
                self._status or "-",
                self._bytes,
                time.monotonic() - started,
                f" enc={encoding}" if encoding else "",
            )

    def _send_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._bytes += len(body)

    # -- the request ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        settings = self.server.settings
        url = urlsplit(self.path)
        path = unquote(url.path)

        if path == "/healthz":
            if os.path.isfile(os.path.join(settings.repo_path, "HEAD")):
                self._send_text(HTTPStatus.OK, "ok\n")
            else:
                self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, "repository missing\n")
            return

        user = self._authenticate(settings)
        if user is None:
            self._discard_small_body()
            self._send_text(
                HTTPStatus.UNAUTHORIZED,
                "authentication required\n",
                {"WWW-Authenticate": 'Basic realm="git", charset="UTF-8"'},
            )
            return
        self._user = user

        prefix = "/" + settings.repo
        segments = path.split("/")
        if not (path == prefix or path.startswith(prefix + "/")) or ".." in segments or "." in segments:
            self._discard_small_body()
            self._send_text(HTTPStatus.NOT_FOUND, "not found\n")
            return
        self._run_backend(settings, path, url.query, user)

    def _authenticate(self, settings: Settings) -> str | None:
        """The user name when the request carries the right basic credentials, else None."""
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, colon, password = decoded.partition(":")
        # Both compared in constant time, and always both.
        user_ok = hmac.compare_digest(username.encode(), settings.username.encode())
        password_ok = hmac.compare_digest(password.encode(), settings.password.encode())
        return username if colon and user_ok and password_ok else None

    def _discard_small_body(self) -> None:
        """Read a small rejected body, so that closing the socket does not reset the
        connection before the client has read the answer."""
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= 1024 * 1024:
            self.rfile.read(int(length))

    def _request_body(self):
        """The request body as a stream of byte blocks: Content-Length or chunked."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ConnectionResetError("request body ended inside a chunk header")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    block = self.rfile.read(min(size, CHUNK))
                    if not block:
                        raise ConnectionResetError("request body ended inside a chunk")
                    size -= len(block)
                    yield block
                self.rfile.readline(1024)  # the CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                block = self.rfile.read(min(remaining, CHUNK))
                if not block:
                    raise ConnectionResetError("request body shorter than Content-Length")
                remaining -= len(block)
                yield block

    def _run_backend(self, settings: Settings, path: str, query: str, user: str) -> None:
        env = git_env(settings)
        env.update(
            {
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": self.request_version,
                "SERVER_SOFTWARE": self.server_version,
                "SERVER_NAME": settings.bind,
                "SERVER_PORT": str(settings.port),
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": user,
                "AUTH_TYPE": "Basic",
                "GIT_PROJECT_ROOT": settings.root,
                "GIT_HTTP_EXPORT_ALL": "1",
            }
        )
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        optional = {
            "CONTENT_TYPE": self.headers.get("Content-Type"),
            # Absent for a chunked body: http-backend then reads its input to the end.
            "CONTENT_LENGTH": None if chunked else self.headers.get("Content-Length"),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding"),  # gzip'ed requests
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol"),  # protocol v2
        }
        env.update({name: value for name, value in optional.items() if value})

        backend = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=settings.root,
        )
        errors: list[bytes] = []
        feeder = threading.Thread(target=self._feed, args=(backend.stdin,), daemon=True)
        drainer = threading.Thread(target=lambda: errors.append(backend.stderr.read()), daemon=True)
        feeder.start()
        drainer.start()
        try:
            status, reason, headers = self._read_cgi_headers(backend.stdout)
            if status is None:
                self._send_text(HTTPStatus.BAD_GATEWAY, "git http-backend failed\n")
            else:
                self.send_response(status, reason or None)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                while block := backend.stdout.read1(CHUNK):
                    self.wfile.write(block)
                    self._bytes += len(block)
                self.wfile.flush()
        finally:
            backend.stdout.close()
            feeder.join(timeout=self.timeout)
            try:
                backend.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                backend.kill()
                backend.wait()
            drainer.join(timeout=5)
            message = b"".join(errors).decode("utf-8", "replace").strip()
            if backend.returncode or message:
                log.warning("git http-backend exited %s: %s", backend.returncode, message or "(no output)")

    def _feed(self, stdin) -> None:
        """Stream the request body into the backend (a thread: the backend may answer
        before it has read everything)."""
        try:
            for block in self._request_body():
                stdin.write(block)
        except (BrokenPipeError, ConnectionResetError, ValueError, TimeoutError) as exc:
            log.warning("%s request body not fully passed on: %s", self.client_address[0], exc)
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    @staticmethod
    def _read_cgi_headers(stdout):
        """(status, reason, headers) from a CGI response; status None when there is none."""
        status, reason, headers, complete = 200, "", [], False
        while line := stdout.readline(64 * 1024):
            line = line.rstrip(b"\r\n")
            if not line:
                complete = True
                break
            name, _, value = line.decode("latin-1").partition(":")
            value = value.strip()
            if name.strip().lower() == "status":
                code, _, reason = value.partition(" ")
                status = int(code)
            else:
                headers.append((name.strip(), value))
        return (status, reason, headers) if complete else (None, "", [])


class GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__((settings.bind, settings.port), GitHandler)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    settings = Settings.from_env()
    init_repository(settings)
    server = GitHTTPServer(settings)

    def stop(signum, frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving %s on http://%s:%d/%s", settings.repo_path, settings.bind, server.server_port, settings.repo)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
