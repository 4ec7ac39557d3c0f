"""Where a workflow run's time went, from Snakemake's benchmark files (logs/benchmarks/**.tsv):
jobs, wall seconds and CPU seconds per stage, largest first, and the totals.

    python benchmarks/demo_time_breakdown.py [LOGS_DIR]     # default: logs/benchmarks

CPU seconds (user + system) are what the stage costs; on 2 cores the run's wall time cannot be
below CPU total / 2. Wall seconds per job are inflated when other work shares the machine.
Jobs without a `benchmark:` directive (data_info, toy_summary, report) are not counted.
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def stage(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    if parts[0] == "toy":
        return "toy" + (" (velocity form)" if parts[1] == "velocity-form" else "")
    if parts[0] == "data":
        return f"featurize {parts[1].split('.')[0]}"
    if parts[0] == "baselines":
        return f"baseline {path.stem} {parts[1]}"
    if parts[0] == "runs":
        kind = path.stem if not parts[4].startswith("nfe") else f"nfe sweep {path.stem}"
        return f"{kind} {parts[1]}"
    return parts[0]


def main(root: Path) -> None:
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for path in sorted(root.rglob("*.tsv")):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        t = totals[stage(path, root)]
        t[0] += 1
        t[1] += float(rows[-1]["s"])
        t[2] += float(rows[-1].get("cpu_time") or 0.0)
    print(f"{'stage':32s} {'jobs':>5s} {'wall s':>8s} {'CPU s':>8s}")
    for name, (jobs, wall, cpu) in sorted(totals.items(), key=lambda kv: -kv[1][2]):
        print(f"{name:32s} {jobs:5d} {wall:8.1f} {cpu:8.1f}")
    jobs, wall, cpu = (sum(t[i] for t in totals.values()) for i in range(3))
    print(f"{'total':32s} {jobs:5d} {wall:8.1f} {cpu:8.1f}   (CPU / 2 cores = {cpu / 2:.0f} s)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "logs/benchmarks"))
