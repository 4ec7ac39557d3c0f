#!/usr/bin/env bash
# The CPU half of a study run on a GPU machine (benchmarks/study_on_gpu.py): the RDKit rows on the
# same test molecules, `qdiff evaluate` of every samples file, `qdiff report`, and RESULTS.md with
# the commands, commit, machines, wall times and package versions.
#
#     bash benchmarks/report_gpu_study.sh RUN_DIR REFERENCE.h5 OUT_DIR [ENV_TXT [GPU_CODE]]
#
# RUN_DIR: the --out folder of study_on_gpu.py (one <treatment>-seed<k>/ folder per run, with
# samples.h5, samples-nfe<K>.h5, log.csv, config.json, timing.json). REFERENCE.h5: the same store
# the GPU run trained on. ENV_TXT: what the GPU machine printed about itself (nvidia-smi, versions).
# GPU_CODE: which qdiff code the GPU run used (a commit, and any difference from it).
# Steps whose output exists are skipped, so an interrupted run can be resumed.
set -euo pipefail
runs=$(cd "$1" && pwd); ref=$2; out=$3; env_txt=${4:-}; gpu_code=${5:-not recorded}
mkdir -p "$out/metrics"
split=$(python -c "import json,glob,sys; print(json.load(open(glob.glob(sys.argv[1]+'/*/config.json')[0]))['split'])" "$runs")
first=$(ls -d "$runs"/*/ | head -1)
molecules=$(python - "$first/samples.h5" <<'EOF'
import h5py, sys
with h5py.File(sys.argv[1]) as h5:
    print(len(h5["molecules/id"]))
EOF
)
timed() {  # name, command...: run it and append its wall time to $out/wall.tsv
  local name=$1 t0; shift; t0=$(date +%s); "$@"; echo -e "$name\t$(( $(date +%s) - t0 ))" >> "$out/wall.tsv"
}
for method in etkdg etkdg-mmff; do
  if [ ! -f "$out/metrics/$method.samples.h5" ]; then
    timed "$method" bash -c "qdiff etkdg --reference '$ref' --out '$out/metrics/$method.samples.h5' --split '$split' \
      --max-molecules '$molecules' --multiplier 2 $([ "$method" = etkdg-mmff ] && echo --mmff) > '$out/metrics/$method.log' 2>&1"
  fi
  [ -f "$out/metrics/$method.json" ] || timed "evaluate $method" bash -c "qdiff evaluate --samples '$out/metrics/$method.samples.h5' \
    --reference '$ref' --out '$out/metrics/$method.json' --workers 2 > '$out/metrics/$method.eval.log' 2>&1"
done
metrics=() sweep=()
for run in "$runs"/*/; do
  name=$(basename "$run")
  [ -f "$run/metrics.json" ] || timed "evaluate $name" bash -c "qdiff evaluate --samples '$run/samples.h5' --reference '$ref' \
    --out '$run/metrics.json' --workers 2 > '$run/evaluate.log' 2>&1"
  metrics+=("$run/metrics.json")
  for s in "$run"/samples-nfe*.h5; do
    [ -e "$s" ] || continue
    m=${s%.h5}.metrics.json
    [ -f "$m" ] || timed "evaluate $name $(basename "$s")" bash -c "qdiff evaluate --samples '$s' --reference '$ref' --out '$m' \
      --workers 2 --plausibility 0 > '${s%.h5}.evaluate.log' 2>&1"
    sweep+=("$m")
  done
done
qdiff report --metrics "${metrics[@]}" "$out/metrics/etkdg.json" "$out/metrics/etkdg-mmff.json" --sweep "${sweep[@]}" --out "$out" > "$out/report.log"
cp "$runs/timing.json" "$out/gpu_timing.json"
for run in "$runs"/*/; do mkdir -p "$out/runs/$(basename "$run")"; cp "$run"/log.csv "$run"/config.json "$run"/timing.json "$out/runs/$(basename "$run")/"; done
python - "$out" "$runs" "$env_txt" "$gpu_code" <<'EOF'
import json, platform, subprocess, sys
from importlib.metadata import version
from pathlib import Path
out, runs, env_txt, gpu_code = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = [line.split("\t") for line in (out / "wall.tsv").read_text().splitlines()] if (out / "wall.tsv").is_file() else []
wall = {name: int(sec) for name, sec in steps}
eval_s = sum(wall.values())
timing = json.loads((runs / "timing.json").read_text())
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
lines = ["# A study's models trained and sampled on one GPU, evaluated on CPU", "",
         "Produced by `benchmarks/study_on_gpu.py` (GPU machine) then `benchmarks/report_gpu_study.sh` (here); "
         "see README \"Real-data evidence\". Never edited by hand.", "",
         f"- qdiff code of the GPU run (training and sampling): {gpu_code}",
         f"- qdiff commit (evaluation and report): `{commit}`" + (" (with uncommitted changes)" if dirty else ""),
         f"- CPU machine: {platform.platform()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
         + ", ".join(f"{p} {version(p)}" for p in ("torch", "rdkit", "numpy", "h5py", "posebusters", "e3nn")),
         f"- GPU machine: {Path(env_txt).read_text().strip().replace(chr(10), '; ') if env_txt else 'not recorded'}",
         f"- GPU wall time (all runs side by side, train + sample): {timing['wall_s']:.0f} s; here (2 cores): RDKit rows "
         f"{wall.get('etkdg', '?')} s (ETKDGv3) and {wall.get('etkdg-mmff', '?')} s (+ MMFF94), every evaluation and RDKit row "
         f"{eval_s} s in all (`wall.tsv`)", "",
         "| run | steps | s/step (calibrated, runs sharing the GPU) | train s | sample s at 50 NFE (1,000 molecules x 2) |", "|---|---|---|---|---|"]
for key, t in sorted((k, v) for k, v in timing.items() if isinstance(v, dict) and "steps" in v):
    lines.append(f"| {key} | {t['steps']} | {t['calibrated_step_s']:.3f} | {t['train_s']:.0f} | {t.get('sample_nfe50_s', float('nan')):.0f} |")
lines += ["", "Tables: `summary.md` (also `summary.csv`, `summary.json`, `report.html`); figures beside them; per-run "
          "`runs/<run>/log.csv` (train and validation loss against step) and `config.json`."]
(out / "RESULTS.md").write_text("\n".join(lines) + "\n")
EOF
echo "report in $out (RESULTS.md, summary.md, report.html)"
