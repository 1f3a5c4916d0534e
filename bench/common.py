"""Shared helpers of the benchmarks: machine facts, timing of child processes (wall time and
peak RSS), markdown tables, and where each benchmark leaves its section of BENCHMARKS.md.

Every benchmark compares side by side, in one run, and reports ratios: the machine is shared
and noisy, so absolute times alone mean little.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / ".local" / "bench"


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mib: float
    stdout: str


def measure(command: list[str], env: dict | None = None, timeout: float = 3600) -> Measured:
    """Run ``command``; its wall time, peak resident memory and output. A small probe
    interpreter runs it, so that the probe's RUSAGE_CHILDREN is this one command's peak."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "s = time.perf_counter() - t\n"
        "sys.stderr.write(p.stderr)\n"
        "print(json.dumps({'rc': p.returncode, 's': s, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " 'out': p.stdout}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if data["rc"]:
        raise RuntimeError(f"{' '.join(command)} failed ({data['rc']}):\n{result.stderr[-3000:]}")
    return Measured(data["s"], data["rss"] / 1024, data["out"])


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "apache-airflow": version("apache-airflow"),
        "pyarrow": version("pyarrow"),
        "pandas": version("pandas"),
        "psycopg": version("psycopg"),
    }


def table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, title: str, body: str) -> None:
    """Print a section and keep it for BENCHMARKS.md (bench/run.py assembles them)."""
    section = f"## {title}\n\n{body.strip()}\n"
    print(section, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(section)


def rounds(rows: int, names: tuple[str, ...], run_one, check, repeat: int) -> dict[str, dict]:
    """``repeat`` rounds of every implementation in ``names`` on one input of ``rows`` rows,
    the order rotated each round (to spread cache and noise); ``run_one(name)`` returns
    (result, wall s, peak MiB), ``check(results)`` compares a round's outputs. Per name: rows/s
    and the medians of work, CPU and wall seconds, and the largest peak."""
    runs = {name: [] for name in names}
    for i in range(repeat):
        k = i % len(names)
        results = {}
        for name in names[k:] + names[:k]:
            result, wall, peak = run_one(name)
            results[name] = result
            runs[name].append((result["seconds"], result["cpu"], wall, peak))
            print(
                f"{rows:>12,} {name:8} work {result['seconds']:6.2f} s  cpu {result['cpu']:6.2f} s  "
                f"wall {wall:6.2f} s  peak {peak:6.0f} MiB",
                flush=True,
            )
        check(results)
    stats = {}
    for name in names:
        work, cpu, wall = (statistics.median(r[j] for r in runs[name]) for j in range(3))
        stats[name] = {"rps": rows / work, "work": work, "cpu": cpu, "wall": wall, "peak": max(r[3] for r in runs[name])}
    return stats
