"""`make bench`: run every benchmark, one after the other, and write BENCHMARKS.md.

    python bench/run.py [--quick]     # --quick: smaller sizes, one repeat (a smoke run)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, machine, table  # noqa: E402

# (result name, script, full arguments, quick arguments)
BENCHMARKS = [
    ("parse", "parse_bench.py", [], ["--sizes", "10", "--repeat", "1"]),
    ("process", "process_bench.py", [], ["--quick"]),
    ("peers", "peers_bench.py", [], ["--quick"]),
    ("staging", "staging_bench.py", [], ["--rows", "200000", "--repeat", "1"]),
    ("load", "load_bench.py", [], ["--rows", "100000", "--repeat", "1"]),
    ("laptop", "laptop_bench.py", [], ["--repeat", "1"]),
    ("categories", "categories_bench.py", [], ["--quick"]),
    ("k8s_cost", "k8s_cost_estimate.py", [], ["--quick"]),
    ("image", "image_bench.py", [], ["--quick"]),
]


VERDICT = re.compile(r"goal (met|missed|partly met)", re.IGNORECASE)


def goals_at_a_glance(sections: list[str]) -> str:
    """One row per verdict line of every section: the section's title and the line."""
    rows = []
    for section in sections:
        title = section.splitlines()[0].lstrip("# ").strip()
        for line in section.splitlines():
            if VERDICT.search(line):
                text = re.sub(r"^[-*\s]*(\*\*)?(Verdicts?:?)?(\*\*)?:?\s*", "", line.strip()).replace("**", "")
                rows.append([title, text.strip()])
    return table(["benchmark", "verdict"], rows) if rows else "No verdicts (every benchmark failed?).\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    facts = machine()
    sections, failed = [], []
    for name, script, full, quick in BENCHMARKS:
        started = time.monotonic()
        print(f"==== {script}", flush=True)
        result = subprocess.run([sys.executable, str(REPO / "bench" / script), *(quick if args.quick else full)])
        print(f"==== {script}: {time.monotonic() - started:.0f} s, exit {result.returncode}", flush=True)
        section = RESULTS / f"{name}.md"
        if result.returncode or not section.is_file():
            failed.append(script)
            sections.append(f"## {script}\n\nFailed (exit {result.returncode}); see the output of `make bench`.\n")
        else:
            sections.append(section.read_text())
            section.unlink()
    header_goals = goals_at_a_glance(sections)
    header = (
        "# Benchmarks\n\n"
        f"Made by `make bench`{' (--quick: reduced sizes)' if args.quick else ''}. Every comparison runs side "
        "by side in one run, so the ratios matter more than the absolute times (the machine is shared).\n\n"
        + table(["", ""], [[k, v] for k, v in facts.items()])
        + "\n\n## Goals at a glance\n\nEvery verdict of the sections below, as they state it (details and the why there).\n\n"
        + header_goals
        + "\n"
    )
    (REPO / "BENCHMARKS.md").write_text(header + "\n" + "\n".join(sections))
    print(f"wrote {REPO / 'BENCHMARKS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
