#!/usr/bin/env bash
# Installs the machine-level tools the project needs, on Debian/Ubuntu, only if missing:
#   make, git, PostgreSQL server binaries (the tests start their own throwaway server from
#   them; the Debian cluster is not used), promtool (Debian's prometheus package; its server
#   is not used), a Python >= 3.11 that can create venvs;
#   with --with-docker also a Docker engine and mmdebstrap (the image build test).
# Idempotent and quick when everything is present (no apt-get update then).
# Run as root or with sudo available. .ci/run calls it; developers may too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
have_pg_server() { compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || command -v pg_ctl >/dev/null; }

missing=()
command -v make >/dev/null || installed make || missing+=(make)
command -v git >/dev/null || installed git || missing+=(git)
if [ "${1:-}" = "--with-docker" ]; then
    command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || installed docker.io || missing+=(docker.io)
    command -v mmdebstrap >/dev/null || installed mmdebstrap || missing+=(mmdebstrap)
fi
have_pg_server || installed postgresql || missing+=(postgresql)
# promtool checks the platform chart's alert rules and dashboard (tests/test_monitoring.py).
command -v promtool >/dev/null || installed prometheus || missing+=(prometheus)

if python=$(scripts/find-python.sh 2>/dev/null); then
    # Debian's own Python needs python3.X-venv for ensurepip's wheels; others bundle them.
    case "$python" in
        /usr/bin/*)
            venv_pkg="python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
            installed "$venv_pkg" || missing+=(python3-venv) ;;
    esac
else
    missing+=(python3 python3-venv)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "bootstrap: system packages present (make, git, PostgreSQL server, promtool, Python >= 3.11 with venv${1:+, Docker})"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "bootstrap: missing ${missing[*]} and no apt-get here; install them by hand" >&2
    exit 1
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
"${sudo[@]}" apt-get "${apt[@]}" update -q
"${sudo[@]}" apt-get "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}"
have_pg_server || { echo "bootstrap: PostgreSQL server binaries still missing" >&2; exit 1; }
command -v promtool >/dev/null || { echo "bootstrap: promtool still missing" >&2; exit 1; }
scripts/find-python.sh >/dev/null
