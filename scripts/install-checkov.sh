#!/usr/bin/env bash
# Installs checkov (the Kubernetes manifest scanner that tests/test_checkov.py runs) into its
# own venv, .tools/checkov, and prints the path of its `checkov` binary as the last line.
#
#   scripts/install-checkov.sh
#
# Its own venv because checkov's dependency pins clash with Airflow's: it must never go into
# .venv. Pinned to one version so that a new checkov release (new checks) cannot turn CI red
# on its own; raise CHECKOV_VERSION on purpose and update tests/checkov-skips.yaml with it.
# Idempotent: when the venv already holds this version, it only prints the path.
#   PYTHON        the interpreter for the venv (default: python3 on PATH; needs >= 3.9)
#   CHECKOV_HOME  the venv folder (default .tools/checkov)
# Progress and errors go to stderr; exit 1 when it cannot be installed.
set -euo pipefail

CHECKOV_VERSION="3.3.30"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${CHECKOV_HOME:-$root/.tools/checkov}"
binary="$home/bin/checkov"
python="${PYTHON:-python3}"

installed_version() {
    "$home/bin/python" -c 'from importlib.metadata import version; print(version("checkov"))' 2>/dev/null
}

if [ -x "$binary" ] && [ "$(installed_version)" = "$CHECKOV_VERSION" ]; then
    echo "$binary"
    exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-checkov: no '$python' on PATH (set PYTHON to a Python >= 3.9)" >&2
    exit 1
fi
if ! "$python" -c 'import sys, venv; assert sys.version_info >= (3, 9)' 2>/dev/null; then
    echo "install-checkov: $python is not a Python >= 3.9 with venv" >&2
    exit 1
fi

echo "install-checkov: installing checkov $CHECKOV_VERSION into $home" >&2
rm -rf "$home"
"$python" -m venv "$home"
if ! "$home/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2; then
    echo "install-checkov: pip install checkov==$CHECKOV_VERSION failed" >&2
    rm -rf "$home"
    exit 1
fi
if [ "$(installed_version)" != "$CHECKOV_VERSION" ] || [ ! -x "$binary" ]; then
    echo "install-checkov: $binary is missing or not version $CHECKOV_VERSION after the install" >&2
    exit 1
fi
echo "$binary"
