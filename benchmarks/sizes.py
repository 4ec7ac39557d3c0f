"""The two network sizes the benchmarks time: the demo study's EGNN and the paper study's e3nn
(read from studies/paper.yaml, so the benchmarks follow the study)."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = {"name": "egnn", "hidden": 32, "layers": 3}
PAPER_MODEL = yaml.safe_load((ROOT / "studies" / "paper.yaml").read_text())["models"]["train"]["model"]
