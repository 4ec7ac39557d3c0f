#!/usr/bin/env bash
# Issue 5's GPU figures in one go (about 10 minutes on one H100/H200), with qdiff installed in the
# current Python (a CUDA build of torch >= 2.4):
#     bash benchmarks/gpu_suite.sh [OUT_DIR]
# Compare with ET-Flow on one H200 (fp32): 343 molecules/s training at batch 48, 415 at batch 128,
# 29 conformers/s sampling at 50 NFE; quotient operators 0.77 ms (0.55% of a step) at batch 48.
set -uo pipefail
out=${1:-gpu-figures}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")" && pwd)
failed=()
run() {  # name, timeout (s), command...: one figure; a failure or timeout is logged, the suite goes on
    local name=$1 limit=$2 status
    shift 2
    echo "== $name: $*" | tee -a "$out/summary.txt"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | grep -Ev '^(W|I)[0-9]{4} ' | tail -n 12 | tee -a "$out/summary.txt"
    status=${PIPESTATUS[0]}
    echo "   (exit $status)" | tee -a "$out/summary.txt"
    [ "$status" -eq 0 ] || failed+=("$name (exit $status$([ "$status" -eq 124 ] && echo ', timed out'))")
}
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$out/summary.txt"
python -m qdiff.gpu_smoke --out "$out/smoke.json" >"$out/smoke.log" 2>&1 || { cat "$out/smoke.log"; echo "no GPU: nothing measured"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/summary.txt"
run quotient_ops 60 python "$here/bench_quotient_ops.py" --device cuda
run train_fp32 150 python "$here/train_step.py" --device cuda --sizes demo,paper --steps 20
run train_bf16 120 python "$here/train_step.py" --device cuda --precision bf16 --sizes paper --steps 20 --backend e3nn
run train_bf16_compile 240 python "$here/train_step.py" --device cuda --precision bf16 --compile --sizes paper --steps 20
run train_fp32_compile 240 python "$here/train_step.py" --device cuda --compile --sizes paper --steps 20
run train_fp32_cudagraphs 300 python "$here/train_step.py" --device cuda --compile reduce-overhead --sizes paper --steps 20
run train_bf16_b128 120 python "$here/train_step.py" --device cuda --precision bf16 --sizes paper --batch 128 --steps 10
# cuEquivariance (pip install 'qdiff[cuda]' cuequivariance-ops-torch-cu12|cu13): its fused kernel needs
# equal multiplicities, so the paper network's edges (128x0e + 32x1e) run its PyTorch fallback; the
# uniform rows compare both backends on 64x0e + 64x1e edges
if python -c "import cuequivariance_torch" 2>/dev/null; then
  run train_fp32_cueq 150 python "$here/train_step.py" --device cuda --sizes paper --steps 20 --backend cueq
  run train_fp32_uniform_e3nn 150 python "$here/train_step.py" --device cuda --sizes paper --steps 20 --backend e3nn --model '{edge_scalars: 64, edge_vectors: 64}'
  run train_fp32_uniform_cueq 150 python "$here/train_step.py" --device cuda --sizes paper --steps 20 --backend cueq --model '{edge_scalars: 64, edge_vectors: 64}'
  run sample_fp32_uniform_cueq 120 python "$here/sample.py" --device cuda --sizes paper --molecules 40 --backend cueq --model '{edge_scalars: 64, edge_vectors: 64}'
else
  echo "== cueq: cuequivariance-torch is not installed; only e3nn was measured" | tee -a "$out/summary.txt"
fi
run sample_fp32 120 python "$here/sample.py" --device cuda --sizes paper --molecules 40
run sample_fp32_cudagraphs 300 python "$here/sample.py" --device cuda --compile reduce-overhead --sizes paper --molecules 40
run sample_bf16_compile 240 python "$here/sample.py" --device cuda --precision bf16 --compile --sizes paper --molecules 40
echo "figures in $out/summary.txt"
if [ ${#failed[@]} -gt 0 ]; then  # unattended runs must not pass over a missing figure
    printf 'FAILED: %s\n' "${failed[@]}" | tee -a "$out/summary.txt" >&2
    exit 1
fi
