"""`qdiff sample`: generate conformers or Cα backbones with a trained run into a samples store.

Molecules: for each molecule of the run's test split (the whole store, training molecules
included, only when asked with `all_molecules` / `--all-molecules`, and recorded), `multiplier` x
(number of reference conformers) samples (ET-Flow's protocol uses 2), batched over molecules, into
a store of schema `qdiff.samples.molecules` (/molecules/source_row = the reference row) and an SDF
file beside it (every sample with the molecule's bonds). With the run's `parity_switch: post_hoc`
(the default for reflection-equivariant networks) a conformer whose tetrahedral centres contradict
the reference's chiral tags is mirrored before it is written (ET-Flow; qdiff.eval.chirality); the
store's settings record the switch and its attrs the number mirrored.

Backbones: `per_length` chains for each length (by default the lengths of the reference test
split, capped at the run's max_length) into a store of schema `qdiff.samples.proteins`
(/chains/source_row = the reference chain whose length was taken, -1 for explicit lengths) and a
folder of Cα-only PDB files.

The sampler's geometry follows the training treatment (quotient: horizontal projection and, for
the SDE, the curvature drift with the minus sign). `align_to_xt` adds the Boltz/AF3-style
alignment at each step: the implied clean structure x̂1 is Kabsch-rotated onto x_t before the
update (equal, up to one global rotation, to aligning x_t onto x̂1).

The SDE takes any run: a denoiser gives the score through Eq. 4; a velocity model through the
prior's covariance (isotropic Gaussian, or the harmonic prior's inverse bond Laplacian:
`qdiff.diffusion.denoiser_and_score_from_velocity`). `sde_schedule` `eta` is qdiff's
temperature-1 SDE (η_t = noise_scale · α̂_t²); `proteina` is Proteína's (g(t) = 1/(t + 0.01), its
log time grid, ODE steps after t = 0.99, noise_scale = its γ scaling the noise only: low
temperature for γ < 1).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data.molecule_store import SAMPLES_SCHEMA, MoleculeStore, MoleculeStoreWriter
from .data.protein_store import PROTEIN_SAMPLES_SCHEMA, ProteinStore, ProteinStoreWriter
from .data.records import MoleculeRecord
from .data.ca_pdb import write_ca_pdb
from .data.sdf import write_sdf  # noqa: F401 (re-exported: qdiff.sample.write_sdf)
from .data.residues import CA
from .data.sources.mmcif import ChainRecord, StructureRecord
from .diffusion import (
    PriorSpectrum,
    denoiser_noise_schedule,
    fields_from_denoiser,
    fields_from_velocity,
    gaussian_prior,
    interpolant_from_spec,
    proteina_noise_schedule,
    proteina_time_grid,
    sample_ode,
    sample_sde,
    sampler_geometry,
)
from .eval.chirality import chiral_centres, parity_switch, resolve_parity_switch
from .geometry import kabsch_align
from .models import compile_network, model_from_spec
from .progress import progress_bar
from .tasks import check_pairing, task_for
from .errors import CorruptArtifactError, EmptyResultError, InputFileError, SettingsError, is_out_of_memory
from .atomic import check_not_an_input, clear_outputs
from .data.identity import describe, store_identity
from .settings import check_declared
from .train import network_autocast, read_artifact, resolve_device


def load_run(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(EMA model in eval mode on `device`, training config, store path, the store's identity when
    trained: a dict, or None for a run written before identities were recorded) of a finished run."""
    path = Path(run_dir) / "model.pt"
    if not Path(run_dir).is_dir():
        raise InputFileError(f"{run_dir}: no such run folder; pass the --out folder of `qdiff train`")
    if not path.is_file():
        raise InputFileError(f"{path}: no finished model; run (or resume) `qdiff train` first")
    remedy = f"delete {path} and re-run the same `qdiff train` command (it resumes from the last checkpoint and rewrites it)"
    state = read_artifact(path, "model file", remedy, ("ema", "config", "store"))
    try:
        config = json.loads(state["config"])
        model = model_from_spec(config["model"])
        model.load_state_dict(state["ema"])
        if hasattr(model, "set_backend"):
            model.set_backend(_available_backend(config.get("backend", "auto"), path))
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        if is_out_of_memory(err):
            raise
        raise CorruptArtifactError(path, "model file", err, remedy) from err
    store = Path(state["store"])
    if not store.is_absolute() and not store.exists():
        # runs from before stores were recorded resolved: the path as typed, relative to where train ran
        raise InputFileError(f"{path}: records its store as the relative path {store}, not found from {Path.cwd()}; "
                             "run `qdiff sample` from the folder where the run was trained, or pass --store")
    identity = json.loads(state["store_identity"]) if "store_identity" in state else None
    return model.to(device).eval(), config, store, identity


def _available_backend(backend: str, path: Path) -> str:
    """The run's tensor-product backend, or e3nn with a warning when the run asked for cuEquivariance
    and this machine lacks it (same weights, outputs equal to rounding: qdiff.models.cueq)."""
    from .models.cueq import cueq_available

    if backend == "cueq" and not cueq_available():
        warnings.warn(f"{path} was trained with backend cueq, which is not installed here: sampling with e3nn "
                      "(same outputs to float rounding); pip install 'qdiff[cuda]' to use cuEquivariance", stacklevel=3)
        return "e3nn"
    return backend


def sampled_store(run_dir, trained_on: Path, trained: dict | None, store: str | Path | None) -> tuple[Path, dict]:
    """(store to sample for, its identity). Without an explicit `store` it is the one the run was
    trained on, which must still be the same version: a store rewritten since (a dataset update)
    is an InputFileError, not samples of an old model labelled with the new data."""
    chosen = Path(store) if store else trained_on
    identity = store_identity(chosen)
    if store is None and trained is not None and trained["content_sha256"] != identity["content_sha256"]:
        raise InputFileError(f"{Path(run_dir) / 'model.pt'} was trained on {describe(trained)}, but {chosen} is now "
                             f"{describe(identity)} (rewritten since, e.g. by a dataset update): re-run `qdiff train` with the "
                             f"same --out (it starts over on the new store), or pass --store {chosen} to sample this model for it anyway")
    return chosen, identity


def _record_stores(writer, reference: dict, trained: dict | None) -> None:
    """Which store versions the samples belong to: the reference (source_row indexes it) and the
    store the model was trained on."""
    writer.attrs["reference_store_sha256"] = reference["content_sha256"]
    writer.attrs["trained_on"] = json.dumps(trained or {}, sort_keys=True)


class NetworkCall:
    """The sampler's view of a network: (x, t, mask) -> output in fp64-compatible dtype.

    Holds the last implied clean structure for self-conditioning (models that take it) and, with
    `align_to_xt`, rotates the implied x̂1 onto x_t before returning the (re-derived) output.
    """

    def __init__(self, forward: Callable, parameterization: str, self_conditioning: bool, align_to_xt: bool,
                 precision: str = "fp32"):
        self.forward, self.parameterization = forward, parameterization
        self.self_conditioning, self.align_to_xt, self.precision = self_conditioning, align_to_xt, precision
        self.previous: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        sc = self.previous if self.self_conditioning else None
        with network_autocast(self.precision, x.device.type):  # the sampler's own updates stay in fp32/fp64
            out = self.forward(x.float(), t.float(), sc).float()
        out = out.to(x.dtype)
        velocity = self.parameterization == "velocity"
        gap = (1 - t).view(-1, 1, 1).to(x.dtype)
        clean = x + gap * out if velocity else out
        if self.align_to_xt:
            clean = kabsch_align(clean, x, mask)
            out = (clean - x) / gap.clamp_min(1e-6) if velocity else clean
        self.previous = clean.float().detach()
        return out


SDE_SCHEDULES = ("eta", "proteina")


def _run_sampler(call: NetworkCall, config: dict, x0: torch.Tensor, mask: torch.Tensor, *, sampler: str, steps: int,
                 noise_scale: float, generator: torch.Generator, sde_schedule: str = "eta",
                 prior: PriorSpectrum | None = None):
    """ODE or SDE sampling with the run's interpolant and treatment geometry. A velocity model's
    score comes from `prior` (the prior covariance of this batch; None: isotropic Gaussian)."""
    interpolant = interpolant_from_spec(config["interpolant"])
    geometry = sampler_geometry(config["treatment"])
    if config["parameterization"] == "denoiser":
        fields = fields_from_denoiser(call, interpolant)
    else:
        fields = fields_from_velocity(call, interpolant, prior)
    if sampler == "ode":
        return sample_ode(fields, x0, steps=steps, mask=mask, geometry=geometry)
    if sde_schedule == "proteina":
        return sample_sde(fields, x0, steps=steps, mask=mask, geometry=geometry, eta=proteina_noise_schedule(),
                          noise_scale=noise_scale, grid=proteina_time_grid(steps), generator=generator)
    return sample_sde(fields, x0, steps=steps, mask=mask, geometry=geometry,
                      eta=denoiser_noise_schedule(interpolant, noise_scale), generator=generator)


def _check_sampler(config: dict, sampler: str, sde_schedule: str = "eta") -> None:
    if sampler not in ("ode", "sde"):
        raise ValueError(f"sampler {sampler!r}: choose ode or sde")
    if sde_schedule not in SDE_SCHEDULES:
        raise ValueError(f"sde_schedule {sde_schedule!r}: choose one of {SDE_SCHEDULES}")
    if sampler == "sde" and config["prior"] not in ("gaussian", "harmonic"):
        raise ValueError(f"SDE sampling needs a Gaussian or harmonic prior, not {config['prior']!r}; use --sampler ode")


def _settings(run_dir, config, **kw) -> dict:
    return {"run": str(run_dir), "treatment": config["treatment"], "geometry": sampler_geometry(config["treatment"]),
            "split": config["split"], **kw}


def reference_dataset(task, store, config: dict, seed: int, all_molecules: bool):
    """(dataset, description) of the rows to sample for: the run's test split, or, only when
    `all_molecules` is given, every row of the store (training rows included). A run without a
    split has no test rows: that is an error naming the two fixes, never a silent fallback."""
    if config["split"] and not all_molecules:
        return task.dataset(store, config["split"], "test", seed), f"split {config['split']}: test"
    if not all_molecules:
        raise ValueError(f"the run was trained without a split (split: null), so it has no test {task.kind}; "
                         "train with a split (e.g. --set split=random) or, to sample every entry of the store "
                         "including the training ones, pass --all-molecules (recorded in the samples)")
    return task.dataset(store, None, "train", seed), "all rows of the store (training rows included: --all-molecules)"


def _reference_conformers(store: MoleculeStore, split: str | None) -> str:
    """How many conformers the reference molecules carry, as the featurizer recorded it on the
    split (GEOM: "all" for the reference split's test part, ET-Flow's protocol)."""
    return str(store.split_attrs(split).get("test_conformers", "as stored")) if split else "as stored"


def pack_molecules(counts: list[int], sizes: list[int], max_clouds: int, max_pairs: int) -> list[list[int]]:
    """Groups of molecule indices for padded batches: molecules sorted by atom count; a group is
    closed when adding the next molecule would exceed `max_clouds` clouds or `max_pairs` padded
    atom pairs (clouds x N_max², what dense networks cost). A molecule over either budget on its
    own still gets a group of its own."""
    groups: list[list[int]] = []
    current: list[int] = []
    for j in sorted(range(len(counts)), key=lambda i: (sizes[i], i)):
        trial = current + [j]
        clouds = sum(counts[i] for i in trial)
        if current and (clouds > max_clouds or clouds * max(sizes[i] for i in trial) ** 2 > max_pairs):
            groups.append(current)
            trial = [j]
        current = trial
    if current:
        groups.append(current)
    return groups


@torch.no_grad()
def sample_molecules(run_dir, out, *, sampler: str = "ode", steps: int = 50, seed: int = 0, multiplier: int = 2,
                     max_molecules: int | None = None, noise_scale: float = 1.0, sde_schedule: str = "eta", store: str | Path | None = None,
                     batch_samples: int = 512, batch_pairs: int | None = None, align_to_xt: bool = False, device: str = "auto", sdf: bool = True,
                     compile: bool | str = False, precision: str = "fp32", all_molecules: bool = False, progress: bool = True) -> dict:
    """Conformers for the test molecules (every molecule only with `all_molecules`), packed by `pack_molecules` into padded batches of at most
    `batch_samples` clouds and `batch_pairs` padded atom pairs (default 2^16 on CPU, where small
    batches stay in cache: 16 s instead of 80 s at 2^20 for 20 drug-like molecules x 20 conformers;
    2^22 on GPUs). `compile`: torch.compile the network (true or a backend name); `precision`
    bf16: autocast around the network only."""
    check_declared({"sampler": sampler, "steps": steps, "noise_scale": noise_scale, "sde_schedule": sde_schedule, "multiplier": multiplier,
                    "max_molecules": max_molecules, "precision": precision}, "sample")  # qdiff/schemas/sample.schema.yaml
    device = resolve_device(device)
    model, config, trained_on, trained = load_run(run_dir, device)
    net = compile_network(model, compile) if compile else model
    _check_sampler(config, sampler, sde_schedule)
    store, reference = sampled_store(run_dir, trained_on, trained, store)
    task = task_for(store, config["prior"], config["max_length"])
    if task.kind != "molecules":
        raise ValueError(f"{store}: not a molecule store; backbone runs sample with sample_backbones")
    gen = torch.Generator().manual_seed(seed)
    dataset, molecules = reference_dataset(task, store, config, seed, all_molecules)
    rows = dataset.rows[:max_molecules] if max_molecules else dataset.rows
    if len(rows) == 0:
        raise EmptyResultError(f"{store}: no molecules to sample for ({molecules} is empty); choose another split or re-featurize")
    scale = config.get("coord_scale", 1.0)
    nfe, path_lengths = 0, []
    with MoleculeStore(store) as ref:
        references = _reference_conformers(ref, None if all_molecules else config["split"])
    # runs from before the setting: "auto" (post_hoc for reflection-equivariant networks)
    parity = resolve_parity_switch(config["model"], config.get("parity_switch", "auto"))
    mirrored = 0
    # ET-Flow scripts/eval.py: 2 x (number of reference conformers) per test molecule.
    settings = _settings(run_dir, config, sampler=sampler, steps=steps, seed=seed, multiplier=multiplier, precision=precision,
                         noise_scale=noise_scale, sde_schedule=sde_schedule, align_to_xt=align_to_xt, molecules=molecules,
                         all_molecules=bool(all_molecules), reference_conformers=references, parity_switch=parity)
    sdf_path = Path(out).with_suffix(".sdf")
    check_not_an_input(out, store)
    check_not_an_input(sdf_path, store, flag="the SDF beside --out")
    clear_outputs(out, sdf_path)  # a rerun starts clean: no store or SDF of an earlier run beside the new ones
    with MoleculeStore(store) as ref, MoleculeStoreWriter(
        out, dataset=ref.attrs["dataset"], source=f"qdiff sample of {Path(run_dir).name}", schema=SAMPLES_SCHEMA, settings=settings,
    ) as writer:
        counts = [multiplier * int(ref.conf_ptr[int(r) + 1] - ref.conf_ptr[int(r)]) for r in rows]
        sizes = [int(ref.atom_ptr[int(r) + 1] - ref.atom_ptr[int(r)]) for r in rows]
        done: dict[int, MoleculeRecord] = {}
        bar = progress_bar(total=len(rows), desc="sample", unit="mol", enabled=progress)
        pairs = batch_pairs or (2**22 if device.type == "cuda" else 2**16)
        for group in pack_molecules(counts, sizes, batch_samples, pairs):
            items = [dataset[j] for j in group for _ in range(counts[j])]
            batch = {key: v.to(device) for key, v in task.collate(items).items()}
            call = NetworkCall(lambda x, t, sc: net(batch, x, t), config["parameterization"], False, align_to_xt, precision)
            x0 = torch.zeros(batch["pos"].shape, device=device)
            start = 0
            for j in group:  # per-molecule prior draws: ODE samples do not depend on the batching
                one = {key: v.to(device) for key, v in task.collate([dataset[j]] * counts[j]).items()}
                x0[start : start + counts[j], : sizes[j]] = task.sample_prior(one, torch.zeros(one["pos"].shape, device=device), gen, align=False)
                start += counts[j]
            prior = task.prior_spectrum(batch) if sampler == "sde" else None
            result = _run_sampler(call, config, x0, batch["mask"], sampler=sampler, steps=steps, noise_scale=noise_scale, generator=gen,
                                  sde_schedule=sde_schedule, prior=prior)
            nfe += result.nfe * len(group)
            path_lengths += result.path_length.tolist()
            start = 0
            for j in group:
                mol, n = ref.molecule(int(rows[j])), counts[j]
                positions = (result.x[start : start + n, : sizes[j]] / scale).cpu().numpy().astype(np.float32)
                start += n
                if parity == "post_hoc":  # ET-Flow: mirror conformers whose centres contradict the chiral tags
                    positions, flipped = parity_switch(positions, chiral_centres(mol["atoms"]["chiral_tag"], mol["bond_index"]))
                    mirrored += int(flipped.sum())
                done[j] = MoleculeRecord(id=mol["id"], smiles=mol["smiles"], atoms=mol["atoms"], bond_index=mol["bond_index"],
                                         bonds=mol["bonds"], positions=positions, weights=np.ones(n, np.float32), energies=np.full(n, np.nan))
            bar.update(len(group))
        bar.close()
        for j in range(len(rows)):  # the store keeps the test split's order
            writer.add(done[j], source_row=int(rows[j]))
        records = [done[j] for j in range(len(rows))] if sdf else []
        summary = {"molecules": len(rows), "nfe": nfe // max(len(rows), 1),
                   "mean_path_length": float(np.mean(path_lengths)) if path_lengths else float("nan"),
                   "parity_switch": parity, "mirrored": mirrored}
        writer.attrs["nfe_per_sample"] = summary["nfe"]
        writer.attrs["mean_path_length"] = summary["mean_path_length"]
        writer.attrs["mirrored_by_parity_switch"] = mirrored
        writer.attrs["reference_store"] = str(store)
        _record_stores(writer, reference, trained)
        if sdf:  # before the store is committed: a samples store means its SDF is complete
            summary["sdf"] = str(sdf_path)
            summary["sdf_entries"] = write_sdf(records, sdf_path)
    return summary


def backbone_lengths(store: str | Path, config: dict, seed: int, max_chains: int | None,
                     all_molecules: bool = False) -> list[tuple[int, int]]:
    """(length, reference chain row) for the reference test split (the whole store only with
    `all_molecules`), lengths capped at the run's max_length."""
    task = task_for(store, config["prior"], config["max_length"])
    dataset, _ = reference_dataset(task, store, config, seed, all_molecules)
    rows = dataset.rows[:max_chains] if max_chains else dataset.rows
    with ProteinStore(store) as ref:
        lengths = ref.chain_lengths()
    cap = config["max_length"] or 10**9
    return [(int(min(lengths[int(r)], cap)), int(r)) for r in rows]


@torch.no_grad()
def sample_backbones(run_dir, out, *, lengths: list[int] | None = None, per_length: int = 1, sampler: str = "ode",
                     steps: int = 400, seed: int = 0, noise_scale: float = 0.45, sde_schedule: str = "proteina", max_chains: int | None = None,
                     batch_size: int = 64, align_to_xt: bool = False, device: str = "auto", pdb_dir: str | Path | None = None,
                     store: str | Path | None = None, compile: bool | str = False, precision: str = "fp32",
                     all_molecules: bool = False, progress: bool = True) -> dict:
    """`per_length` Cα chains per length; coordinates returned to Å (÷ coord_scale). Lengths default
    to the test split's (every chain of the store only with `all_molecules`)."""
    check_declared({"sampler": sampler, "steps": steps, "noise_scale": noise_scale, "sde_schedule": sde_schedule, "lengths": lengths,
                    "per_length": per_length, "max_chains": max_chains, "precision": precision}, "sample")
    device = resolve_device(device)
    model, config, trained_on, trained = load_run(run_dir, device)
    net = compile_network(model, compile) if compile else model
    _check_sampler(config, sampler, sde_schedule)
    store, reference = sampled_store(run_dir, trained_on, trained, store)
    if lengths:
        if min(lengths) < 2:
            raise ValueError(f"backbone lengths must be >= 2, got {min(lengths)}")
        jobs = [(int(n), -1) for n in lengths]
        chains = "explicit lengths"
    else:
        jobs = backbone_lengths(store, config, seed, max_chains, all_molecules)
        chains = ("all rows of the store (training rows included: --all-molecules)" if all_molecules
                  else f"split {config['split']}: test")
    jobs = [job for job in jobs for _ in range(per_length)]
    if not jobs:
        raise EmptyResultError(f"{store}: no chains to sample for ({chains} is empty); pass --lengths or choose another split")
    gen = torch.Generator().manual_seed(seed)
    scale = config.get("coord_scale", 1.0)
    pdb_dir = Path(pdb_dir) if pdb_dir else Path(out).with_suffix("")
    check_not_an_input(out, store)
    pdb_tmp = _fresh_pdb_folder(pdb_dir)
    clear_outputs(out)  # a rerun starts clean: no store of an earlier run beside the new PDB folder
    shutil.rmtree(pdb_dir, ignore_errors=True)  # only sample PDBs of an earlier run (checked above)
    sc = bool(getattr(model, "self_conditioning", False))
    settings = _settings(run_dir, config, sampler=sampler, steps=steps, seed=seed, per_length=per_length, precision=precision,
                         noise_scale=noise_scale, sde_schedule=sde_schedule, align_to_xt=align_to_xt, lengths_from=chains,
                         all_molecules=bool(all_molecules))
    with ProteinStore(store) as ref:
        dataset_name = ref.attrs["dataset"]
    nfe, path_lengths, source_rows, pdb_skipped = 0, [], [], {}
    try:
        with ProteinStoreWriter(out, dataset=dataset_name, source=f"qdiff sample of {Path(run_dir).name}",
                                settings=settings, schema=PROTEIN_SAMPLES_SCHEMA) as writer:
            order = sorted(range(len(jobs)), key=lambda i: jobs[i][0])  # similar lengths share a batch
            for start in progress_bar(range(0, len(order), batch_size), desc="sample", unit="batch", enabled=progress):
                chunk = order[start : start + batch_size]
                L = max(jobs[i][0] for i in chunk)
                mask = torch.zeros(len(chunk), L, dtype=torch.bool, device=device)
                for b, i in enumerate(chunk):
                    mask[b, : jobs[i][0]] = True
                call = NetworkCall(lambda x, t, s: net(x, t, mask, s), config["parameterization"], sc, align_to_xt, precision)
                x0 = gaussian_prior((len(chunk), L, 3), mask, generator=gen, device=device)
                result = _run_sampler(call, config, x0, mask, sampler=sampler, steps=steps, noise_scale=noise_scale, generator=gen,
                                      sde_schedule=sde_schedule)
                nfe += result.nfe * len(chunk)
                path_lengths += result.path_length.tolist()
                xs = (result.x / scale).cpu().numpy().astype(np.float32)
                for b, i in enumerate(chunk):
                    n, source_row = jobs[i]
                    name = f"sample{i:05d}_L{n}"
                    atom_pos = np.zeros((n, 37, 3), np.float32)
                    atom_pos[:, CA] = xs[b, :n]
                    atom_mask = np.zeros((n, 37), bool)
                    atom_mask[:, CA] = True
                    chain = ChainRecord(id=f"{name}_A", entity="1", aatype=np.full(n, 20, np.uint8), resnum=np.arange(1, n + 1, dtype=np.int32),
                                        icode=np.full(n, b" ", "S1"), atom_pos=atom_pos, atom_mask=atom_mask,
                                        b_factor=np.zeros((n, 37), np.float16), break_before=np.zeros(n, bool))
                    writer.add(StructureRecord(name, "generated", float("nan"), "", "", "", "", [chain]), source_row=source_row)
                    source_rows.append(source_row)
                    try:
                        write_ca_pdb(xs[b, :n], pdb_tmp / f"{name}.pdb")
                    except ValueError as err:  # e.g. a diverged sample: kept in the store, skipped as PDB, recorded
                        pdb_skipped[name] = str(err)
            summary = {"backbones": len(jobs), "nfe": nfe // max(len(jobs), 1), "pdb_dir": str(pdb_dir),
                       "mean_path_length": float(np.mean(path_lengths)) if path_lengths else float("nan"),
                       "pdb_skipped": pdb_skipped}
            writer.attrs["pdb_skipped"] = json.dumps(pdb_skipped)
            _replace_pdb_folder(pdb_tmp, pdb_dir)  # before the store is committed: a store means its PDB folder is complete
            writer.attrs["nfe_per_sample"] = summary["nfe"]
            writer.attrs["mean_path_length"] = summary["mean_path_length"]
            writer.attrs["reference_store"] = str(store)
            _record_stores(writer, reference, trained)
    except BaseException:
        shutil.rmtree(pdb_tmp, ignore_errors=True)  # nothing half-written left behind
        raise
    return summary


_PDB_NAME = re.compile(r"sample\d+_L\d+\.pdb")


def _fresh_pdb_folder(pdb_dir: Path) -> Path:
    """An empty `<pdb_dir>.tmp` to write into (a killed run's leftovers removed). `pdb_dir` itself
    may hold only sample PDB files of an earlier run (replaced at the end), nothing else."""
    if pdb_dir.exists():
        if not pdb_dir.is_dir():
            raise SettingsError(f"--pdb-dir {pdb_dir}: a file, not a folder")
        other = sorted(p.name for p in pdb_dir.iterdir() if not _PDB_NAME.fullmatch(p.name))
        if other:
            raise SettingsError(f"--pdb-dir {pdb_dir}: holds other files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); "
                                "sampling replaces the folder, so choose a new or empty one")
    tmp = pdb_dir.with_name(pdb_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _replace_pdb_folder(tmp: Path, pdb_dir: Path) -> None:
    """`tmp` becomes `pdb_dir`; the PDB files of an earlier run there go (no stale files beside new ones)."""
    if pdb_dir.exists():
        shutil.rmtree(pdb_dir)
    os.replace(tmp, pdb_dir)


def sample(run_dir, out, **options) -> dict:
    """Dispatch on the run's store: molecules -> sample_molecules, proteins -> sample_backbones.
    Options that do not apply to the run's kind are ignored when None. The settings among them
    (qdiff/schemas/sample.schema.yaml) are checked before anything is read."""
    check_declared(options, "sample")
    _, config, trained_on, _ = load_run(run_dir)
    store = options.get("store") or trained_on
    task = task_for(store, config["prior"], config["max_length"])
    check_pairing(config["model"], task, store, config["prior"])
    kind = task.kind
    keep = {
        "molecules": {"sampler", "steps", "seed", "multiplier", "max_molecules", "noise_scale", "sde_schedule", "store", "batch_samples",
                      "align_to_xt", "device", "sdf", "compile", "precision", "all_molecules", "progress"},
        "backbones": {"lengths", "per_length", "sampler", "steps", "seed", "noise_scale", "sde_schedule", "max_chains", "batch_size",
                      "align_to_xt", "device", "pdb_dir", "store", "compile", "precision", "all_molecules", "progress"},
    }[kind]
    ignored = sorted(k for k, v in options.items() if k not in keep and v is not None)
    if ignored:
        raise ValueError(f"options {ignored} do not apply to a {kind} run")
    options = {k: v for k, v in options.items() if k in keep and v is not None}
    fn = sample_molecules if kind == "molecules" else sample_backbones
    return {"kind": kind, **fn(run_dir, out, **options)}
