"""What differs between molecules and backbones during training and sampling: the dataset, the
collate, how the network is called, and the prior. Chosen from the store's schema."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .data.dataset import BackboneDataset, ConformerDataset, collate_backbones, collate_molecules
from .data.info import store_schema
from .diffusion import PriorSpectrum, gaussian_prior, harmonic_prior, harmonic_spectrum
from .geometry import center


@dataclass
class MoleculeTask:
    """Conformers of molecular graphs; equivariant networks (no augmentation needed)."""

    prior: str = "gaussian"
    conformer: str = "uniform"  # training conformer draw (see ConformerDataset); ET-Flow: uniform
    kind = "molecules"
    equivariant = True

    def dataset(self, store, split, part, seed):
        return ConformerDataset(store, split, part, conformer=self.conformer, seed=seed)

    collate = staticmethod(collate_molecules)

    def clean(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return center(batch["pos"].double(), batch["mask"]).float(), batch["mask"]

    @staticmethod
    def adjacency(batch) -> Tensor:
        """The bond graph [B, N, N] of a collated batch (1 for a bond, either direction)."""
        B, N = batch["mask"].shape
        adj = torch.zeros(B, N, N, device=batch["mask"].device)
        idx = batch["bond_index"]
        if idx.numel():
            b, i, j = idx[:, 0] // N, idx[:, 0] % N, idx[:, 1] % N
            adj[b, i, j] = 1.0
            adj[b, j, i] = 1.0
        return adj

    def sample_prior(self, batch, x1: Tensor, generator, align: bool, z: Tensor | None = None) -> Tensor:
        if self.prior == "harmonic":
            return harmonic_prior(self.adjacency(batch), batch["mask"], align_to=x1 if align else None, generator=generator, z=z)
        return gaussian_prior(x1.shape, batch["mask"], generator=generator, dtype=x1.dtype, z=z)

    def prior_spectrum(self, batch) -> PriorSpectrum:
        """The prior's covariance (what turns a velocity into a score): harmonic or isotropic."""
        if self.prior == "harmonic":
            return harmonic_spectrum(self.adjacency(batch), batch["mask"])
        return PriorSpectrum()

    def predict(self, model, batch, x: Tensor, t: Tensor, self_cond=None) -> Tensor:
        return model(batch, x, t)


@dataclass
class BackboneTask:
    """Cα backbones; a non-equivariant transformer trained with random-rotation augmentation."""

    prior: str = "gaussian"
    max_length: int | None = 256
    kind = "backbones"
    equivariant = False

    def dataset(self, store, split, part, seed):
        return BackboneDataset(store, split, part, max_length=self.max_length, seed=seed)

    collate = staticmethod(collate_backbones)

    def clean(self, batch):
        return batch["pos"], batch["mask"]

    def sample_prior(self, batch, x1, generator, align, z=None):
        return gaussian_prior(x1.shape, batch["mask"], generator=generator, dtype=x1.dtype, z=z)

    def predict(self, model, batch, x, t, self_cond=None):
        return model(x, t, batch["mask"], self_cond)


# The kind of store each network takes (qdiff.models.MODELS).
MODEL_KINDS = {"egnn": "molecules", "e3nn": "molecules", "backbone-transformer": "backbones"}


def check_pairing(model: dict, task, store, prior: str = "gaussian") -> None:
    """InputFileError when the network (or prior) cannot take the store's kind: an EGNN on a protein
    store, a backbone transformer on molecules, a harmonic (bond-graph) prior on backbones."""
    from .errors import InputFileError

    name = model.get("name")
    kind = MODEL_KINDS.get(name)
    if kind is not None and kind != task.kind:
        fits = sorted(n for n, k in MODEL_KINDS.items() if k == task.kind)
        raise InputFileError(f"{store}: a store of {task.kind}, but model {name!r} is a network for {kind}; "
                             f"use a {kind} store or a {task.kind} model ({', '.join(fits)})")
    if prior == "harmonic" and task.kind != "molecules":
        raise InputFileError(f"{store}: a store of {task.kind}; prior 'harmonic' needs molecules (their bond graph); use prior: gaussian")


def task_for(store, prior: str = "gaussian", max_length: int | None = 256, conformer: str = "uniform"):
    schema = store_schema(store)
    if schema == "qdiff.molecules":
        return MoleculeTask(prior, conformer)
    if schema == "qdiff.proteins":
        return BackboneTask(prior, max_length)
    from .errors import InputFileError

    raise InputFileError(f"{store}: a store of schema {schema!r}; training and sampling take a molecule or protein store "
                         "(`qdiff featurize`)")
