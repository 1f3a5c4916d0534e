"""Wall time of the README's run command: `make run` for all categories of one day, on the
embedded defaults (SQLite), cold (a fresh .local state: Airflow's database is created) and
warm (the same command again). Each run uses its own state folder, not the user's .local.

    python bench/laptop_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, measure, report, table  # noqa: E402

GOAL_SECONDS = 60.0
DATE = "2026-11-25"


def state_env(state: Path) -> dict[str, str]:
    from category_pipeline.local_run import laptop_env

    return {**os.environ, **laptop_env(REPO, state)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    command = ["make", "-s", "-C", str(REPO), "run", f"DATE={DATE}"]

    cold, warm = [], []
    for _ in range(args.repeat):
        state = Path(tempfile.mkdtemp(prefix="laptop-bench-"))
        try:
            first = measure(command, env=state_env(state))
            second = measure(command, env=state_env(state))
        finally:
            shutil.rmtree(state, ignore_errors=True)
        cold.append(first.seconds)
        warm.append(second.seconds)
        assert "DAG runs succeeded" in second.stdout, second.stdout[-2000:]
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    verdict = (
        f"goal met: {cold_s:.1f} s cold, {warm_s:.1f} s warm (goal < {GOAL_SECONDS:.0f} s)"
        if max(cold_s, warm_s) < GOAL_SECONDS
        else f"goal missed: {cold_s:.1f} s cold, {warm_s:.1f} s warm (goal < {GOAL_SECONDS:.0f} s)"
    )
    body = (
        f"`make run DATE={DATE}` (every category DAG + advanced_data_pipeline, one logical date, "
        f"SQLite), median of {args.repeat}. Cold: a fresh state folder (Airflow's metadata database is "
        "created and migrated); warm: the same command once more on that state.\n\n"
        + table(["run", "median s", "min s", "max s", "goal s"], [
            ["cold", cold_s, min(cold), max(cold), GOAL_SECONDS],
            ["warm", warm_s, min(warm), max(warm), GOAL_SECONDS],
        ])
        + f"\n\n**Verdict:** {verdict}.\n"
    )
    report("laptop", "Laptop run: `make run` for one day", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
