"""The scripts run on Linux and macOS, without internet here:

- scripts/install-tools.sh picks helm, kubectl and kind for the OS and architecture: its plan
  (--print-plan with TOOLS_OS/TOOLS_ARCH) for linux/darwin x amd64/arm64, and real installs
  from fake release downloads (a stand-in `curl` on PATH) checked against their sha256;
- no GNU-only (or bash >= 4 only: macOS has bash 3.2) constructs in the portable scripts and
  the Makefile, by a scanner proven on a known-bad sample for every pattern;
- every script parses (`bash -n`).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
INSTALL = SCRIPTS / "install-tools.sh"
MAKEFILE = REPO / "Makefile"
CI_RUN = REPO / ".ci" / "run"
# Linux (Debian) only by purpose: they apt-get install / build a Debian image / are CI.
LINUX_ONLY = {"bootstrap.sh", "make-standin-base.sh"}
PORTABLE_SCRIPTS = sorted(p for p in SCRIPTS.glob("*.sh") if p.name not in LINUX_ONLY)
ALL_SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh")) + [CI_RUN]

TOOLS = ("helm", "kubectl", "kind")


def _pin(name: str) -> str:
    match = re.search(rf'^{name}="([^"]+)"', INSTALL.read_text(), re.M)
    assert match, f"{name} is not pinned at the top of {INSTALL.name}"
    return match.group(1)


VERSIONS = {"helm": _pin("HELM_VERSION"), "kubectl": _pin("KUBECTL_VERSION"), "kind": _pin("KIND_VERSION")}
LAYER_PACKAGE = _pin("LAYER_PACKAGE")


def release_url(tool: str, os_: str, arch: str) -> str:
    return {
        "helm": f"https://get.helm.sh/helm-{VERSIONS['helm']}-{os_}-{arch}.tar.gz",
        "kubectl": f"https://dl.k8s.io/release/{VERSIONS['kubectl']}/bin/{os_}/{arch}/kubectl",
        "kind": f"https://kind.sigs.k8s.io/dl/{VERSIONS['kind']}/kind-{os_}-{arch}",
    }[tool]


def checksum_url(tool: str, os_: str, arch: str) -> str:
    return release_url(tool, os_, arch) + (".sha256" if tool == "kubectl" else ".sha256sum")


def _host() -> tuple[str, str] | None:
    os_ = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system())
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    return (os_, arch) if os_ and arch else None


HOST = _host()
# A target that is not this machine: its installs never look at PATH nor run the binaries.
OTHER = next(t for t in [("darwin", "arm64"), ("linux", "arm64")] if t != HOST)
UNAME = {"linux": "Linux", "darwin": "Darwin", "amd64": "x86_64", "arm64": "aarch64"}

# A stand-in curl: serves https://<path> from $FAKE_RELEASES/<path>, logs each call's arguments.
FAKE_CURL = r"""#!/usr/bin/env bash
out=""; url=""
printf '%s\n' "$*" >>"$FAKE_CURL_LOG"
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    --proto|--connect-timeout|--max-time|--retry|--retry-max-time) shift 2 ;;
    https://*) url="$1"; shift ;;
    *) shift ;;
  esac
done
file="$FAKE_RELEASES/${url#https://}"
if [ ! -f "$file" ]; then
  host="${url#https://}"; echo "curl: (6) Could not resolve host: ${host%%/*}" >&2; exit 6
fi
if [ -n "$out" ]; then cp "$file" "$out"; else cat "$file"; fi
"""


@dataclass
class Releases:
    """Fake release downloads (and their published checksums) for one OS/arch."""

    root: Path
    log: Path
    fakebin: Path
    os: str
    arch: str

    def binary(self, tool: str) -> bytes:
        return f"#!/bin/sh\necho fake {tool} {VERSIONS[tool]} {self.os}-{self.arch}\n".encode()

    def _put(self, url: str, data: bytes) -> Path:
        path = self.root / url.removeprefix("https://")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def publish(self, tool: str, *, checksum: str | None = None) -> None:
        url = release_url(tool, self.os, self.arch)
        if tool == "helm":
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for name, data in [(f"{self.os}-{self.arch}/helm", self.binary("helm")),
                                   (f"{self.os}-{self.arch}/LICENSE", b"license\n")]:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o755
                    tar.addfile(info, io.BytesIO(data))
            payload = buffer.getvalue()
        else:
            payload = self.binary(tool)
        self._put(url, payload)
        digest = checksum or hashlib.sha256(payload).hexdigest()
        # helm and kind: "<sha256>  <file>"; kubectl: the bare sha256
        line = digest if tool == "kubectl" else f"{digest}  {url.rsplit('/', 1)[1]}"
        self._put(checksum_url(tool, self.os, self.arch), f"{line}\n".encode())

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def releases(tmp_path) -> Releases:
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    curl = fakebin / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(0o755)
    return Releases(tmp_path / "releases", tmp_path / "curl.log", fakebin, *OTHER)


def run_install(*args: str, env: dict[str, str], script: Path = INSTALL) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _env(releases: Releases, tools_bin: Path, *, target: tuple[str, str] | None = OTHER, path: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLS_")}
    env.update(FAKE_RELEASES=str(releases.root), FAKE_CURL_LOG=str(releases.log), TOOLS_BIN=str(tools_bin),
               PATH=f"{releases.fakebin}{os.pathsep}{path if path is not None else os.environ['PATH']}")
    if target:
        env.update(TOOLS_OS=UNAME[target[0]], TOOLS_ARCH=UNAME[target[1]])
    return env


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]


# -- the plan -------------------------------------------------------------------------------

TARGETS = [  # (TOOLS_OS, TOOLS_ARCH) as uname prints them -> (os, arch) of the release URLs
    ("Linux", "x86_64", "linux", "amd64"),
    ("Linux", "aarch64", "linux", "arm64"),
    ("Darwin", "arm64", "darwin", "arm64"),
    ("Darwin", "x86_64", "darwin", "amd64"),
]


def _plan(releases: Releases, tools_bin: Path, tools_os: str, tools_arch: str, *args: str):
    env = _env(releases, tools_bin, target=None)
    env.update(TOOLS_OS=tools_os, TOOLS_ARCH=tools_arch)
    result = run_install("--print-plan", *args, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    entries: dict[str, list[tuple[str, str]]] = {tool: [] for tool in TOOLS}
    for line in lines[:-1]:
        if line.startswith("#"):
            continue
        tool, kind, rest = line.split(" ", 2)
        entries[tool].append((kind, rest))
    return lines, entries


@pytest.mark.parametrize("tools_os, tools_arch, os_, arch", TARGETS, ids=[f"{t[2]}-{t[3]}" for t in TARGETS])
def test_plan_names_the_binaries_for_the_os_and_arch(releases, tmp_path, tools_os, tools_arch, os_, arch):
    tools_bin = tmp_path / "bin"
    lines, entries = _plan(releases, tools_bin, tools_os, tools_arch, "--with-kind")
    assert lines[-1] == str(tools_bin), "the last line of stdout is the folder to put on PATH"
    assert lines[0].startswith(f"# target {os_}/{arch} ")
    cross = (os_, arch) != HOST
    for tool in TOOLS:
        sources = [(kind, rest) for kind, rest in entries[tool] if kind != "existing"]
        kinds = [kind for kind, _ in sources]
        if tool == "kind":
            assert kinds[0] == "url" and set(kinds) <= {"url", "go"}
            if cross:
                assert "go" not in kinds, "go install builds for this machine only"
        elif (os_, arch) == ("linux", "amd64"):
            assert kinds == ["layer", "url"], "the PyPI layer first where its linux/amd64 binaries fit"
        else:
            assert kinds == ["url"], f"the layer's linux/amd64 {tool} is no use on {os_}/{arch}"
        (url_line,) = [rest for kind, rest in sources if kind == "url"]
        assert url_line == f"{release_url(tool, os_, arch)} sha256 {checksum_url(tool, os_, arch)}"
        for kind, rest in sources:
            if kind == "layer":
                assert LAYER_PACKAGE in rest and "linux/amd64" in rest and f"{tool}/{tool}" in rest
        if cross:  # nothing of this machine's PATH applies to another machine
            assert not [kind for kind, _ in entries[tool] if kind == "existing"]
    # the other OS and architecture appear nowhere
    other_os = {"linux": "darwin", "darwin": "linux"}[os_]
    other_arch = {"amd64": "arm64", "arm64": "amd64"}[arch]
    urls = " ".join(rest for tool in TOOLS for kind, rest in entries[tool] if kind == "url")
    assert other_os not in urls and other_arch not in urls
    assert releases.calls() == [], "--print-plan downloads nothing"
    assert not tools_bin.exists(), "--print-plan creates nothing"


def test_plan_spellings_of_os_and_arch_are_equivalent(releases, tmp_path):
    _, uname = _plan(releases, tmp_path / "bin", "Darwin", "aarch64")
    _, lower = _plan(releases, tmp_path / "bin", "darwin", "arm64")
    assert uname == lower


def test_kind_is_marked_optional_without_with_kind(releases, tmp_path):
    lines, _ = _plan(releases, tmp_path / "bin", "Linux", "aarch64")
    assert all(line.endswith("(only with --with-kind)") for line in lines if line.startswith("kind "))


@pytest.mark.parametrize("args", [["--print-plan"], ["--with-kind"]], ids=["plan", "install"])
@pytest.mark.parametrize(
    "override, value, what",
    [("TOOLS_OS", "FreeBSD", "OS"), ("TOOLS_OS", "Windows_NT", "OS"),
     ("TOOLS_ARCH", "armv7l", "architecture"), ("TOOLS_ARCH", "i686", "architecture"),
     ("TOOLS_ARCH", "riscv64", "architecture")],
)
def test_unknown_os_or_arch_fails_with_one_line(releases, tmp_path, args, override, value, what):
    env = _env(releases, tmp_path / "bin", target=None)
    env[override] = value
    result = run_install(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    line = _one_line(result.stderr)
    assert f"unsupported {what} '{value}'" in line and override in line
    assert releases.calls() == [] and not (tmp_path / "bin").exists()


def test_unknown_argument_is_a_usage_error(releases, tmp_path):
    result = run_install("--with-knd", env=_env(releases, tmp_path / "bin"))
    assert result.returncode == 2 and "--with-knd" in _one_line(result.stderr)


def test_installing_for_another_machine_needs_its_own_folder(releases, tmp_path):
    env = _env(releases, tmp_path / "bin")
    del env["TOOLS_BIN"]
    result = run_install(env=env)
    assert result.returncode == 2 and "TOOLS_BIN" in _one_line(result.stderr)
    assert releases.calls() == []


# -- installing from (fake) release downloads -----------------------------------------------

def _assert_bounded(calls: list[str]) -> None:
    for call in calls:
        assert "--max-time" in call and "--connect-timeout" in call, f"unbounded curl: {call}"


def test_installs_verified_release_binaries_for_another_machine(releases, tmp_path):
    for tool in TOOLS:
        releases.publish(tool)
    tools_bin = tmp_path / "bin"
    result = run_install("--with-kind", env=_env(releases, tools_bin))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(tools_bin)
    for tool in TOOLS:
        installed = tools_bin / tool
        assert installed.read_bytes() == releases.binary(tool)
        assert installed.stat().st_mode & stat.S_IXUSR
        assert f"{tool} {VERSIONS[tool]} ({releases.os}/{releases.arch}) from the release download" in result.stderr
    assert sorted(p.name for p in tools_bin.iterdir()) == sorted(TOOLS), "no leftovers"
    calls = releases.calls()
    _assert_bounded(calls)
    for tool in TOOLS:  # the published checksum first, then the download
        urls = [next(w for w in call.split() if w.startswith("https://")) for call in calls]
        assert urls.index(checksum_url(tool, releases.os, releases.arch)) < urls.index(
            release_url(tool, releases.os, releases.arch))
    assert all("--proto =https" in call for call in calls)

    # a second run finds them in TOOLS_BIN and downloads nothing
    releases.log.unlink()
    again = run_install("--with-kind", env=_env(releases, tools_bin))
    assert again.returncode == 0 and again.stderr == "" and releases.calls() == []


def test_a_checksum_mismatch_is_refused_in_one_line(releases, tmp_path):
    releases.publish("helm")
    releases.publish("kubectl", checksum="0" * 64)
    tools_bin = tmp_path / "bin"
    result = run_install(env=_env(releases, tools_bin))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == str(tools_bin)
    failures = [line for line in result.stderr.splitlines() if "could not be installed" in line]
    assert len(failures) == 1
    assert failures[0].startswith(f"install-tools: kubectl {VERSIONS['kubectl']} ") and "sha256 mismatch" in failures[0]
    assert (tools_bin / "helm").exists() and not (tools_bin / "kubectl").exists()
    assert sorted(p.name for p in tools_bin.iterdir()) == ["helm"], "the refused download is not left behind"


def test_kind_only_with_with_kind_and_a_missing_kind_fails_clearly(releases, tmp_path):
    releases.publish("helm")
    releases.publish("kubectl")
    tools_bin = tmp_path / "bin"
    without = run_install(env=_env(releases, tools_bin))
    assert without.returncode == 0, without.stderr
    assert not any("kind" in call for call in releases.calls()), "kind is not fetched without --with-kind"

    result = run_install("--with-kind", env=_env(releases, tools_bin))
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.startswith(f"install-tools: kind {VERSIONS['kind']} ({releases.os}/{releases.arch}) could not be installed: ")
    assert checksum_url("kind", releases.os, releases.arch) in line and "Could not resolve host" in line
    assert result.stdout.splitlines()[-1] == str(tools_bin)


def _minimal_path(tmp_path: Path) -> str:
    """A PATH with the commands the script needs and nothing else: no python (so no PyPI
    layer), no helm, kubectl, kind or go."""
    folder = tmp_path / "minpath"
    folder.mkdir()
    for command in ["bash", "uname", "dirname", "mkdir", "mktemp", "rm", "chmod", "mv", "cp", "cat", "awk",
                    "tr", "tail", "grep", "tar", "gzip", "shasum", "sha256sum", "perl"]:
        found = shutil.which(command)
        if found:
            (folder / command).symlink_to(found)
    return str(folder)


@pytest.mark.skipif(HOST is None, reason="this machine is neither Linux nor macOS on amd64/arm64")
def test_this_machine_falls_back_to_downloads_and_replaces_a_binary_that_does_not_run(tmp_path):
    """Native: no python with pip here, so on linux/amd64 the PyPI layer fails and the release
    download takes over; a helm in the folder that does not run (another OS's) is replaced."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    script = root / "scripts" / "install-tools.sh"
    shutil.copy2(INSTALL, script)
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    (fakebin / "curl").write_text(FAKE_CURL)
    (fakebin / "curl").chmod(0o755)
    releases = Releases(tmp_path / "releases", tmp_path / "curl.log", fakebin, *HOST)
    for tool in TOOLS:
        releases.publish(tool)
    tools_bin = tmp_path / "bin"
    tools_bin.mkdir()
    (tools_bin / "helm").write_text("#!/bin/sh\nexit 126\n")
    (tools_bin / "helm").chmod(0o755)

    env = _env(releases, tools_bin, target=None, path=_minimal_path(tmp_path))
    result = run_install("--with-kind", env=env, script=script)
    assert result.returncode == 0, result.stderr
    assert "does not run on this machine" in result.stderr
    for tool in TOOLS:
        assert (tools_bin / tool).read_bytes() == releases.binary(tool)
        assert f"{tool} {VERSIONS[tool]} ({HOST[0]}/{HOST[1]}) from the release download" in result.stderr
    _assert_bounded(releases.calls())


def test_pins_match_what_the_rest_of_the_repo_expects():
    assert VERSIONS["helm"].startswith("v4."), "helm 4, as in the PyPI layer"
    assert VERSIONS["kind"] == "v0.30.0"
    assert "kindest/node:v1.34.0" in INSTALL.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", _pin("LAYER_SHA256"))


# -- GNU-only constructs ----------------------------------------------------------------------

# A command word: at the start, after a separator, `$(`, a keyword, or env assignments.
CMD = r"(?:^|[;&|(`{!]|\$\(|\b(?:then|do|else|exec|command|xargs|sudo)\s)\s*@?(?:\w+=\S*\s+)*"
OPTS = r"(?:\s+-\S+)*?\s+"  # the command's own options, before the one in question
ARGS = r"[^|;&\n]*?\s"  # anything up to the option, within the same command


@dataclass(frozen=True)
class Pattern:
    name: str
    regex: str
    bad: str  # a known-bad sample the scanner must catch
    good: str  # the portable spelling, which it must not
    note: bool = False  # portable enough (see why); reported, not an error

    def search(self, line: str) -> bool:
        return re.search(self.regex, line) is not None


PATTERNS = [
    Pattern("base64 -w (GNU only; use `base64 | tr -d '\\n'`)", CMD + r"base64" + ARGS + r"(?:-w\s*\d+|--wrap\b)",
            "auth=$(printf '%s:%s' u p | base64 -w0)", "auth=$(printf '%s:%s' u p | base64 | tr -d '\\n')"),
    Pattern("base64 -d/-D (-d is --debug on old macOS, -D is macOS only; use --decode)",
            CMD + r"base64" + ARGS + r"-[a-zA-Z]*[dD]\b", "kubectl get secret s | base64 -d", "x | base64 --decode"),
    Pattern("sed -i without an attached suffix (GNU: -i; BSD: -i ''; both: -i.bak)",
            CMD + r"sed" + ARGS + r"(?:-[a-zA-Z]*i(?=\s|$)|--in-place(?=\s|$))",
            "sed -i 's/a/b/' file", "sed -i.bak 's/a/b/' file && rm file.bak"),
    Pattern("readlink -f (GNU; macOS < 12.3 lacks it)", CMD + r"readlink" + OPTS + r"(?:-[a-zA-Z]*[fem]\b|--canonicalize)",
            'root=$(readlink -f "$0")', 'root="$(cd "$(dirname "$0")" && pwd)"'),
    Pattern("date -d (GNU; BSD date -j -f)", CMD + r"date" + ARGS + r"(?:-d\b|--date\b)",
            "date -d yesterday +%F", "date -u +%FT%TZ"),
    Pattern("grep -P (GNU only)", CMD + r"grep" + ARGS + r"(?:-[a-zA-Z]*P|--perl-regexp)",
            "grep -oP '\\d+' f", "grep -oE '[0-9]+' f"),
    Pattern("stat -c (GNU; BSD stat -f)", CMD + r"stat" + OPTS + r"(?:-[a-zA-Z]*c|--format|--printf)",
            "size=$(stat -c %s f)", "size=$(wc -c < f)"),
    Pattern("xargs -r (GNU; BSD xargs does not run on empty input anyway)",
            CMD + r"xargs" + OPTS + r"(?:-[a-zA-Z0-9]*r(?=\s|$)|--no-run-if-empty)",
            "find . -name x | xargs -r rm", "find . -name x -exec rm {} +"),
    Pattern("cp/mv -t (GNU only)", CMD + r"(?:cp|mv)" + OPTS + r"(?:-[a-zA-Z]*t(?=\s|$)|--target-directory)",
            'cp -t "$dest" a b', 'cp a b "$dest"/'),
    Pattern("mktemp with GNU-only options (-p, -t, --tmpdir, --suffix)",
            CMD + r"mktemp" + OPTS + r"(?:-[a-zA-Z]*[pt](?=\s|$)|--(?:tmpdir|suffix|directory|quiet|dry-run)\b)",
            "work=$(mktemp -d -p /tmp)", 'work=$(mktemp -d "${TMPDIR:-/tmp}/x.XXXXXX")'),
    Pattern("find -printf (GNU only)", CMD + r"find" + ARGS + r"-f?printf\b",
            "find . -type f -printf '%p\\n'", "find . -type f -print"),
    Pattern("head -c/-n with a negative count (GNU only)", CMD + r"head" + ARGS + r"(?:-[cn]\s*-\d|--(?:bytes|lines)=-)",
            "head -c -1 f", "head -c 1 f"),
    Pattern("echo -e (not in sh/dash; use printf)", CMD + r"echo\s+-[a-zA-Z]*e[a-zA-Z]*(?=\s|$)",
            "echo -e 'a\\tb'", "printf 'a\\tb\\n'"),
    Pattern("timeout (GNU coreutils; not on macOS)", CMD + r"timeout\s+[-\d]",
            "timeout 10 curl -s x", "curl --max-time 10 -s x"),
    Pattern("bash >= 4 only (macOS /bin/bash is 3.2): declare/local -A/-n, mapfile, readarray, coproc",
            CMD + r"(?:(?:declare|local|typeset)\s+-[a-zA-Z]*[An]\b|mapfile\b|readarray\b|coproc\b|wait\s+-n\b)",
            "declare -A seen=()", "seen=''"),
    Pattern("bash >= 4 only: ${x,,} ${x^^} case changes, ${a[-1]}, &>>, |&, [[ -v ]]",
            r"\$\{[A-Za-z_]\w*(?:\[[^]]*\])?(?:,|\^)|\$\{[A-Za-z_]\w*\[-\d+\]\}|&>>|\|&|\[\[\s+-v\s",
            'os="${raw,,}"', "os=\"$(printf '%s' \"$raw\" | tr '[:upper:]' '[:lower:]')\""),
    Pattern("sort -V (GNU; BSD sort on macOS >= 13 has it, older macOS not)",
            CMD + r"sort" + ARGS + r"(?:-[a-zA-Z]*V|--version-sort)",
            "ls | sort -rV", "ls | sort -t. -k1,1n -k2,2n", note=True),
]
# Notes accepted where they are, with the reason.
ACKNOWLEDGED_NOTES = {
    ("find-python.sh", "sort -V"): "orders pyenv versions only; without -V those candidates are skipped, PATH ones remain",
}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")


def shell_lines(text: str):
    """(line number, line) of shell code: no comment lines, no here-document bodies."""
    terminator = None
    for number, line in enumerate(text.splitlines(), 1):
        if terminator is not None:
            if line.strip() == terminator:
                terminator = None
            continue
        if line.lstrip().startswith("#"):
            continue
        heredoc = HEREDOC.search(line)
        if heredoc:
            terminator = heredoc.group(2)
        yield number, line


def makefile_lines(text: str):
    """(line number, line) of the Makefile as the shell sees it: $$ is $, no comments or help."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith("#") or stripped.startswith("@#"):
            continue
        if not line.startswith("\t"):
            line = re.sub(r"\s##\s.*$", "", line)
        yield number, line.replace("$$", "$")


def scan(path: Path) -> list[tuple[str, int, Pattern, str]]:
    lines = makefile_lines(path.read_text()) if path.name == "Makefile" else shell_lines(path.read_text())
    return [(path.name, number, pattern, line.strip())
            for number, line in lines for pattern in PATTERNS if pattern.search(line)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.name.split(" (")[0] for p in PATTERNS])
def test_scanner_catches_the_known_bad_sample_and_passes_the_portable_one(pattern):
    assert pattern.search(pattern.bad), f"{pattern.name}: misses {pattern.bad!r}"
    assert not pattern.search(pattern.good), f"{pattern.name}: flags the portable {pattern.good!r}"
    assert not any(p.search(pattern.good) for p in PATTERNS if not p.note), pattern.good


def test_scanner_skips_comments_and_here_documents(tmp_path):
    sample = tmp_path / "sample.sh"
    sample.write_text("# base64 -w0 in a comment\npython3 - <<'PY'\nprint('sed -i x')\nPY\nsed -i 's/a/b/' f\n")
    assert [(number, pattern.name.split(" ")[0]) for _, number, pattern, _ in scan(sample)] == [(5, "sed")]


def test_scanner_reads_makefile_recipes(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text("ui: ## show the password (base64 -d is only help text)\n"
                        "\t@echo $$(kubectl get secret s -o jsonpath='{.data.p}' | base64 -d)\n")
    assert [number for _, number, _, _ in scan(makefile)] == [2]


@pytest.mark.parametrize("path", PORTABLE_SCRIPTS + [MAKEFILE], ids=lambda p: p.name)
def test_portable_scripts_and_makefile_have_no_gnu_only_constructs(path):
    findings = scan(path)
    errors = [f"{name}:{number}: {pattern.name}: {line}" for name, number, pattern, line in findings if not pattern.note]
    assert not errors, "\n".join(errors)
    unexplained = [f"{name}:{number}: {pattern.name}: {line}" for name, number, pattern, line in findings
                   if pattern.note and (name, pattern.name.split(" (")[0]) not in ACKNOWLEDGED_NOTES]
    assert not unexplained, "\n".join(unexplained)


def test_linux_only_scripts_say_so():
    for name in LINUX_ONLY:
        head = (SCRIPTS / name).read_text().splitlines()[:8]
        assert any(re.search(r"Debian|Linux", line) for line in head), f"{name}: say it is Linux-only at the top"


@pytest.mark.parametrize("path", PORTABLE_SCRIPTS, ids=lambda p: p.name)
def test_portable_scripts_find_bash_on_path(path):
    """#!/usr/bin/env bash: on macOS bash may be /bin/bash (3.2) or Homebrew's."""
    assert path.read_text().startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("path", PORTABLE_SCRIPTS, ids=lambda p: p.name)
def test_every_curl_is_bounded_in_time(path):
    for number, line in shell_lines(path.read_text()):
        if re.search(CMD + r"curl\s", line):
            assert re.search(r"--max-time|\s-m\s", line), f"{path.name}:{number}: curl without --max-time: {line}"


@pytest.mark.parametrize("path", ALL_SHELL_SCRIPTS, ids=lambda p: p.name)
def test_every_script_parses(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
