"""Backbone evaluation end to end on stores: the reference set against itself and against
distorted copies; TM-scores on real chains; the report's backbone table."""
import json
from pathlib import Path

import numpy as np
import pytest

from qdiff.data.featurize import featurize
from qdiff.data.protein_store import PROTEIN_SAMPLES_SCHEMA, ProteinStore, ProteinStoreWriter
from qdiff.data.residues import CA
from qdiff.data.sources.mmcif import ChainRecord, StructureRecord
from qdiff.evaluate_backbones import evaluate_backbones, tm_score
from qdiff.report import write_report


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("bb") / "bb.h5"
    featurize("demo-backbones", None, path, {"n_backbones": 40}, progress=False)
    return path


def write_samples(path, reference, transform, treatment="quotient"):
    """The reference test chains, transformed, as a samples store."""
    with ProteinStore(reference) as ref, ProteinStoreWriter(path, dataset="demo-backbones", source="test", schema=PROTEIN_SAMPLES_SCHEMA,
                                                            settings={"treatment": treatment, "sampler": "ode", "seed": 0}) as w:
        for row in ref.array("splits/random/test")[:]:
            c = ref.chain(int(row))
            pos = c["atom_pos"].copy()
            pos[:, CA] = transform(pos[:, CA])
            chain = ChainRecord(c["id"] + "s", "1", c["aatype"], c["resnum"], c["icode"], pos, c["atom_mask"], c["b_factor"], c["break_before"])
            w.add(StructureRecord(c["id"][:-2] + "s", "generated", float("nan"), "", "", "", "", [chain]), source_row=int(row))


def test_the_reference_set_scores_as_itself(tmp_path, reference):
    samples = tmp_path / "s.h5"
    write_samples(samples, reference, lambda ca: ca @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]).T + 5.0)
    m = evaluate_backbones(samples, reference, tmp_path / "m.json", progress=False)["metrics"]
    assert m["n_samples"] == 4 and m["pair_distance_jsd"] == pytest.approx(0.0, abs=1e-9) and m["rg_jsd"] == pytest.approx(0.0, abs=1e-9)
    assert m["valid_ca_geometry"] == 1.0 and m["clash_rate"] == 0.0 and abs(m["ca_ca_mean"] - 3.8) < 0.05
    assert m["secondary_structure"] == pytest.approx(m["reference_secondary_structure"])
    assert 0 < m["tm_diversity"]["pairwise_tm_mean"] < 1 and m["tm_diversity"]["pairs"] == 6
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["kind"] == "backbones" and saved["treatment"] == "quotient" and len(saved["per_sample"]) == 4


def test_diverged_chains_skip_tm_align_and_are_recorded(tmp_path, reference):
    """A sampler blow-up (coordinates ~1e4 Å) keeps its geometry rows but is left out of TM-align
    (novelty, diversity), with the reason recorded; the sane chains are still aligned."""
    samples = tmp_path / "s.h5"
    calls = iter(range(100))
    write_samples(samples, reference, lambda ca: ca * (2000.0 if next(calls) < 2 else 1.0))
    out = evaluate_backbones(samples, reference, tmp_path / "m.json", progress=False)
    m = out["metrics"]
    assert m["n_samples"] == 4 and m["tm_skipped"] == 2 and len(out["tm_skipped_chains"]) == 2
    assert all("diverged" in why for why in out["tm_skipped_chains"].values())
    assert m["tm_diversity"]["pairs"] == 1 and np.isfinite(m["novelty_max_tm_mean"])
    assert m["ca_ca_mean"] > 1000  # geometry still counts every sample


def test_distorted_chains_are_flagged(tmp_path, reference):
    rng = np.random.default_rng(0)
    samples = tmp_path / "s.h5"
    write_samples(samples, reference, lambda ca: ca * 0.5 + rng.normal(0, 0.3, ca.shape))  # squashed: short bonds, clashes
    m = evaluate_backbones(samples, reference, tmp_path / "m.json", progress=False)["metrics"]
    assert m["valid_ca_geometry"] == 0.0 and m["clash_rate"] == 1.0 and m["ca_ca_mean"] < 2.5
    assert m["pair_distance_jsd"] > 0.3 and m["rg_jsd"] > 0.3


PDB_DIR = Path(__file__).resolve().parent / "data" / "pdb"  # real entries, see PROVENANCE.tsv there


def real_ca(pid):
    from qdiff.data.sources.mmcif import parse_structure

    chain = parse_structure((PDB_DIR / f"{pid}.cif.gz").read_bytes(), pid).chains[0]
    return chain.atom_pos[chain.atom_mask[:, CA], CA].astype(np.float64)


def test_tm_score_is_one_for_a_moved_copy_and_lower_for_another_fold():
    a, b = real_ca("1A8O"), real_ca("1GBT")
    rotation = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0.0]])
    assert tm_score(a, a @ rotation.T + 3.0)[0] == pytest.approx(1.0, abs=1e-6)
    assert max(tm_score(a, b)) < 0.5


def test_report_puts_backbones_and_conformers_side_by_side(tmp_path, reference):
    metrics = []
    for treatment in ("conventional", "quotient"):
        samples = tmp_path / f"{treatment}.h5"
        write_samples(samples, reference, lambda ca: ca, treatment)
        evaluate_backbones(samples, reference, tmp_path / f"{treatment}.json", progress=False)
        metrics.append(tmp_path / f"{treatment}.json")
    summary = write_report(metrics, tmp_path / "report")
    assert {s["treatment"] for s in summary} == {"conventional", "quotient"} and all(s["kind"] == "backbones" for s in summary)
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "pair-dist JSD" in md and "synthetic backbones" in md and md.count("| quotient |") == 1
    assert (tmp_path / "report" / "metrics.png").read_bytes()[:4] == b"\x89PNG"


FAKE_MPNN = '''import argparse, pathlib
p = argparse.ArgumentParser()
for flag in ("--pdb_path", "--num_seq_per_target", "--sampling_temp", "--seed", "--batch_size", "--out_folder"):
    p.add_argument(flag)
p.add_argument("--ca_only", action="store_true")
a = p.parse_args()
assert a.ca_only
n = sum(1 for line in open(a.pdb_path) if line.startswith("ATOM"))
out = pathlib.Path(a.out_folder) / "seqs"
out.mkdir(parents=True, exist_ok=True)
records = [">native\\n" + "X" * n] + [f">T=0.1, sample={k}\\n" + "A" * n for k in range(1, int(a.num_seq_per_target) + 1)]
(out / (pathlib.Path(a.pdb_path).stem + ".fa")).write_text("\\n".join(records) + "\\n")
'''

# "Folds" every sequence into an ideal α-helix (Cα rise 1.5 Å, 100° per residue, radius 2.3 Å).
FAKE_FOLD = '''import argparse, math, pathlib
p = argparse.ArgumentParser()
p.add_argument("-i")
p.add_argument("-o")
a = p.parse_args()
out = pathlib.Path(a.o)
out.mkdir(parents=True, exist_ok=True)
name = None
for line in open(a.i):
    if line.startswith(">"):
        name = line[1:].strip()
    elif line.strip():
        rows = [f"ATOM  {k + 1:5d}  CA  ALA A{k + 1:4d}    {2.3 * math.cos(math.radians(100 * k)):8.3f}"
                f"{2.3 * math.sin(math.radians(100 * k)):8.3f}{1.5 * k:8.3f}  1.00  0.00           C" for k in range(len(line.strip()))]
        (out / f"{name}.pdb").write_text("\\n".join(rows) + "\\nEND\\n")
'''


def helix(n):
    k = np.arange(n)
    return np.stack([2.3 * np.cos(np.radians(100 * k)), 2.3 * np.sin(np.radians(100 * k)), 1.5 * k], axis=1)


def test_designability_tier_runs_the_named_tools_and_skips_without_them(tmp_path, monkeypatch, reference):
    import sys

    from qdiff.evaluate_backbones import designability_tier

    walk = np.cumsum(np.random.default_rng(0).normal(0, 2.2, (30, 3)), axis=0)
    monkeypatch.delenv("QDIFF_PROTEINMPNN", raising=False)
    monkeypatch.setenv("QDIFF_FOLD_CMD", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    skipped = designability_tier([helix(30)], ["h"], 1, tmp_path / "none")
    assert skipped["status"] == "skipped" and "QDIFF_PROTEINMPNN" in skipped["reason"]

    mpnn = tmp_path / "ProteinMPNN"
    mpnn.mkdir()
    (mpnn / "protein_mpnn_run.py").write_text(FAKE_MPNN)
    fold = tmp_path / "fake_fold.py"
    fold.write_text(FAKE_FOLD)
    monkeypatch.setenv("QDIFF_PROTEINMPNN", str(mpnn))
    monkeypatch.setenv("QDIFF_FOLD_CMD", f"{sys.executable} {fold}")
    result = designability_tier([helix(30), walk], ["helix", "walk"], 2, tmp_path / "work")
    assert result["status"] == "done" and result["designable_fraction"] == 0.5
    by_name = {r["name"]: r for r in result["per_backbone"]}
    assert by_name["helix"]["designable"] and by_name["helix"]["sc_rmsd"] < 0.01 and by_name["helix"]["sequences"] == 8
    assert not by_name["walk"]["designable"] and by_name["walk"]["sc_rmsd"] > 2.0
    broken = tmp_path / "broken_fold.py"
    broken.write_text("import sys; sys.exit(1)")
    monkeypatch.setenv("QDIFF_FOLD_CMD", f"{sys.executable} {broken}")
    with pytest.raises(RuntimeError, match="failed with status 1; see .*tools.log"):
        designability_tier([helix(30)], ["again"], 1, tmp_path / "broken")
