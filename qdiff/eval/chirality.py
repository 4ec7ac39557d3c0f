"""Chirality: ET-Flow's post-hoc parity switch and the stereo-correct fraction of generated conformers.

An O(3)/E(3)-equivariant network (EGNN, e3nn with symmetry "o3") maps a mirror-image input to the
mirror-image output, so from a reflection-symmetric prior it makes each enantiomer equally often.
ET-Flow(O(3)) repairs this after sampling (`parity_switch: post_hoc`): a generated conformer whose
tetrahedral centres disagree with the molecule's chiral tags is mirrored as a whole.

ET-Flow's rule, which this module follows (etflow/models/model.py `BaseFlow.switch_parity_of_pos`,
etflow/commons/chirality.py `get_chiral_tensors` / `signed_volume`, tags from the SMILES in
etflow/commons/featurization.py):
- centres: atoms with a CW/CCW chiral tag and exactly 4 neighbours; neighbours in RDKit's bond order
  for that atom (the order the tag refers to);
- per centre, the sign of a signed volume against the tag's sign (CW -> -1, CCW -> +1); a zero
  volume (planar centre) agrees with nothing and disagrees with nothing;
- the conformer is mirrored when *any* centre disagrees (not a majority vote; with one centre, as
  in most chiral drug-like molecules, the two are the same).

One deliberate difference: ET-Flow's volume is (n0 - n3) · ((n1 - n3) × (n2 - n3)), the
orientation of the neighbour tetrahedron; qdiff uses the centre atom c in place of n3,
V = (n0 - c) · ((n1 - c) × (n2 - c)), which agrees with RDKit's own 3D perception of the tags. The two
agree whenever the centre lies inside its neighbours' tetrahedron and differ for inverted
bridgeheads (bicyclo[1.1.0]butanes): on 300 demo-qm9 molecules (557 tagged centres) ET-Flow's form
contradicts the reference's own tag once (dsgdb9nsd_044001, O=C1CC23CC2(CC3)C1), which would
mirror a perfect sample; the centre form contradicts none.

Expected handedness comes from the molecule store's `atoms/chiral_tag` (0 none, 1 CW, 2 CCW,
3 other; assigned by RDKit from the reference's first conformer, qdiff.data.chem.record_from_mol)
and the bond list: the store keeps RDKit's bond order, and RDKit lists an atom's bonds in that
order, so a centre's neighbours are the other ends of its bonds in store order. The tags are
therefore those of the reference geometry, not of a SMILES (ET-Flow re-reads the SMILES; where
the two could disagree, qdiff follows the geometry that RMSD coverage is measured against). The
geometry here is plain numpy (no RDKit), so sampling can apply it; only `stereo_correct` imports
RDKit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.stereo import TAG_SIGN, tag_neighbours

PARITY_SWITCHES = ("post_hoc", "none")


def resolve_parity_switch(model: dict, value: str | None = "auto") -> str:
    """The parity switch a run uses: "post_hoc" or "none". "auto" (or None, runs from before the
    setting existed) gives "post_hoc" for the reflection-equivariant molecule networks (EGNN, e3nn
    with symmetry "o3") and "none" for the chirality-aware SO(3) e3nn and non-molecule networks."""
    if value in (None, "auto"):
        name = model.get("name")
        o3_network = name == "egnn" or (name == "e3nn" and model.get("symmetry", "o3") == "o3")
        return "post_hoc" if o3_network else "none"
    if value not in PARITY_SWITCHES:
        raise ValueError(f"parity_switch {value!r}: choose one of {PARITY_SWITCHES} or auto")
    return value


@dataclass
class ChiralCentres:
    """atom [k], neighbours [k, 4] (the tag's neighbour order) and sign [k] (+1 CCW, -1 CW)."""

    atom: np.ndarray
    neighbours: np.ndarray
    sign: np.ndarray

    def __len__(self) -> int:
        return int(self.atom.shape[0])


def chiral_centres(chiral_tag: np.ndarray, bond_index: np.ndarray) -> ChiralCentres:
    """The tetrahedral centres of one molecule from its store arrays (molecule-local bond pairs)."""
    atoms, neighbours, signs = [], [], []
    for i, tag in enumerate(np.asarray(chiral_tag).tolist()):
        if int(tag) not in TAG_SIGN:
            continue
        nbrs = tag_neighbours(bond_index, i)
        if nbrs.shape[0] != 4:
            continue
        neighbours.append(nbrs)
        atoms.append(i)
        signs.append(float(TAG_SIGN[int(tag)]))
    return ChiralCentres(np.asarray(atoms, np.int64), np.asarray(neighbours, np.int64).reshape(-1, 4), np.asarray(signs, np.float64))


def signed_volumes(positions: np.ndarray, centres: ChiralCentres) -> np.ndarray:
    """[S, k] V = (n0 - c) · ((n1 - c) × (n2 - c)) of each centre c for conformers [S, N, 3]."""
    x = np.asarray(positions, dtype=np.float64)
    p = x[:, centres.neighbours] - x[:, centres.atom][:, :, None]  # [S, k, 4, 3]
    return np.einsum("skd,skd->sk", p[:, :, 0], np.cross(p[:, :, 1], p[:, :, 2]))


def wrong_parity(positions: np.ndarray, centres: ChiralCentres) -> np.ndarray:
    """[S] bool: some centre's signed volume has the sign opposite to its tag (ET-Flow's test)."""
    positions = np.asarray(positions)
    if len(centres) == 0:
        return np.zeros(positions.shape[0], dtype=bool)
    return (np.sign(signed_volumes(positions, centres)) * centres.sign < 0).any(axis=1)


def parity_switch(positions: np.ndarray, centres: ChiralCentres) -> tuple[np.ndarray, np.ndarray]:
    """(positions with every wrong-parity conformer mirrored through its centroid, x -> 2c - x;
    which were mirrored [S] bool). Inversion is a reflection times a rotation by pi, so it flips
    every centre and changes no distance."""
    positions = np.asarray(positions)
    flip = wrong_parity(positions, centres)
    out = positions.copy()
    if flip.any():
        centroid = positions[flip].mean(axis=1, keepdims=True)
        out[flip] = (2 * centroid - positions[flip]).astype(positions.dtype)
    return out, flip


def stereo_correct(reference, generated: list) -> dict:
    """Stereo-correct counts of one molecule's generated conformers (RDKit molecules with one
    conformer each, the reference's atom order).

    A conformer is *stereo-correct* when the stereo perceived from its 3D coordinates (RDKit
    `AssignStereochemistryFrom3D`: CIP R/S of the tetrahedral stereocentres and E/Z of stereo double
    bonds, qdiff.eval.plausibility.stereo_labels) equals that perceived from the reference
    conformer: the same centres with the same labels, the same double bonds with the same labels.
    `tetrahedral` compares the R/S part only (what a mirror image changes). A molecule without
    any stereo element in its reference has every conformer counted correct (`has_stereo` False),
    so the dataset fraction can be read with the number of molecules that do have one.
    Returns {"n", "correct", "tetrahedral", "has_stereo", "has_tetrahedral"} (counts of conformers)."""
    from .plausibility import stereo_labels

    centres, bonds = stereo_labels(reference)
    labels = [stereo_labels(m) for m in generated]
    return {"n": len(generated), "correct": sum(lab == (centres, bonds) for lab in labels),
            "tetrahedral": sum(lab[0] == centres for lab in labels),
            "has_stereo": bool(centres or bonds), "has_tetrahedral": bool(centres)}


def stereo_summary(per_molecule: list[dict]) -> dict:
    """Dataset figures from `stereo_correct` results: `correct` and `tetrahedral` are fractions over
    all generated conformers (molecules without a stereo element count as correct);
    `correct_among_stereo` is the fraction over the conformers of molecules with a stereo element
    (NaN when there is none); and the numbers of molecules and conformers behind them."""
    n = sum(m["n"] for m in per_molecule)
    stereo = [m for m in per_molecule if m["has_stereo"]]
    n_stereo = sum(m["n"] for m in stereo)
    frac = (lambda k, n: float(k) / n if n else float("nan"))
    return {"correct": frac(sum(m["correct"] for m in per_molecule), n),
            "tetrahedral": frac(sum(m["tetrahedral"] for m in per_molecule), n),
            "correct_among_stereo": frac(sum(m["correct"] for m in stereo), n_stereo),
            "molecules": len(per_molecule), "molecules_with_stereo": len(stereo),
            "molecules_with_tetrahedral": sum(m["has_tetrahedral"] for m in per_molecule), "conformers": n}
