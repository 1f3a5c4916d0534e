#!/usr/bin/env bash
# Prints the absolute path of a Python >= 3.11 that can create venvs (has venv and
# ensurepip), or exits 1. Tries $PYTHON, then python3 on PATH, python3.13/3.12/3.11,
# then pyenv's versions. Used by scripts/bootstrap.sh and .ci/run.
set -euo pipefail

check='import sys, venv, ensurepip; assert sys.version_info >= (3, 11); print(sys.executable)'

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3 python3.13 python3.12 python3.11)
for version_dir in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.* 2>/dev/null | sort -rV); do
    candidates+=("$version_dir/bin/python3")
done

for candidate in "${candidates[@]}"; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if executable=$("$candidate" -c "$check" 2>/dev/null) && [ -n "$executable" ]; then
        echo "$executable"
        exit 0
    fi
done
echo "find-python: no Python >= 3.11 with venv support found" >&2
exit 1
