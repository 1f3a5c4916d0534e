#!/usr/bin/env bash
# Pushes this working tree's dags/ to the in-cluster git server (charts/airflow-platform),
# where git-sync picks it up within seconds. The pushed repository holds dags/ only, at
# the subPath values.yaml gives git-sync; each push is one commit on top of the last.
#   [DAGS_DIR=folder] scripts/dags-push.sh [--if-empty] [message]
# --if-empty: push only when the server has no commit yet (make deploy seeds it this way).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
namespace="${NAMESPACE:-airflow}"
if_empty=false
if [ "${1:-}" = "--if-empty" ]; then if_empty=true; shift; fi
message="${1:-dags from $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo working tree) at $(date -u +%FT%TZ)}"
work="$(mktemp -d)"
forward=""
trap '[ -z "$forward" ] || kill "$forward" 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -n "${GIT_URL:-}" ]; then
  # A git server reachable directly (tests, or a port-forward of your own).
  url="$GIT_URL"; user="${GIT_USERNAME:?GIT_USERNAME is needed with GIT_URL}"; password="${GIT_PASSWORD:?GIT_PASSWORD is needed with GIT_URL}"
else
  # The push account: Secret git-push-credentials (git-credentials, git-sync's, may only read).
  # kubectl decodes (its go-template base64decode): no `base64 -d`, which old macOS reads as --debug.
  secret() { kubectl -n "$namespace" get secret git-push-credentials -o "go-template={{index .data \"$1\" | base64decode}}"; }
  user="$(secret username)"
  password="$(secret password)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  kubectl -n "$namespace" port-forward svc/platform-git "$port:80" >/dev/null 2>&1 &
  forward=$!
  for _ in $(seq 60); do
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    sleep 0.5
  done
  url="http://127.0.0.1:$port/dags.git"
fi

# The credentials travel in a header that git reads from its environment (GIT_CONFIG_COUNT,
# git >= 2.31), never in a command's arguments (which every user of the machine can read with
# ps) nor in a URL or a config file. printf is a shell builtin: no process sees them either.
# base64 without options, newlines removed: GNU base64 wraps at 76 columns (-w0 is GNU only),
# macOS base64 does not wrap; both give one line this way.
version="$(command git version | sed -n 's/^git version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
read -r major minor <<<"${version:-0 0}"
if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 31 ]; }; then
  echo "dags-push.sh needs git >= 2.31 (configuration through the environment); found: $(command git version)" >&2
  exit 1
fi
auth="Authorization: Basic $(printf '%s:%s' "$user" "$password" | base64 | tr -d '\n')"
unset password
export GIT_CONFIG_COUNT=4 \
  GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0="$auth" \
  GIT_CONFIG_KEY_1=credential.helper GIT_CONFIG_VALUE_1="" \
  GIT_CONFIG_KEY_2=user.name GIT_CONFIG_VALUE_2=dags-push \
  GIT_CONFIG_KEY_3=user.email GIT_CONFIG_VALUE_3=dags-push@localhost
# No prompt and no keychain when the server refuses the header: fail at once.
export GIT_TERMINAL_PROMPT=0
unset auth

if git ls-remote --exit-code "$url" refs/heads/main >/dev/null 2>&1; then
  if $if_empty; then echo "git server already has DAGs; not pushing (make dags-push does)"; exit 0; fi
  git clone --quiet --depth 1 --branch main "$url" "$work/repo"
else
  git init --quiet --initial-branch main "$work/repo"
fi
rm -rf "$work/repo/dags"
mkdir -p "$work/repo/dags"
cp -R "${DAGS_DIR:-$root/dags}/." "$work/repo/dags/"
find "$work/repo/dags" -name __pycache__ -prune -exec rm -rf {} +
git -C "$work/repo" add --all
if git -C "$work/repo" diff --cached --quiet; then
  echo "dags/ unchanged; nothing to push"
  exit 0
fi
git -C "$work/repo" commit --quiet -m "$message"
git -C "$work/repo" push --quiet "$url" HEAD:main
echo "pushed $(git -C "$work/repo" rev-parse --short HEAD): $message"
