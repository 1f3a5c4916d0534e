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
  url="$GIT_URL"; user="${GIT_USERNAME:?GIT_USERNAME is needed with GIT_URL}"; password="${GIT_PASSWORD:?}"
else
  # kubectl decodes (its go-template base64decode): no `base64 -d`, which old macOS reads as --debug.
  secret() { kubectl -n "$namespace" get secret git-credentials -o "go-template={{index .data \"$1\" | base64decode}}"; }
  user="$(secret GITSYNC_USERNAME)"
  password="$(secret GITSYNC_PASSWORD)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  kubectl -n "$namespace" port-forward svc/platform-git "$port:80" >/dev/null 2>&1 &
  forward=$!
  for _ in $(seq 60); do
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    sleep 0.5
  done
  url="http://127.0.0.1:$port/dags.git"
fi

# Credentials travel in a header of this one command, not in a URL or a config file.
# base64 without options, newlines removed: GNU base64 wraps at 76 columns (-w0 is GNU only),
# macOS base64 does not wrap; both give one line this way.
auth="Authorization: Basic $(printf '%s:%s' "$user" "$password" | base64 | tr -d '\n')"
git() { command git -c "http.extraHeader=$auth" -c user.name=dags-push -c user.email=dags-push@localhost "$@"; }

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
