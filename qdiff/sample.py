"""`qdiff sample`: generate conformers (or backbones) with a trained run into a samples store.

Molecules: for each molecule of the run's test split (or of the whole store), `multiplier` x
(number of reference conformers) samples (ET-Flow's protocol uses 2), written to a store of schema
`qdiff.samples.molecules` with /molecules/source_row pointing at the reference row. The sampler's
geometry follows the training treatment (quotient: horizontal projection and, for the SDE, the
curvature drift with the minus sign). The SDE needs a denoiser-parameterized model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data.molecule_store import SAMPLES_SCHEMA, MoleculeStore, MoleculeStoreWriter
from .data.records import MoleculeRecord
from .diffusion import denoiser_noise_schedule, fields_from_denoiser, fields_from_velocity, interpolant_from_spec, sample_ode, sample_sde, sampler_geometry
from .models import model_from_spec
from .progress import progress_bar
from .tasks import task_for


def load_run(run_dir: str | Path):
    """(EMA model in eval mode, training config, store path) of a finished run."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no finished model; run (or resume) `qdiff train` first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = json.loads(state["config"])
    model = model_from_spec(config["model"])
    model.load_state_dict(state["ema"])
    return model.eval(), config, Path(state["store"])


@torch.no_grad()
def sample_molecules(run_dir, out, *, sampler: str = "ode", steps: int = 50, seed: int = 0, multiplier: int = 2,
                     max_molecules: int | None = None, noise_scale: float = 1.0, store: str | Path | None = None,
                     progress: bool = True) -> dict:
    model, config, trained_on = load_run(run_dir)
    store = Path(store) if store else trained_on
    task = task_for(store, config["prior"], config["max_length"])
    if task.kind != "molecules":
        raise ValueError("sample_molecules needs a molecule store")
    interpolant = interpolant_from_spec(config["interpolant"])
    if sampler == "sde" and (config["parameterization"] != "denoiser" or config["prior"] != "gaussian"):
        raise ValueError("SDE sampling needs a denoiser-parameterized model with a Gaussian prior; use --sampler ode")
    geometry = sampler_geometry(config["treatment"])
    gen = torch.Generator().manual_seed(seed)
    dataset = task.dataset(store, config["split"], "test", seed) if config["split"] else task.dataset(store, None, "train", seed)
    rows = dataset.rows[:max_molecules] if max_molecules else dataset.rows
    scale = config.get("coord_scale", 1.0)
    nfe_total, path_lengths = 0, []
    with MoleculeStore(store) as ref, MoleculeStoreWriter(
        out, dataset=ref.attrs["dataset"], source=f"qdiff sample of {Path(run_dir).name}", schema=SAMPLES_SCHEMA,
        settings={"run": str(run_dir), "sampler": sampler, "steps": steps, "seed": seed, "multiplier": multiplier,
                  "treatment": config["treatment"], "geometry": geometry, "noise_scale": noise_scale},
    ) as writer:
        for k in progress_bar(range(len(rows)), desc="sample", unit="mol", enabled=progress):
            row = int(rows[k])
            mol = ref.molecule(row)
            n = multiplier * mol["positions"].shape[0]
            item = dataset[k]
            batch = task.collate([item] * n)

            def net(x, t, mask):
                return model(batch, x.float(), t.float()).to(x.dtype)

            x1_shape = batch["pos"].shape
            x0 = task.sample_prior(batch, torch.zeros(x1_shape), gen, align=False)
            if config["parameterization"] == "denoiser":
                fields = fields_from_denoiser(net, interpolant)
            else:
                fields = fields_from_velocity(net)
            if sampler == "ode":
                result = sample_ode(fields, x0, steps=steps, mask=batch["mask"], geometry=geometry)
            else:
                result = sample_sde(fields, x0, steps=steps, mask=batch["mask"], geometry=geometry,
                                    eta=denoiser_noise_schedule(interpolant, noise_scale), generator=gen)
            nfe_total += result.nfe
            path_lengths += result.path_length.tolist()
            positions = (result.x / scale).numpy().astype(np.float32)
            record = MoleculeRecord(id=mol["id"], smiles=mol["smiles"], atoms=mol["atoms"], bond_index=mol["bond_index"],
                                    bonds=mol["bonds"], positions=positions, weights=np.ones(n, np.float32), energies=np.full(n, np.nan))
            writer.add(record, source_row=row)
        writer.attrs["nfe_per_sample"] = nfe_total // max(len(rows), 1)
        writer.attrs["mean_path_length"] = float(np.mean(path_lengths)) if path_lengths else float("nan")
        writer.attrs["reference_store"] = str(store)
    return {"molecules": len(rows), "nfe": nfe_total // max(len(rows), 1), "mean_path_length": float(np.mean(path_lengths)) if path_lengths else float("nan")}
