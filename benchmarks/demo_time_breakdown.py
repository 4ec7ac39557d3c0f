"""Where a workflow run's time went, from Snakemake's benchmark files (logs/benchmarks/**.tsv):
jobs, wall seconds and CPU seconds per stage, largest first, and the totals.

    python benchmarks/demo_time_breakdown.py [LOGS_DIR [SNAKEMAKE_LOG]]   # default: logs/benchmarks

Wall seconds per job are what a stage costs when every job is single-threaded and the cores are
not shared (the demo: each job declares one thread and Snakemake exports OMP_NUM_THREADS=1);
they are inflated when other work shares the machine. Snakemake's `cpu_time` is polled, and it
under-reports: on an idle 2-core machine the demo's wall seconds summed to 1,300 against 917 CPU
seconds, while the run's log shows 2 jobs running for all but 8 of its 658 s. So the
run's wall time is about (sum of wall seconds) / cores, and the idle core-seconds from the
Snakemake log (SNAKEMAKE_LOG, default the newest .snakemake/log/*.snakemake.log) say how much of
it a better schedule could win. Jobs without a `benchmark:` directive (data_info, toy_summary,
report) are not counted.
"""
from __future__ import annotations

import csv
import datetime
import re
import sys
from collections import defaultdict
from pathlib import Path


def stage(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    if parts[0] == "toy":
        # per_run jobs: toy/[velocity-form/]<target>/...; per_target jobs: toy/<target>.tsv
        return "toy" + (" (velocity form)" if len(parts) > 2 and parts[1] == "velocity-form" else "")
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
    for name, (jobs, wall, cpu) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:32s} {jobs:5d} {wall:8.1f} {cpu:8.1f}")
    jobs, wall, cpu = (sum(t[i] for t in totals.values()) for i in range(3))
    print(f"{'total':32s} {jobs:5d} {wall:8.1f} {cpu:8.1f}   (wall / 2 cores = {wall / 2:.0f} s)")


def job_intervals(log: Path) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """(start, end) of every job in a Snakemake log: a job starts at the time stamp above its
    `jobid:` line and ends at the stamp above its `Finished job N.` / `Finished jobid: N` line."""
    stamp, starts, ends = None, {}, {}
    for line in log.read_text().splitlines():
        if m := re.match(r"\[(\w{3} \w{3} +\d+ \d+:\d+:\d+ \d{4})\]", line):
            stamp = datetime.datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"\s+jobid: (\d+)", line):
            starts[int(m.group(1))] = stamp
        elif m := re.match(r"Finished job(?:id)?:? ?(\d+)", line):
            ends[int(m.group(1))] = stamp
    return [(starts[j], ends[j]) for j in starts if j in ends and starts[j] is not None]


def idle_core_seconds(intervals: list[tuple[datetime.datetime, datetime.datetime]], cores: int = 2) -> tuple[int, int]:
    """(wall seconds from the first start to the last end, sum over those seconds of the cores
    with no job running), at one-second resolution."""
    if not intervals:
        return 0, 0
    t0, t1 = min(s for s, _ in intervals), max(e for _, e in intervals)
    wall = int((t1 - t0).total_seconds())
    busy = [0] * (wall + 1)
    for s, e in intervals:
        for k in range(int((s - t0).total_seconds()), int((e - t0).total_seconds())):
            busy[k] += 1
    return wall, sum(max(0, cores - b) for b in busy[:wall])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "logs/benchmarks"))
    logs = [Path(sys.argv[2])] if len(sys.argv) > 2 else sorted(Path(".snakemake/log").glob("*.snakemake.log"))
    if logs:
        wall, idle = idle_core_seconds(job_intervals(logs[-1]))
        print(f"{logs[-1].name}: {wall} s from the first job's start to the last job's end; {idle} core-seconds with "
              "fewer jobs than 2 cores running")
