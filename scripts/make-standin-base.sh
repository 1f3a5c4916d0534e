#!/usr/bin/env bash
# Linux only (mmdebstrap, docker import): builds a Debian image; not meant for macOS.
# Builds `airflow-standin:3.3.2`: a stand-in for the official apache/airflow:3.3.2 image, for
# building and testing images/Dockerfile where no container registry can be reached. Needs
# only a Debian mirror and a Python package index (both through the host's usual settings).
#
#   scripts/make-standin-base.sh [--force]     (skips when the image exists, unless --force)
#
# Same layout as the official image: user airflow (uid 50000, gid 0, home /home/airflow);
# Airflow and its providers in a virtualenv at /home/airflow/.local (VIRTUAL_ENV, first on
# PATH; pip installs there as the airflow user); AIRFLOW_HOME=/opt/airflow owned by 50000
# with empty dags/ and logs/; WORKDIR /opt/airflow; USER 50000; dumb-init + /entrypoint
# (`bash`/`python` run as given, anything else is an `airflow` subcommand).
# Differences: Debian bookworm's Python 3.11 (the official tag has 3.12), and only Airflow
# with the providers this project uses (plus numpy, from the official image's `pandas`
# extra), not the official image's long list of extras.
#
# Two steps: a Debian bookworm minbase root filesystem with python3, venv, git, CA
# certificates, dumb-init (mmdebstrap | docker import -> airflow-standin-rootfs:bookworm),
# then scripts/build-image.sh with a generated Dockerfile that pip-installs Airflow, pinned
# by requirements.lock (taken as constraints), through the same CA/pip secrets.
#
# Env: STANDIN_IMAGE (default airflow-standin:3.3.2); DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR
# (default: the host's bookworm / bookworm-security mirrors from its APT sources, else
# deb.debian.org).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

IMAGE=${STANDIN_IMAGE:-airflow-standin:3.3.2}
ROOTFS_IMAGE=${IMAGE%%:*}-rootfs:bookworm
AIRFLOW_VERSION=3.3.2
PROVIDERS=(
    apache-airflow-providers-cncf-kubernetes==10.25.0
    apache-airflow-providers-standard==1.21.0
    apache-airflow-providers-postgres==7.1.1
    # Remote task logs in S3 (the official image ships it, as its `amazon` extra).
    apache-airflow-providers-amazon==9.39.0
)
# The official image also ships its extras' packages (AIRFLOW_EXTRAS of its Dockerfile);
# numpy, of its `pandas` extra, is one the platform image uses from its base.
OFFICIAL_EXTRAS_USED=(numpy)
PIP_VERSION=26.1.2   # what the official 3.3.x Dockerfile installs (AIRFLOW_PIP_VERSION)
PACKAGES=ca-certificates,python3,python3-venv,git,dumb-init,netbase,tzdata

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { echo "make-standin-base: $*"; }
docker=$(command -v docker || echo /usr/bin/docker)

# One build at a time (test sessions may run side by side): the others wait, then find it.
if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/make-standin-base.lock"
    flock 9
fi
# What the stand-in is made from: a change to this script or to the pins rebuilds it.
inputs=$(cat "$0" requirements.lock 2>/dev/null | sha256sum | cut -c1-16)
built_from=$("$docker" image inspect --format '{{ index .Config.Labels "org.airflow-platform.standin-inputs" }}' "$IMAGE" 2>/dev/null || true)
if [ $force -eq 0 ] && [ "$built_from" = "$inputs" ]; then
    log "$IMAGE exists, built from these inputs; nothing to do (--force rebuilds it)"
    exit 0
fi
start=$SECONDS
# With --force, the images replaced; removed at the end unless something still builds on them.
old_ids=""
if [ $force -eq 1 ]; then
    old_ids=$("$docker" image inspect --format '{{.Id}}' "$IMAGE" "$ROOTFS_IMAGE" 2>/dev/null || true)
fi

# The host's mirror of an APT suite, from one-line (.list) or deb822 (.sources) sources.
host_mirror() {
    local suite=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '$1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /:\/\//) {
                 if ($(i + 1) == suite) print $i; break } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
             function flush() { if ((" " suites " ") ~ (" " suite " ") && uris != "") print uris; uris = suites = "" }
             /^[ \t]*$/ { flush(); next }
             tolower($1) == "uris:" { uris = $2 }
             tolower($1) == "suites:" { $1 = ""; suites = $0 }
             END { flush() }' "$f"
    done
}
mirror=${DEBIAN_MIRROR:-$(host_mirror bookworm | grep -E '^https?://' | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(host_mirror bookworm-security | grep -E '^https?://' | head -n1 || true)}
security=${security:-http://deb.debian.org/debian-security}

if ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends mmdebstrap >/dev/null \
            || { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null \
                 && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends mmdebstrap >/dev/null; }
    else
        echo "make-standin-base: mmdebstrap is needed (apt-get install mmdebstrap, as root)" >&2
        exit 3
    fi
fi

# 1) Root filesystem. Docs, man pages and locales left out as in slim images; no apt lists.
if [ $force -eq 1 ] || ! "$docker" image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
    log "root filesystem: Debian bookworm minbase + ${PACKAGES//,/ } from $mirror"
    mmdebstrap --variant=minbase --quiet \
        --include="$PACKAGES" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm - \
        "deb $mirror bookworm main" \
        "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" |
        "$docker" import --message "Debian bookworm minbase for $IMAGE (mmdebstrap)" \
            --change 'CMD ["/bin/bash"]' - "$ROOTFS_IMAGE" >/dev/null
    log "root filesystem $ROOTFS_IMAGE after $((SECONDS - start))s"
fi

# 2) Airflow on it. Exact versions: requirements.lock, else the dev venv's freeze.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [ -f requirements.lock ]; then
    cp requirements.lock "$ctx/constraints.txt"
elif [ -x .venv/bin/python ]; then
    log "no requirements.lock: pins from .venv (pip freeze --exclude-editable)"
    .venv/bin/python -m pip freeze --exclude-editable >"$ctx/constraints.txt"
else
    echo "make-standin-base: neither requirements.lock nor .venv to pin the versions by" >&2
    exit 1
fi

cat >"$ctx/entrypoint" <<'EOF'
#!/usr/bin/env bash
# Stand-in of the official image's /entrypoint (no DB wait, no user creation):
# `bash ...`/`python ...` run as given; anything else is an airflow subcommand.
set -euo pipefail
case "${1:-}" in
    bash | sh | python | python3) exec "$@" ;;
    airflow) shift ;;
esac
exec airflow "$@"
EOF
chmod 0755 "$ctx/entrypoint"

cat >"$ctx/Dockerfile" <<EOF
# Generated by scripts/make-standin-base.sh: stand-in for apache/airflow:$AIRFLOW_VERSION.
ARG AIRFLOW_IMAGE
FROM \${AIRFLOW_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-o", "errexit", "-o", "nounset", "-c"]

ENV DEBIAN_FRONTEND=noninteractive LANGUAGE=C.UTF-8 LANG=C.UTF-8 LC_ALL=C.UTF-8 \\
    LC_CTYPE=C.UTF-8 LC_MESSAGES=C.UTF-8 \\
    PIP_CACHE_DIR=/tmp/.cache/pip \\
    PATH=/home/airflow/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    VIRTUAL_ENV=/home/airflow/.local \\
    AIRFLOW_UID=50000 \\
    AIRFLOW_USER_HOME_DIR=/home/airflow \\
    AIRFLOW_HOME=/opt/airflow

RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \\
    && mkdir -p /opt/airflow/dags /opt/airflow/logs \\
    && chown -R airflow:0 /home/airflow /opt/airflow \\
    && chmod -R g+rw /home/airflow /opt/airflow \\
    && chmod g=u /etc/passwd
COPY entrypoint /entrypoint

USER 50000
# The context is bind-mounted on /mnt (exists already: no mount point is left in the image).
RUN --mount=type=bind,target=/mnt \\
    --mount=type=secret,id=cacert,mode=0444 \\
    --mount=type=secret,id=pipconf,mode=0444 \\
    if [[ -f /run/secrets/cacert ]]; then export PIP_CERT=/run/secrets/cacert REQUESTS_CA_BUNDLE=/run/secrets/cacert; fi; \\
    if [[ -f /run/secrets/pipconf ]]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \\
    python3 -m venv "\${VIRTUAL_ENV}"; \\
    pip install --quiet --no-cache-dir --disable-pip-version-check "pip==$PIP_VERSION"; \\
    pip install --quiet --no-cache-dir --disable-pip-version-check --no-compile --constraint /mnt/constraints.txt \\
        "apache-airflow==$AIRFLOW_VERSION" ${PROVIDERS[*]} ${OFFICIAL_EXTRAS_USED[*]}; \\
    cp /mnt/constraints.txt /home/airflow/constraints.txt; \\
    find /home/airflow/.local -type d -name __pycache__ -prune -exec rm -rf {} +; \\
    chmod -R g+rw /home/airflow/.local

ENV AIRFLOW_VERSION=$AIRFLOW_VERSION \\
    AIRFLOW__CORE__LOAD_EXAMPLES=false \\
    DUMB_INIT_SETSID=1
WORKDIR /opt/airflow
EXPOSE 8080
LABEL org.opencontainers.image.title="airflow-standin" \\
      org.opencontainers.image.description="Stand-in for apache/airflow:$AIRFLOW_VERSION (same layout, Debian's Python 3.11), built offline" \\
      org.opencontainers.image.version="$AIRFLOW_VERSION" \\
      org.apache.airflow.version="$AIRFLOW_VERSION" \\
      org.apache.airflow.uid="50000" \\
      org.airflow-platform.standin-inputs="$inputs"
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
EOF

log "installing apache-airflow==$AIRFLOW_VERSION + ${#PROVIDERS[@]} providers (pins: requirements.lock)"
AIRFLOW_IMAGE="$ROOTFS_IMAGE" IMAGE_DOCKERFILE="$ctx/Dockerfile" IMAGE_CONTEXT="$ctx" \
    "$REPO/scripts/build-image.sh" "$IMAGE"
"$docker" run --rm --entrypoint airflow "$IMAGE" version >/dev/null \
    || { echo "make-standin-base: 'airflow version' fails in $IMAGE" >&2; exit 1; }
for id in $old_ids; do
    "$docker" image rm "$id" >/dev/null 2>&1 || true
done
log "$IMAGE ready in $((SECONDS - start))s"
