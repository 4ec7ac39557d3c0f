"""`python -m qdiff.gpu_smoke --out FILE`: what a (cluster) job sees of its GPUs.

Records `nvidia-smi -L`, CUDA_VISIBLE_DEVICES and the Slurm job variables, torch's CUDA build and
device list, and times a bf16 and an fp32 matmul on every visible device. Exits 1 without writing
FILE when no GPU is visible (the job asked for one and did not get it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch

from .atomic import atomic_write_text


def _matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def probe() -> dict:
    smi = shutil.which("nvidia-smi")
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip().splitlines() if smi else []
    devices = []
    for i in range(torch.cuda.device_count()):
        d = torch.device("cuda", i)
        props = torch.cuda.get_device_properties(d)
        devices.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "capability": f"{props.major}.{props.minor}",
                        "fp32_tflops": round(_matmul_tflops(d, torch.float32), 1),
                        "bf16_tflops": round(_matmul_tflops(d, torch.bfloat16), 1)})
    return {
        "host": os.uname().nodename, "nvidia_smi": listing, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm": {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE",
                                                               "SLURM_CPUS_PER_TASK", "SLURM_JOB_PARTITION", "SLURM_NODELIST")},
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "nccl": torch.cuda.is_available() and torch.distributed.is_nccl_available(),
        "devices": devices,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qdiff.gpu_smoke", description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    info = probe()
    print(json.dumps(info, indent=2))
    if not info["devices"]:
        print(f"gpu_smoke: no GPU visible to torch on {info['host']} (CUDA_VISIBLE_DEVICES={info['cuda_visible_devices']}, "
              f"torch CUDA build {info['torch_cuda']}); check the gpu resource and the partition", file=sys.stderr)
        return 1
    atomic_write_text(args.out, json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
