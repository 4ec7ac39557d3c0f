"""Splits as explicit molecule-ID lists (per molecule, never per conformer)."""
from __future__ import annotations

import numpy as np


def random_split(ids: list[str], fractions: list[float], seed: int) -> dict[str, list[str]]:
    """Shuffle IDs (sorted first, so input order does not matter) with numpy's PCG64(seed) and cut
    into train/val/test by `fractions` (rounded down; the remainder goes to train)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    ordered = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_val, n_test = int(fractions[1] * len(ordered)), int(fractions[2] * len(ordered))
    n_train = len(ordered) - n_val - n_test
    cut = np.split(perm, [n_train, n_train + n_val])
    return {name: [ordered[i] for i in idx] for name, idx in zip(("train", "val", "test"), cut)}


def split_from_index_file(sorted_names: list[str], indices: np.ndarray) -> dict[str, list[str]]:
    """GeoMol / torsional-diffusion `split.npy` ([train, val, test] indices into the sorted pickle
    list) converted to explicit names."""
    if len(indices) != 3:
        raise ValueError(f"split file must hold three index arrays, got {len(indices)}")
    out = {}
    for name, idx in zip(("train", "val", "test"), indices):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(sorted_names)):
            raise ValueError(f"split {name}: index out of range for {len(sorted_names)} pickles")
        out[name] = [sorted_names[i] for i in idx]
    return out
