"""The two network sizes the benchmarks time: the demo study's EGNN and the paper study's e3nn
(read from studies/paper.yaml, so the benchmarks follow the study), and the demo-drugs store
they run on (built once per suite with --store, or per script in a temporary folder)."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = {"name": "egnn", "hidden": 32, "layers": 3}
PAPER_MODEL = yaml.safe_load((ROOT / "studies" / "paper.yaml").read_text())["models"]["train"]["model"]


def demo_drugs_store(path: Path | None, tmp: Path, molecules: int, conformers: int) -> Path:
    """`path` when it is an existing store (reused: the first script of gpu_suite.sh builds it),
    else a demo-drugs store of `molecules` x `conformers` built at `path` (or in `tmp`)."""
    from qdiff.data.featurize import featurize

    store = Path(path) if path else Path(tmp) / "drugs.h5"
    if not store.is_file():
        featurize("demo-drugs", None, store, {"max_molecules": molecules, "n_conformers": conformers}, progress=False)
    return store
