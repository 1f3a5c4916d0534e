"""Size the platform image adds on top of its base (images/Dockerfile), where a Docker
engine runs. The base is $AIRFLOW_IMAGE when that image is present locally (e.g. the
official apache/airflow image, pulled), else the offline stand-in of
scripts/make-standin-base.sh, which, unlike the official image, lacks pyarrow.

    python bench/image_bench.py [--quick]    # --quick: measure the image already built, never build it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, report, table  # noqa: E402

GOAL_MB = 150.0
OFFICIAL = "apache/airflow:3.3.2-python3.12"
STANDIN = "airflow-standin:3.3.2"
TAG = "airflow-platform:bench"


def docker(*args: str) -> subprocess.CompletedProcess:
    client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")
    return subprocess.run([client, *args], capture_output=True, text=True)


def size_mb(image: str) -> float:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip()) / 1e6


def packages(image: str) -> dict[str, str]:
    listing = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image,
                     "-m", "pip", "list", "--format=json", "--disable-pip-version-check").stdout
    return {p["name"].lower(): p["version"] for p in json.loads(listing)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="no build (minutes on a fresh machine): measure the last image `make bench` built")
    args = parser.parse_args(argv)
    if shutil.which("docker") is None or docker("info").returncode:
        report("image", "Image: size added on top of the base",
               "Not measured: no Docker engine reachable here (`docker info` failed).")
        return 0
    base = os.environ.get("AIRFLOW_IMAGE", OFFICIAL)
    if docker("image", "inspect", base).returncode:
        base = STANDIN
        if not args.quick:
            subprocess.run([str(REPO / "scripts" / "make-standin-base.sh")], check=True, capture_output=True)
    if args.quick:
        if docker("image", "inspect", base).returncode or docker("image", "inspect", TAG).returncode:
            return _not_built_yet()
    else:
        subprocess.run([str(REPO / "scripts" / "build-image.sh"), TAG], check=True, capture_output=True,
                       env={**os.environ, "AIRFLOW_IMAGE": base})
    base_mb, image_mb = size_mb(base), size_mb(TAG)
    added = sorted(set(packages(TAG)) - set(packages(base)))
    history = json.loads("[" + ",".join(docker("history", "--no-trunc", "--format", "{{json .}}", TAG)
                                        .stdout.strip().splitlines()) + "]")
    # The layers images/Dockerfile adds: the newest ones that hold files.
    layers = [[h["CreatedBy"][-90:].strip(), h["Size"]] for h in history[:12] if h["Size"] not in ("0B", "0")][:3]
    added_mb = image_mb - base_mb
    if args.quick:
        layers.append(["(--quick: the image `make bench` built last, not rebuilt from this tree)", ""])
    verdict = (
        f"goal met: {added_mb:.1f} MB added (goal <= {GOAL_MB:.0f} MB)"
        if added_mb <= GOAL_MB
        else f"goal missed: {added_mb:.1f} MB added (goal <= {GOAL_MB:.0f} MB)"
    )
    note = ""
    if base == STANDIN and "pyarrow" in added:
        note = (
            "\n\nThe base here is the offline stand-in, which has no pyarrow, so the dependency layer "
            "installs it (minus Arrow Flight, headers and sources). On a base that already has pyarrow "
            "the Dockerfile keeps the base's and that layer holds only what is missing."
        )
    body = (
        f"Base `{base}`; image `{TAG}` built from images/Dockerfile.\n\n"
        + table(["image", "size MB"], [["base", base_mb], ["platform image", image_mb], ["**added**", added_mb]])
        + "\n\nPackages added to the base: " + (", ".join(added) or "none")
        + "\n\nLayers of images/Dockerfile holding files (docker history):\n\n" + table(["layer", "size"], layers)
        + note + f"\n\n**Verdict:** {verdict}.\n"
    )
    report("image", "Image: size added on top of the base", body)
    return 0


def _not_built_yet() -> int:
    report("image", "Image: size added on top of the base",
           f"Not measured in --quick: no `{TAG}` image built yet (a full `make bench` builds it; the build takes "
           "minutes on a fresh machine).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
