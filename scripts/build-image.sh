#!/usr/bin/env bash
# Builds the platform image: images/Dockerfile = the official Airflow image + this repo's
# package (category_pipeline) + plugins/. DAGs are not in the image (git-sync brings them).
#
#   scripts/build-image.sh [TAG] [extra `docker build` arguments...]
#
#   TAG              default airflow-platform:<version in pyproject.toml>
#   AIRFLOW_IMAGE    the base image (default apache/airflow:3.3.2-python3.12); the tests use
#                    airflow-standin:3.3.2 from scripts/make-standin-base.sh
#   DOCKER           the docker client to use (default: the first one that can do BuildKit)
#   IMAGE_DOCKERFILE, IMAGE_CONTEXT   another Dockerfile / context (make-standin-base.sh)
#
# Needs BuildKit (RUN --mount). pip inside the build gets, only for the RUN steps that
# install and never in an image layer or the build history, as BuildKit secrets:
#   cacert   the system CA bundle plus /usr/local/share/ca-certificates/*.crt, when the host
#            has extra CAs (e.g. a TLS-inspecting proxy); without them pip fails on HTTPS
#   pipconf  the host's pip index settings (index-url, extra-index-url, trusted-host,
#            timeout, retries) when it has any; local paths and file:// URLs are dropped,
#            as they mean nothing inside the build
#
# Runs on Linux and macOS; bash 3.2 (macOS /bin/bash) included, where "${a[@]}" of an empty
# array is an unbound-variable error under set -u: hence ${a[@]+"${a[@]}"} below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
TAG=${1:-airflow-platform:${version:-0.1.0}}
[ $# -gt 0 ] && shift
AIRFLOW_IMAGE=${AIRFLOW_IMAGE:-apache/airflow:3.3.2-python3.12}
DOCKERFILE=${IMAGE_DOCKERFILE:-images/Dockerfile}
CONTEXT=${IMAGE_CONTEXT:-.}

# A client whose `docker build` is BuildKit: one with the buildx plugin, or one older than
# 23 (built-in BuildKit under DOCKER_BUILDKIT=1). Docker >= 23 without buildx cannot.
buildkit_client() {
    local c major
    for c in ${DOCKER:-} "$(command -v docker || true)" /usr/bin/docker; do
        if [ -z "$c" ] || [ ! -x "$(command -v "$c" || true)" ]; then continue; fi
        if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return; fi
        major=$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
        if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]; then echo "$c"; return; fi
    done
    return 1
}
docker=$(buildkit_client) || {
    echo "build-image: no docker client with BuildKit (install docker-buildx, or Debian's docker.io: /usr/bin/docker)" >&2
    exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 700 "$tmp"
secrets=()

shopt -s nullglob
extra_cas=(/usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt)
shopt -u nullglob
if [ ${#extra_cas[@]} -gt 0 ]; then
    {
        [ -f /etc/ssl/certs/ca-certificates.crt ] && cat /etc/ssl/certs/ca-certificates.crt
        for crt in "${extra_cas[@]}"; do cat "$crt"; echo; done
    } >"$tmp/cacert.pem"
    secrets+=(--secret "id=cacert,src=$tmp/cacert.pem")
    echo "build-image: CA bundle with ${#extra_cas[@]} extra host CA(s) passed as BuildKit secret 'cacert'"
fi

host_python=$(command -v python3 || command -v python || true)
if [ -n "$host_python" ] && "$host_python" -m pip --version >/dev/null 2>&1; then
    "$host_python" - "$tmp/pip.conf" <<'EOF'
"""Writes the host's pip index settings, usable inside a build, as a pip.conf ([global])."""
import re
import subprocess
import sys

listing = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
).stdout
# Environment (PIP_*) over [install] over [global], as pip itself resolves them.
rank = {":env:": 3, "install": 2, "global": 1}
keys = {"index-url": "index-url", "extra-index-url": "extra-index-url", "trusted-host": "trusted-host",
        "timeout": "timeout", "default-timeout": "timeout", "retries": "retries"}
found = {}
for line in listing.splitlines():
    match = re.match(r"^(:env:|install|global)\.([a-z-]+)='(.*)'$", line)
    if not match or match.group(2) not in keys:
        continue
    section, key, value = match.group(1), keys[match.group(2)], match.group(3)
    if key.endswith("index-url"):  # only what a build can reach: no local paths, no file://
        value = " ".join(u for u in value.split() if re.match(r"^https?://", u))
        if not value:
            continue
    if key not in found or rank[section] > found[key][0]:
        found[key] = (rank[section], value)
if found:
    with open(sys.argv[1], "w") as conf:
        conf.write("[global]\n" + "".join(f"{k} = {v}\n" for k, (_, v) in sorted(found.items())))
    print("build-image: host pip settings (" + ", ".join(sorted(found)) + ") passed as BuildKit secret 'pipconf'")
EOF
    [ -f "$tmp/pip.conf" ] && secrets+=(--secret "id=pipconf,src=$tmp/pip.conf")
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain -- pyproject.toml src plugins images 2>/dev/null)" ]; then
    revision="$revision-dirty"
fi

echo "build-image: $TAG from $AIRFLOW_IMAGE ($DOCKERFILE, context $CONTEXT, client $docker)"
start=$SECONDS
DOCKER_BUILDKIT=1 "$docker" build \
    --file "$DOCKERFILE" \
    --tag "$TAG" \
    --build-arg "AIRFLOW_IMAGE=$AIRFLOW_IMAGE" \
    --build-arg "IMAGE_VERSION=${version:-0.1.0}" \
    --build-arg "IMAGE_REVISION=$revision" \
    ${secrets[@]+"${secrets[@]}"} \
    ${1+"$@"} \
    "$CONTEXT"

read -r id size < <("$docker" image inspect --format '{{.Id}} {{.Size}}' "$TAG")
printf 'build-image: built %s in %ds\n  id   %s\n  size %s bytes (%d MB)\n' \
    "$TAG" $((SECONDS - start)) "$id" "$size" $((size / 1000000))
