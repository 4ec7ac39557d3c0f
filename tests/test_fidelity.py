"""The paper study's settings, as the workflow resolves them, against a table of what the paper,
ET-Flow and Proteína state, row by row with the source of each value.

Resolution mirrors the workflow exactly: studies/paper.yaml's sections are loaded as
workflow/rules/study.smk does; workflow/rules/common.smk (plain Python) is executed to get the
`--set` flags of `qdiff train`, the flags of `qdiff sample` and the featurize settings; those
flags are parsed as the CLI parses them and laid over qdiff's defaults (qdiff.train
resolve_config, the sample runners' defaults, qdiff.data.featurize DEFAULTS).

To add a setting, add a Row. A value qdiff deliberately does not follow is a Row with `qdiff=`
(the value it uses) and `why=` (the reason, also in README "Fidelity"); the test then checks that
value, so neither side can drift silently.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAME = object()

# Source labels (digest = ../shared/reference/paper-digest.md; ET-Flow = shenoynikhil/ETFlow;
# Proteína = NVIDIA-Digital-Bio/proteina, as summarized in ../shared/reference/anchors.md §4c).
D41 = "paper-digest §4.1 (paper, Sec. 4.1 / Appx. F.1)"
D41_TABLE = "paper-digest §4.1 training-hyperparameter table"
D41_E = "paper-digest §4.1 [E] ET-Flow conventions"
D42 = "paper-digest §4.2 (paper, Sec. 4.2 / Appx. F.2)"
D42_T = "paper-digest §4.2 Table F.2.1 (M_FS^small)"
D42_TRAIN = "paper-digest §4.2 training table (M_FS^small: 150K steps, batch 5 per GPU x 16 GPUs)"
ETF_QM9 = "ET-Flow configs/qm9-base.yaml"
ETF_DRUGS = "ET-Flow configs/drugs-base.yaml"
ETF_PREP = "ET-Flow scripts/prepare_data.py (process_mol / process_test_mol)"
ETF_DATA = "ET-Flow etflow/data/dataset.py (EuclideanDataset.get: np.random.randint over conformers)"
ETF_LOSS = "ET-Flow etflow/models/loss.py batchwise_l2_loss, used in etflow/models/model.py"
ETF_MODEL = "ET-Flow etflow/models/model.py (rmsd_align of the prior only when prior_type == harmonic)"
ETF_EVAL = "ET-Flow scripts/eval.py (num_samples = 2 * count of reference conformers)"
QDIFF_QM9 = "qdiff choice: EDM-split QM9 is not in the paper; trained like GEOM-QM9 (README Fidelity)"
PDB_DIM = ("qdiff's Cα transformer splits dim over its heads; 512 does not divide by M_FS^small's 12 heads, "
           "384 = 12 x 32 (README Fidelity)")
PROTEINA_SDE = "Proteína proteinfoundation/flow_matching/r3n_fm.py (noise-only gamma), configs inference_base.yaml (g(t) 1/t mode, log grid)"
PROTEINA_T = "Proteína configs/experiment_config/training_ca.yaml (mix_up02_beta: 0.98 Beta(1.9, 1) + 0.02 U(0, 1)); paper-digest §4.2 (Beta-Uniform p(t) kept)"
PROTEINA_W = "Proteína proteinfoundation/proteinflow/proteina.py compute_fm_loss: 1/((1-t)^2 + 1e-5); paper-digest §4.2 [E] conventions"
SO3 = ("paper-digest §4.1 (GEOM-QM9: ET-Flow(SO(3)) only; GEOM-DRUGS: both, the study runs SO(3)); ET-Flow "
       "etflow/networks/torchmd_net/model_dynamics.py so3_equivariant (cross products)")


@dataclass(frozen=True)
class Row:
    dataset: str
    key: str  # "<section>.<setting>[.<sub>]"; sections: train, sample, featurize, eval
    paper: Any  # the value the source states; a frozenset = any of these
    source: str
    qdiff: Any = SAME  # the value qdiff uses when it deliberately differs
    why: str = ""


def OneOf(*values):  # noqa: N802 - reads as a value in the table
    return frozenset(values)


MOLECULE_COMMON = [
    ("train.parameterization", "velocity", D41_E + "; the network predicts v"),
    ("train.interpolant.name", "etflow", D41_E + ": x_t = t x1 + (1-t) x0 + sigma sqrt(t(1-t)) eps"),
    ("train.interpolant.sigma", 0.1, D41 + " ('noise scale sigma = 0.1'); " + ETF_QM9 + " / " + ETF_DRUGS + " sigma: 0.1"),
    ("train.betas", [0.9, 0.999], D41 + " AdamW betas (0.9, 0.999); ET-Flow etflow/models/base.py defaults beta1 to 0.95 (README Fidelity)"),
    ("train.adam_eps", 1e-8, D41 + " AdamW eps 1e-8"),
    ("train.weight_decay", 1e-8, D41 + " AdamW weight decay 1e-8; ET-Flow configs weight_decay: 1.e-8"),
    ("train.grad_clip.mode", "adaptive", D41 + " dynamic gradient clipping as in EDM and ET-Flow; ET-Flow etflow/models/base.py "
     "configure_gradient_clipping (1.5 x mean + 2 x std of recent norms)"),
    ("train.t_min", 1e-4, D41_E + ": t uniform on [1e-4, 0.9999]; ET-Flow etflow/models/model.py sample_time(low=1e-4, high=0.9999)"),
    ("train.conformer", "uniform", ETF_DATA),
    ("train.loss_reduction", "atom_l2", D41_E + " (per-atom L2 norm, not squared); " + ETF_LOSS),
    ("sample.sampler", "ode", D41 + " Euler ODE for every ET-Flow-series row"),
    ("sample.steps", 50, D41 + " 50 steps, 50 NFE"),
    ("sample.multiplier", 2, ETF_EVAL + "; paper-digest §4.1 Metrics [I]"),
    ("train.model.name", "e3nn", D41 + " (equivariant graph network, ET-Flow series)"),
    ("train.model.symmetry", "so3", SO3),
    ("train.parity_switch", "none", D41 + " (the post-hoc switch belongs to ET-Flow(O(3)) only)"),
    ("train.parameters", OneOf(*range(9_000_000, 9_200_001)), D41 + " ET-Flow(SO(3)) 9.1M parameters"),
]

ROWS: list[Row] = [
    *(Row(d, k, v, s) for d in ("geom-qm9", "geom-drugs") for k, v, s in MOLECULE_COMMON),
    # GEOM-QM9: Gaussian prior, batch 128, peak LR 7e-4, 0.5 Å
    Row("geom-qm9", "train.prior", "gaussian", D41 + " base models (GEOM-QM9: Gaussian prior); " + ETF_QM9 + " prior_type: gaussian"),
    Row("geom-qm9", "train.batch_size", 128, D41_TABLE + "; " + ETF_QM9 + " batch_size: 128"),
    Row("geom-qm9", "train.lr", 7e-4, D41_TABLE + "; " + ETF_QM9 + " lr / max_lr: 7.e-4"),
    Row("geom-qm9", "train.split", "etflow", D41 + " (processing and splits follow ET-Flow)"),
    Row("geom-qm9", "featurize.max_conformers", 30, ETF_PREP + ": train/val keep the top 30 by Boltzmann weight"),
    Row("geom-qm9", "featurize.reference_split", "etflow", ETF_PREP + ": every conformer of a test molecule is a reference"),
    Row("geom-qm9", "eval.threshold", 0.5, D41 + " Metrics (coverage at 0.5 Å on QM9)"),
    # GEOM-DRUGS: harmonic prior aligned to the data, batch 48, peak LR 5e-4, 0.75 Å
    Row("geom-drugs", "train.prior", "harmonic", D41 + " base models (GEOM-DRUGS: harmonic prior); " + ETF_DRUGS + " prior_type: harmonic"),
    Row("geom-drugs", "train.align_prior", True, D41_E + " (prior Kabsch-aligned to x1); " + ETF_MODEL),
    Row("geom-drugs", "train.batch_size", 48, D41_TABLE + "; " + ETF_DRUGS + " batch_size: 48 (per device, 8 devices; see README Fidelity)"),
    Row("geom-drugs", "train.lr", 5e-4, D41_TABLE + "; " + ETF_DRUGS + " max_lr: 5.e-4"),
    Row("geom-drugs", "train.split", "etflow", D41 + " (processing and splits follow ET-Flow)"),
    Row("geom-drugs", "featurize.max_conformers", 30, ETF_PREP + ": train/val keep the top 30 by Boltzmann weight"),
    Row("geom-drugs", "featurize.reference_split", "etflow", ETF_PREP + ": every conformer of a test molecule is a reference"),
    Row("geom-drugs", "featurize.drop_disconnected", True, D41 + " (molecules with disconnected graphs removed from DRUGS)"),
    Row("geom-drugs", "eval.threshold", 0.75, D41 + " Metrics (coverage at 0.75 Å on DRUGS)"),
    # EDM-split QM9 (not in the paper): GEOM-QM9's settings, a qdiff choice
    *(Row("qm9", k, v, QDIFF_QM9) for k, v, _ in MOLECULE_COMMON),
    Row("qm9", "train.prior", "gaussian", QDIFF_QM9),
    Row("qm9", "train.batch_size", 128, QDIFF_QM9),
    Row("qm9", "train.lr", 7e-4, QDIFF_QM9),
    Row("qm9", "eval.threshold", 0.5, QDIFF_QM9 + "; paper-digest §4.1 (0.5 Å for QM9-type molecules)"),
    # Proteins: Proteína M_FS^small, as far as qdiff's Cα transformer has the setting
    Row("pdb", "train.parameterization", "denoiser", D42 + " [E] conventions: the net predicts the clean x̂1"),
    Row("pdb", "train.interpolant.name", "linear", D42 + " [E] conventions: x_t = (1-t) x0 + t x1"),
    Row("pdb", "train.prior", "gaussian", D42 + " [E] conventions: x0 ~ N(0, I), centred"),
    Row("pdb", "train.rotation_augmentation", True, D42 + " (random-rotation augmentation kept from Proteína)"),
    Row("pdb", "train.model.self_conditioning", True, D42 + " (self-conditioning kept from Proteína)"),
    Row("pdb", "train.model.layers", 12, D42_T + " transformer layers"),
    Row("pdb", "train.model.heads", 12, D42_T + " attention heads"),
    Row("pdb", "train.model.pair_bins", 64, D42_T + " pair-distance dim on x_t"),
    Row("pdb", "train.model.max_distance", 3.0, D42_T + " pair-distance range 1-30 Å (3 nm; coordinates in nm here)"),
    Row("pdb", "train.model.dim", 512, D42_T + " sequence representation dim", qdiff=384, why=PDB_DIM),
    Row("pdb", "train.batch_size", 80, D42_TRAIN + " (global batch)"),
    Row("pdb", "train.steps", 150_000, D42_TRAIN),
    Row("pdb", "train.t_distribution", "proteina", PROTEINA_T),
    Row("pdb", "train.denoiser_weight_floor", 1e-5, PROTEINA_W),
    Row("pdb", "sample.sde_schedule", "proteina", PROTEINA_SDE + "; paper-digest §4.2 (Proteína's scheduler and g(t) kept)"),
    Row("pdb", "sample.steps", 400, D42 + " (400 steps for every model); Proteína dt 0.0025 (anchors §4c)"),
    Row("pdb", "sample.sampler", OneOf("ode", "sde"), D42 + " (ODE for distribution metrics, SDE for designability)"),
    Row("pdb", "sample.noise_scale", OneOf(0.35, 0.45, 0.50), D42 + " (noise scale gamma 0.35, 0.45 or 0.50)"),
]


@pytest.fixture(scope="module")
def study():
    """The workflow's view of the paper study: common.smk's functions over paper.yaml's sections."""
    loaded = yaml.safe_load((ROOT / "studies" / "paper.yaml").read_text())
    config = {"study": "paper", **{k: loaded[k] for k in ("data", "models", "toy") if k in loaded}}
    namespace = {"config": config}
    exec(compile((ROOT / "workflow" / "rules" / "common.smk").read_text(), "common.smk", "exec"), namespace)
    return namespace


class Wildcards(dict):
    def __getattr__(self, name):
        return self[name]


def _set_flags(text: str) -> dict:
    """`--set KEY=VALUE ...` as the CLI reads it (values parsed as YAML)."""
    from qdiff.cli import load_yaml

    words = shlex.split(text)
    out = {}
    for flag, item in zip(words[::2], words[1::2]):
        assert flag == "--set"
        key, value = item.split("=", 1)
        out[key] = load_yaml(value)
    return out


_RESOLVED: dict[str, dict] = {}


def resolved(study, dataset: str) -> dict:
    if dataset not in _RESOLVED:
        _RESOLVED[dataset] = _resolve(study, dataset)
    return _RESOLVED[dataset]


def test_settings_in_exponent_form_are_numbers():
    """YAML 1.1 (PyYAML) reads `1e-05` as a string; the workflow's JSON flags and users' YAML
    write such numbers, so qdiff reads settings as YAML 1.2 floats."""
    from qdiff.cli import load_yaml

    assert _set_flags("--set denoiser_weight_floor=1e-05 --set 'grad_clip={\"mode\": \"norm\", \"max_norm\": 5e-1}'") == {
        "denoiser_weight_floor": 1e-05, "grad_clip": {"mode": "norm", "max_norm": 0.5}}
    assert load_yaml("lr: 7e-4\nname: e5\nsteps: 10\nquoted: '1e-5'") == {"lr": 7e-4, "name": "e5", "steps": 10, "quoted": "1e-5"}


def _resolve(study, dataset: str) -> dict:
    """{section: settings} for one dataset, exactly as the workflow's commands will see them."""
    from qdiff.cli import build_parser
    from qdiff.data.featurize import DEFAULTS as FEATURIZE_DEFAULTS
    from qdiff.eval.conformers import THRESHOLDS
    from qdiff.train import resolve_config

    wc = Wildcards(dataset=dataset)
    train = resolve_config(_set_flags(study["train_settings"](wc)))
    args = build_parser().parse_args(["sample", "--run", "r", "--out", "o", *shlex.split(study["sample_flags"](wc))])
    molecules = dataset != "pdb"
    import inspect

    from qdiff.sample import sample_backbones, sample_molecules

    runner = inspect.signature(sample_molecules if molecules else sample_backbones).parameters
    flags = vars(args)
    # the flags the study gives, else the sample runner's own defaults (read, not restated)
    sample = {key: flags[key] if flags.get(key) is not None else runner[key].default
              for key in ("sampler", "steps", "noise_scale", "sde_schedule") + (("multiplier",) if molecules else ())}
    if molecules:  # the network's size, counted on the network the run builds
        from qdiff.models import count_parameters, model_from_spec

        train = {**train, "parameters": count_parameters(model_from_spec(train["model"]))}
    featurize = {**FEATURIZE_DEFAULTS.get(dataset, {}), **_set_flags(study["featurize_settings"](wc))}
    return {"train": train, "sample": sample, "featurize": featurize, "eval": {"threshold": THRESHOLDS.get(dataset)}}


def lookup(settings: dict, key: str):
    value = settings
    for part in key.split("."):
        assert isinstance(value, dict) and part in value, f"{key}: no {part!r} in the resolved settings"
        value = value[part]
    return value


def test_every_row_cites_a_source_and_explains_a_deviation():
    for row in ROWS:
        assert row.source.strip(), row
        assert (row.qdiff is SAME) == (not row.why), f"{row.dataset} {row.key}: a deviation needs `why`, and only a deviation"
    keys = [(r.dataset, r.key) for r in ROWS]
    assert len(keys) == len(set(keys)), "duplicate rows"


def test_table_covers_every_dataset_of_the_study(study):
    datasets = study["config"]["models"]["datasets"]
    assert {r.dataset for r in ROWS} == set(datasets)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.dataset}:{r.key}")
def test_paper_study_matches_its_sources(study, row):
    check_row(lookup(resolved(study, row.dataset), row.key), row)


# studies/qm9-small.yaml keeps the EDM-QM9 rows of the paper study but the network size, which the
# 2-core budget sets (stated in the study file and README "Real-data evidence").
QM9_SMALL_DEVIATIONS = ("train.parameters",)


@pytest.fixture(scope="module")
def qm9_small():
    loaded = yaml.safe_load((ROOT / "studies" / "qm9-small.yaml").read_text())
    namespace = {"config": {"study": "qm9-small", **{k: loaded[k] for k in ("data", "models", "toy") if k in loaded}}}
    exec(compile((ROOT / "workflow" / "rules" / "common.smk").read_text(), "common.smk", "exec"), namespace)
    return _resolve(namespace, "qm9")


@pytest.mark.parametrize("row", [r for r in ROWS if r.dataset == "qm9" and r.key not in QM9_SMALL_DEVIATIONS],
                         ids=lambda r: f"qm9-small:{r.key}")
def test_qm9_small_study_keeps_the_et_flow_settings(qm9_small, row):
    check_row(lookup(qm9_small, row.key), row)


def check_row(value, row: Row) -> None:
    expected = row.paper if row.qdiff is SAME else row.qdiff
    if isinstance(expected, frozenset):
        assert value in expected, f"{row.dataset} {row.key} = {value!r}, the source allows {sorted(expected)} ({row.source})"
    elif isinstance(expected, float):
        assert value == pytest.approx(expected, rel=1e-12), f"{row.dataset} {row.key} = {value!r}, expected {expected!r} ({row.source})"
    else:
        assert value == expected, f"{row.dataset} {row.key} = {value!r}, expected {expected!r} ({row.source})"
