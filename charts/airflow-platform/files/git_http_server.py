#!/usr/bin/env python3
"""A small git server over smart HTTP, for development clusters (kind).

Serves one bare repository, $GIT_PROJECT_ROOT/$GIT_SERVER_REPO (default /srv/git/dags.git),
by running `git http-backend` as a CGI program for each request. The repository is created
on start when missing (`git init --bare`, HEAD -> main); on every start it is (re)configured
to accept pushes over HTTP but never a force-push or a branch deletion
(receive.denyNonFastForwards, receive.denyDeletes).

Two accounts, HTTP basic auth on every request except GET /healthz:
  the read account   clone and fetch only (git-sync); asking to push answers 403
  the push account   clone, fetch and push (dags-push.sh)

Bounded resources, whatever the clients do:
  - one thread (the event loop) waits for the request heads of all connections: an idle or
    slow connection costs a socket, not a thread; at most GIT_SERVER_MAX_CONNECTIONS of them
    (more are answered 503), each closed when its head is not complete within the idle timeout;
  - a complete request goes to a fixed pool of GIT_SERVER_MAX_WORKERS threads, with at most
    GIT_SERVER_MAX_QUEUED waiting for one (more are answered 503);
  - a request body (Content-Length or chunked) is streamed to git, never held in memory, and
    may be at most GIT_SERVER_MAX_BODY_BYTES (413); a malformed chunked body is answered 400;
  - a connection silent for GIT_SERVER_IDLE_TIMEOUT seconds is dropped, and a request is
    aborted (git processes killed) after GIT_SERVER_REQUEST_TIMEOUT seconds in all.

Python standard library only.

Environment:
  GIT_SERVER_READ_USERNAME, GIT_SERVER_READ_PASSWORD   the read-only account (required)
  GIT_SERVER_PUSH_USERNAME, GIT_SERVER_PUSH_PASSWORD   the account that may push (required)
  GIT_PROJECT_ROOT                  folder of the repository (default /srv/git)
  GIT_SERVER_REPO                   repository name (default dags.git)
  GIT_SERVER_BIND, GIT_SERVER_PORT  listen address (default 0.0.0.0:8080)
  GIT_SERVER_MAX_CONNECTIONS        connections waiting for their request head (default 512)
  GIT_SERVER_MAX_WORKERS            requests handled at once (default 8)
  GIT_SERVER_MAX_QUEUED             requests waiting for a worker (default 16)
  GIT_SERVER_IDLE_TIMEOUT           seconds of silence before a connection is dropped (default 30)
  GIT_SERVER_REQUEST_TIMEOUT        seconds a request may take in all (default 300)
  GIT_SERVER_MAX_BODY_BYTES         largest request body (default 67108864, 64 MiB)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, unquote_plus, urlsplit

CHUNK = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024  # request line + headers; git sends well under 2 KiB
HOLD_BYTES = 1024 * 1024  # backend output held back until the request body is known to be good
LINGER_SECONDS = 2.0  # after an answer, unread body is drained this long so the client sees it
STDERR_KEEP = 16 * 1024
log = logging.getLogger("git-http-server")

READ, PUSH = "read", "push"


class RequestRejected(Exception):
    """A request answered with an error status instead of being passed to git."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- settings -------------------------------------------------------------------------------


def _integer(env, name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class Settings:
    read_username: str
    read_password: str
    push_username: str
    push_password: str
    root: str
    repo: str
    bind: str
    port: int
    max_connections: int = 512
    max_workers: int = 8
    max_queued: int = 16
    idle_timeout: int = 30
    request_timeout: int = 300
    max_body_bytes: int = 64 * 1024 * 1024

    @property
    def repo_path(self) -> str:
        return os.path.join(self.root, self.repo)

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        accounts = {}
        for role in ("READ", "PUSH"):
            username = env.get(f"GIT_SERVER_{role}_USERNAME", "")
            password = env.get(f"GIT_SERVER_{role}_PASSWORD", "")
            if not username or not password:
                raise SystemExit(f"GIT_SERVER_{role}_USERNAME and GIT_SERVER_{role}_PASSWORD must be set")
            if ":" in username:
                raise SystemExit(f"GIT_SERVER_{role}_USERNAME must not contain ':'")
            accounts[role] = (username, password)
        if accounts["READ"][0] == accounts["PUSH"][0]:
            raise SystemExit(
                f"GIT_SERVER_READ_USERNAME and GIT_SERVER_PUSH_USERNAME are both {accounts['READ'][0]!r}: "
                "the read-only and the push account must be different users"
            )
        repo = env.get("GIT_SERVER_REPO", "dags.git")
        if "/" in repo or repo in ("", ".", ".."):
            raise SystemExit(f"GIT_SERVER_REPO must be a plain name, not {repo!r}")
        return cls(
            read_username=accounts["READ"][0],
            read_password=accounts["READ"][1],
            push_username=accounts["PUSH"][0],
            push_password=accounts["PUSH"][1],
            root=os.path.abspath(env.get("GIT_PROJECT_ROOT", "/srv/git")),
            repo=repo,
            bind=env.get("GIT_SERVER_BIND", "0.0.0.0"),
            port=_integer(env, "GIT_SERVER_PORT", 8080, 0),
            max_connections=_integer(env, "GIT_SERVER_MAX_CONNECTIONS", cls.max_connections, 1),
            max_workers=_integer(env, "GIT_SERVER_MAX_WORKERS", cls.max_workers, 1),
            max_queued=_integer(env, "GIT_SERVER_MAX_QUEUED", cls.max_queued, 0),
            idle_timeout=_integer(env, "GIT_SERVER_IDLE_TIMEOUT", cls.idle_timeout, 1),
            request_timeout=_integer(env, "GIT_SERVER_REQUEST_TIMEOUT", cls.request_timeout, 1),
            max_body_bytes=_integer(env, "GIT_SERVER_MAX_BODY_BYTES", cls.max_body_bytes, 1),
        )


# -- the repository -------------------------------------------------------------------------


def git_env(settings: Settings, config: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every git process: a minimal one, plus the repository as a
    safe.directory (git refuses repositories owned by another uid, e.g. on a volume that an
    earlier pod with another uid initialised), plus `config` (environment config outranks
    the repository's)."""
    entries = {"safe.directory": settings.repo_path, **(config or {})}
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": str(len(entries)),
    }
    for index, (key, value) in enumerate(entries.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


# Set on every start, not only at creation: a repository on a kept volume gets them too.
REPOSITORY_CONFIG = {
    "http.receivepack": "true",  # pushes over HTTP (only the push account gets that far)
    "receive.denyNonFastForwards": "true",  # no force-push
    "receive.denyDeletes": "true",  # no branch deletion
}


def init_repository(settings: Settings) -> None:
    """Create the bare repository when missing; apply REPOSITORY_CONFIG in any case."""
    path = settings.repo_path
    env = git_env(settings)
    if not os.path.isfile(os.path.join(path, "HEAD")):
        os.makedirs(settings.root, exist_ok=True)
        subprocess.run(["git", "init", "--bare", "--quiet", path], env=env, check=True)
        subprocess.run(["git", "--git-dir", path, "symbolic-ref", "HEAD", "refs/heads/main"], env=env, check=True)
        log.info("created bare repository %s (default branch main)", path)
    for key, value in REPOSITORY_CONFIG.items():
        subprocess.run(["git", "--git-dir", path, "config", key, value], env=env, check=True)


def wants_push(path: str, query: str) -> bool:
    """Whether a request reaches git-receive-pack. Deliberately broad: any mention of it in
    the (decoded) path or query string counts."""
    return "receive-pack" in path or "receive-pack" in unquote_plus(query)


def _digest(text: str) -> bytes:
    # Equal-length inputs for compare_digest: the comparison leaks no length either.
    return hashlib.sha256(text.encode()).digest()


# -- one request ----------------------------------------------------------------------------


class _PrefixedSocketReader(io.RawIOBase):
    """The bytes the event loop already read from a connection, then the connection."""

    def __init__(self, prefix: bytes, connection: socket.socket):
        self._prefix = memoryview(prefix)
        self._connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        return self._connection.recv_into(buffer)


class _BodyOutcome:
    def __init__(self):
        self.done = threading.Event()
        self.error: RequestRejected | None = None


class GitHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 (so that `Expect: 100-continue` is answered), but one request per connection:
    # a response body of unknown length then simply ends with the connection.
    protocol_version = "HTTP/1.1"
    server_version = "platform-git/1"

    server: "GitHTTPServer"

    def __init__(self, connection, client_address, server, prefix: bytes):
        self._prefix = prefix
        self.timeout = server.settings.idle_timeout  # applied to the socket by setup()
        self.body_unread = False  # the request body was not read to its end: linger
        self._backend: subprocess.Popen | None = None
        self._aborted = False
        super().__init__(connection, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # else it keeps the socket open after close()
        self.rfile = io.BufferedReader(_PrefixedSocketReader(self._prefix, self.connection), CHUNK)

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

    def handle_expect_100(self) -> bool:
        # A request that will be refused gets its final answer instead of "100 Continue":
        # the client then need not send the body at all.
        if self._check() is not None:
            return True
        return super().handle_expect_100()

    def _handle(self) -> None:
        self.close_connection = True
        self._status = None
        self._bytes = 0
        started = time.monotonic()
        watchdog = threading.Timer(self.server.settings.request_timeout, self._abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionError, TimeoutError, OSError) as exc:
            log.warning("%s connection lost: %s", self.client_address[0], exc)
        except Exception:
            log.exception("error handling %s %s", self.command, self.path)
            if self._status is None:
                self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        finally:
            watchdog.cancel()
            encoding = self.headers.get("Content-Encoding") if self.headers else None
            log.info(
                '%s %s "%s %s" %s %dB %.3fs%s%s',
                self.client_address[0],
                getattr(self, "_user", "-"),
                self.command,
                self.path,
                self._status or "-",
                self._bytes,
                time.monotonic() - started,
                f" enc={encoding}" if encoding else "",
                " (aborted: request time limit)" if self._aborted else "",
            )

    def _abort(self) -> None:
        """The request took longer than GIT_SERVER_REQUEST_TIMEOUT: kill its git processes
        and shut the socket, which ends every read and write of the handler."""
        self._aborted = True
        log.warning(
            "%s %s %s: over the request time limit of %d s, aborting",
            self.client_address[0], self.command, self.path, self.server.settings.request_timeout,
        )
        _kill(self._backend)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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

    def _check(self) -> RequestRejected | None:
        """Why this request is refused (None: it is not). Computed once: also called before
        answering `Expect: 100-continue`."""
        if not hasattr(self, "_rejection"):
            self._rejection = self._find_rejection()
        return self._rejection

    def _find_rejection(self) -> RequestRejected | None:
        settings = self.server.settings
        url = urlsplit(self.path)
        path = unquote(url.path)
        self._path, self._query = path, url.query
        transfer_encoding = self.headers.get_all("Transfer-Encoding") or []
        content_length = self.headers.get_all("Content-Length") or []
        self.body_unread = bool(transfer_encoding) or any(v.strip() not in ("", "0") for v in content_length)

        role = self._authenticate(settings)
        if role is None:
            return RequestRejected(HTTPStatus.UNAUTHORIZED, "authentication required\n")
        self._role = role

        prefix = "/" + settings.repo
        segments = path.split("/")
        if not (path == prefix or path.startswith(prefix + "/")) or ".." in segments or "." in segments:
            return RequestRejected(HTTPStatus.NOT_FOUND, "not found\n")
        if role == READ and wants_push(path, url.query):
            return RequestRejected(
                HTTPStatus.FORBIDDEN,
                f"user {self._user!r} may only clone and fetch (read-only account); "
                "push with the account of Secret git-push-credentials\n",
            )

        if transfer_encoding:
            if content_length or ",".join(transfer_encoding).replace(" ", "").lower() != "chunked":
                return RequestRejected(
                    HTTPStatus.BAD_REQUEST, "only Transfer-Encoding: chunked, without Content-Length, is accepted\n"
                )
        elif content_length:
            if len(content_length) != 1 or not re.fullmatch(r"[0-9]{1,19}", content_length[0].strip()):
                return RequestRejected(HTTPStatus.BAD_REQUEST, "invalid Content-Length\n")
            if int(content_length[0]) > settings.max_body_bytes:
                return RequestRejected(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"request body larger than the limit of {settings.max_body_bytes} bytes\n",
                )
        return None

    def _dispatch(self) -> None:
        settings = self.server.settings
        if urlsplit(self.path).path == "/healthz":  # normally answered by the event loop
            self._send_text(HTTPStatus.OK, "ok\n")
            return
        rejection = self._check()
        if rejection is not None:
            headers = {}
            if rejection.status == HTTPStatus.UNAUTHORIZED:
                headers["WWW-Authenticate"] = 'Basic realm="git", charset="UTF-8"'
            self._send_text(rejection.status, rejection.message, headers)
            return
        self._run_backend(settings)

    def _authenticate(self, settings: Settings) -> str | None:
        """READ or PUSH when the request carries the credentials of that account, else None."""
        self._user = "-"
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, colon, password = decoded.partition(":")
        if not colon:
            return None
        # Every comparison is made, in constant time, whichever matches.
        matches = [
            role
            for role, (user, secret) in (
                (READ, (settings.read_username, settings.read_password)),
                (PUSH, (settings.push_username, settings.push_password)),
            )
            if hmac.compare_digest(_digest(username), _digest(user)) & hmac.compare_digest(_digest(password), _digest(secret))
        ]
        if not matches:
            return None
        self._user = username
        return matches[0]

    def _request_body(self):
        """The request body as a stream of byte blocks (Content-Length or chunked), checked
        against the size limit as it arrives. Raises RequestRejected (400, 413)."""
        limit = self.server.settings.max_body_bytes
        received = 0
        if self.headers.get("Transfer-Encoding"):
            while True:
                size_line = self.rfile.readline(1026)
                if not size_line:
                    raise ConnectionResetError("request body ended inside a chunk header")
                token = size_line.split(b";", 1)[0].strip()
                if not size_line.endswith(b"\n") or not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", token):
                    raise RequestRejected(HTTPStatus.BAD_REQUEST, f"malformed chunk size {token[:40]!r}\n")
                size = int(token, 16)
                if size == 0:
                    for _ in range(64):  # trailers, up to the empty line
                        if self.rfile.readline(1026) in (b"\r\n", b"\n", b""):
                            self.body_unread = False
                            return
                    raise RequestRejected(HTTPStatus.BAD_REQUEST, "too many trailer lines\n")
                received += size
                if received > limit:
                    raise RequestRejected(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body larger than the limit of {limit} bytes\n"
                    )
                while size:
                    block = self.rfile.read1(min(size, CHUNK))
                    if not block:
                        raise ConnectionResetError("request body ended inside a chunk")
                    size -= len(block)
                    yield block
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise RequestRejected(HTTPStatus.BAD_REQUEST, "chunk not followed by CRLF\n")
        else:
            remaining = int(self.headers.get("Content-Length") or 0)  # checked against the limit
            while remaining > 0:
                block = self.rfile.read1(min(remaining, CHUNK))
                if not block:
                    raise ConnectionResetError("request body shorter than Content-Length")
                remaining -= len(block)
                yield block
            self.body_unread = False

    def _run_backend(self, settings: Settings) -> None:
        # The read account's git never offers receive-pack, whatever the repository says.
        env = git_env(settings, {"http.receivepack": "false"} if self._role == READ else None)
        env.update(
            {
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": self.request_version,
                "SERVER_SOFTWARE": self.server_version,
                "SERVER_NAME": settings.bind,
                "SERVER_PORT": str(settings.port),
                "REQUEST_METHOD": self.command,
                "PATH_INFO": self._path,
                "QUERY_STRING": self._query,
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": self._user,
                "AUTH_TYPE": "Basic",
                "GIT_PROJECT_ROOT": settings.root,
                "GIT_HTTP_EXPORT_ALL": "1",
            }
        )
        chunked = bool(self.headers.get("Transfer-Encoding"))
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
            start_new_session=True,  # its own process group: killed with its children
        )
        self._backend = backend
        if self._aborted:  # the time limit struck while it started
            _kill(backend)
        outcome = _BodyOutcome()
        errors = bytearray()
        feeder = threading.Thread(target=self._feed, args=(backend, outcome), daemon=True)
        drainer = threading.Thread(target=_keep_head, args=(backend.stderr, errors), daemon=True)
        feeder.start()
        drainer.start()
        try:
            status, reason, headers = self._read_cgi_headers(backend.stdout)
            # http-backend writes its headers before it has read the body: the answer is held
            # back (up to HOLD_BYTES) until the body turned out good, so that a body over the
            # limit or malformed can still be answered 413 or 400.
            held: list[bytes] = []
            held_size = 0
            committed = False
            while block := backend.stdout.read1(CHUNK):
                if committed:
                    self._write(block)
                    continue
                held.append(block)
                held_size += len(block)
                if (outcome.done.is_set() and outcome.error is None) or held_size > HOLD_BYTES:
                    self._send_cgi_answer(status, reason, headers, held)
                    committed = True
            outcome.done.wait()  # bounded: the socket times out, the watchdog shuts it
            if not committed:
                if outcome.error is not None:
                    self._send_text(outcome.error.status, outcome.error.message)
                elif status is None:
                    self._send_text(HTTPStatus.BAD_GATEWAY, "git http-backend failed\n")
                else:
                    self._send_cgi_answer(status, reason, headers, held)
            self.wfile.flush()
        finally:
            backend.stdout.close()
            try:
                backend.wait(timeout=settings.idle_timeout)
            except subprocess.TimeoutExpired:
                _kill(backend)
                backend.wait()
            feeder.join(timeout=5)
            drainer.join(timeout=5)
            message = errors.decode("utf-8", "replace").strip()
            if backend.returncode or message:
                log.warning("git http-backend exited %s: %s", backend.returncode, message or "(no output)")

    def _send_cgi_answer(self, status, reason, headers, held: list[bytes]) -> None:
        self.send_response(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        for block in held:
            self._write(block)

    def _write(self, block: bytes) -> None:
        self.wfile.write(block)
        self._bytes += len(block)

    def _feed(self, backend: subprocess.Popen, outcome: _BodyOutcome) -> None:
        """Stream the request body into the backend (a thread: the backend may answer
        before it has read everything). Once the backend stops reading, the rest of the body
        is still read and discarded, so that the limits hold and the client gets an answer."""
        passing = True
        try:
            for block in self._request_body():
                if passing:
                    try:
                        backend.stdin.write(block)
                    except (BrokenPipeError, OSError):
                        passing = False
        except RequestRejected as exc:
            # Killed before its input ends: git must never take a cut-off body for a whole one.
            _kill(backend)
            outcome.error = exc
        except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
            _kill(backend)
            outcome.error = RequestRejected(HTTPStatus.REQUEST_TIMEOUT, "request body not received\n")
            log.warning("%s request body not received: %s", self.client_address[0], exc)
        finally:
            try:
                backend.stdin.close()
            except OSError:
                pass
            outcome.done.set()

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


def _kill(process: subprocess.Popen | None) -> None:
    """Kill a backend and everything it started (its process group)."""
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _keep_head(stream, into: bytearray) -> None:
    """Read a stream to its end, keeping its first STDERR_KEEP bytes."""
    while block := stream.read1(CHUNK):
        if len(into) < STDERR_KEEP:
            into.extend(block[: STDERR_KEEP - len(into)])


# -- the server -----------------------------------------------------------------------------


@dataclass
class _Waiting:
    """A connection whose request head is still arriving."""

    address: tuple
    deadline: float
    head: bytearray


def _answer_now(connection: socket.socket, status: HTTPStatus, text: str) -> None:
    """A short answer from the event loop: never blocks (a few hundred bytes always fit
    into the empty send buffer of a fresh connection)."""
    body = text.encode()
    response = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    try:
        connection.setblocking(False)
        connection.send(response)
    except OSError:
        pass
    connection.close()


class GitHTTPServer:
    """One event-loop thread collects request heads; a fixed pool of workers serves them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.socket = socket.create_server((settings.bind, settings.port), backlog=128)
        self.socket.setblocking(False)
        self.server_port = self.socket.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._waiting: dict[socket.socket, _Waiting] = {}
        self._workers = ThreadPoolExecutor(settings.max_workers, thread_name_prefix="git-request")
        self._busy = 0  # requests given to the pool: running or queued
        self._busy_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(timeout=1.0):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_reader:
                        self._wake_reader.recv(64)
                    else:
                        self._read_head(key.fileobj)
                self._drop_expired()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake_writer.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        for connection in list(self._waiting):
            self._forget(connection)
            connection.close()
        self._selector.close()
        self.socket.close()
        self._workers.shutdown(wait=True, cancel_futures=True)  # running ones end within their time limit
        self._wake_reader.close()
        self._wake_writer.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. out of file descriptors: let some close first
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)
                return
            if len(self._waiting) >= self.settings.max_connections:
                _answer_now(connection, HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
                continue
            connection.setblocking(False)
            self._waiting[connection] = _Waiting(address, time.monotonic() + self.settings.idle_timeout, bytearray())
            self._selector.register(connection, selectors.EVENT_READ)

    def _forget(self, connection: socket.socket) -> _Waiting:
        self._selector.unregister(connection)
        return self._waiting.pop(connection)

    def _read_head(self, connection: socket.socket) -> None:
        waiting = self._waiting[connection]
        try:
            block = connection.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            block = b""
        if not block:
            self._forget(connection)
            connection.close()
            return
        waiting.head += block
        end = waiting.head.find(b"\r\n\r\n")
        if end < 0:
            end = waiting.head.find(b"\n\n")
        if end < 0:
            if len(waiting.head) > MAX_HEAD_BYTES:
                self._forget(connection)
                _answer_now(connection, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large\n")
            return
        self._forget(connection)
        self._dispatch(connection, waiting)

    def _dispatch(self, connection: socket.socket, waiting: _Waiting) -> None:
        request_line = bytes(waiting.head.split(b"\n", 1)[0]).split()
        if len(request_line) == 3 and request_line[0] in (b"GET", b"HEAD") and urlsplit(request_line[1]).path == b"/healthz":
            # Answered here, without a worker: busy workers do not make the server look dead.
            if os.path.isfile(os.path.join(self.settings.repo_path, "HEAD")):
                _answer_now(connection, HTTPStatus.OK, "ok\n")
            else:
                _answer_now(connection, HTTPStatus.SERVICE_UNAVAILABLE, "repository missing\n")
            return
        with self._busy_lock:
            if self._busy >= self.settings.max_workers + self.settings.max_queued:
                full = True
            else:
                full = False
                self._busy += 1
        if full:
            log.warning("%s turned away: all workers busy and the queue full", waiting.address[0])
            _answer_now(connection, HTTPStatus.SERVICE_UNAVAILABLE, "server busy, try again\n")
            return
        self._workers.submit(self._serve, connection, waiting.address, bytes(waiting.head))

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for connection, waiting in list(self._waiting.items()):
            if waiting.deadline <= now:
                self._forget(connection)
                connection.close()

    def _serve(self, connection: socket.socket, address, head: bytes) -> None:
        try:
            connection.setblocking(True)
            handler = GitHandler(connection, address, self, head)
            if handler.body_unread:
                _linger(connection)
        except Exception:
            log.exception("error serving %s", address[0])
        finally:
            with self._busy_lock:
                self._busy -= 1
            connection.close()


def _linger(connection: socket.socket) -> None:
    """Half-close, then drain what the client still sends for a short while: closing with
    unread data would reset the connection and could destroy the answer before it is read."""
    try:
        connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            if not connection.recv(CHUNK):
                return
    except OSError:
        pass


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
    log.info(
        "serving %s on http://%s:%d/%s (read user %s, push user %s; %d workers, %d queued, %d connections, "
        "idle %d s, request %d s, body %d bytes)",
        settings.repo_path, settings.bind, server.server_port, settings.repo, settings.read_username,
        settings.push_username, settings.max_workers, settings.max_queued, settings.max_connections,
        settings.idle_timeout, settings.request_timeout, settings.max_body_bytes,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
