#!/usr/bin/env bash
# Run a whole study from a fresh clone of this repository's HEAD and commit-ready its report:
#
#     bash benchmarks/run_study.sh STUDY OUT_DIR [CORES]      # e.g. qm9-small docs/results/qm9-small 2
#
# In a clone of HEAD (committed files only: no results/, no .snakemake/) it runs
# `snakemake --cores CORES --config study=STUDY`, then copies the study's report (tables, figures,
# report.html), every run's learning curve (log.csv: loss, validation loss, step, training wall
# time) and settings (config.json), the Snakemake log and the per-stage wall times into OUT_DIR,
# and writes OUT_DIR/RESULTS.md: the command, commit, machine, load, package versions, wall times,
# the hash of the test molecules and the summary table. Never edit OUT_DIR by hand: re-run this.
#
# QDIFF_VENV (default: this checkout's .venv) is the environment it runs in; the clone's code comes
# first on PYTHONPATH. KEEP=1 keeps the clone (printed) for inspection.
set -euo pipefail
study=${1:?usage: run_study.sh STUDY OUT_DIR [CORES]}; out=${2:?usage: run_study.sh STUDY OUT_DIR [CORES]}; cores=${3:-2}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
venv=$(cd "${QDIFF_VENV:-$repo/.venv}" && pwd)
out_arg=$out; mkdir -p "$out"; out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/qdiff-study.XXXXXX")
[ "${KEEP:-0}" = 1 ] && echo "clone kept in $work/qdiff" >&2 || trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/qdiff"
cd "$work/qdiff"
export PATH="$venv/bin:$PATH" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
commit=$(git rev-parse HEAD)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
command=(snakemake --cores "$cores" --config "study=$study")
echo "== ${command[*]} (in $PWD; log: $out/snakemake.log)" >&2
start=$(date +%s); started=$(date -u +%FT%TZ)
set +e
"${command[@]}" > "$out/snakemake.log" 2>&1
status=$?
set -e
wall=$(( $(date +%s) - start ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[ "$status" = 0 ] || { tail -40 "$out/snakemake.log" >&2; echo "the study failed (exit $status) after $wall s" >&2; exit "$status"; }

rm -rf "$out/report" "$out/runs"
cp -r results/report "$out/report"
for run in results/runs/*/*/seed*/; do
  name=$(echo "$run" | cut -d/ -f3-5 | tr / -)
  mkdir -p "$out/runs/$name"
  cp "$run/log.csv" "$run/config.json" "$out/runs/$name/"
done
python "$repo/benchmarks/demo_time_breakdown.py" logs/benchmarks "$(ls .snakemake/log/*.snakemake.log | tail -1)" > "$out/time_breakdown.txt"

python - "$out" "$study" "$commit" "$wall" "$started" "$load_before" "$load_after" "$cores" "${command[*]}" "$out_arg" <<'EOF'
import hashlib, importlib.metadata as md, json, os, platform, sys
from pathlib import Path
import h5py
out, study, commit, wall, started, load_before, load_after, cores, command, out_arg = sys.argv[1:]
out = Path(out)

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"

cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
memory = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
packages = ", ".join(f"{p} {version(p)}" for p in ("torch", "e3nn", "rdkit", "numpy", "h5py", "snakemake", "posebusters"))
hashes = set()  # (sha256 of the sampled molecule ids, in order; how many) over every run
for samples in Path("results/runs").glob("*/*/seed*/samples.h5"):
    with h5py.File(samples) as h5:
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in h5["molecules/id"][:]]
    hashes.add((hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16], len(ids)))
hashes = sorted(hashes)
lines = [
    f"# The `{study}` study, run on one machine",
    "",
    f"Produced by `bash benchmarks/run_study.sh {study} {out_arg} {cores}` "
    "(a fresh clone of the commit below); never edited by hand.",
    "",
    f"- command: `{command}`; exit 0; started {started}",
    f"- **wall time: {int(wall)} s ({int(wall) / 60:.1f} min)** on {cores} cores",
    f"- qdiff commit: `{commit}`",
    f"- machine: {cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB; {platform.platform()}; load average before {load_before}, after {load_after}",
    f"- Python {platform.python_version()}; {packages}",
    "- test molecules (sha256 of the sampled ids, in order): "
    + "; ".join(f"`{h}` ({n} molecules)" for h, n in hashes) + (" (every run the same)" if len(hashes) == 1 else ""),
    "",
    "Reproducibility: seeds fix every random draw (data order, priors, noise, sampling, ETKDG). What",
    "remains is floating point: another CPU type, thread count or library version changes the last",
    "bits of training, which can move single conformers across the 0.5 Å coverage threshold.",
    "",
    "## Where the time went (`time_breakdown.txt`: per stage, summed over its jobs)",
    "",
    "```",
    (out / "time_breakdown.txt").read_text().rstrip(),
    "```",
    "",
    "## Results (`report/summary.md`; also `summary.csv`, `summary.json`, `report.html`)",
    "",
    (out / "report" / "summary.md").read_text().rstrip(),
    "",
    "## Figures",
    "",
    *[f"![{p.stem}](report/{p.name})" for p in sorted((out / "report").glob("*.png"))],
    "",
    "Learning curves per run: `runs/<dataset>-<treatment>-seed<k>/log.csv` (step, loss, validation loss,",
    "training wall time `wall_s`) and `config.json` (every training setting).",
    "",
]
(out / "RESULTS.md").write_text("\n".join(lines))
print(f"wrote {out / 'RESULTS.md'}")
EOF
echo "study $study: $wall s; report in $out" >&2
