"""A permutation-invariant per-atom stereo feature from the store's chiral tags (numpy only).

RDKit's CW/CCW tag (store `atoms/chiral_tag`: 1 CW, 2 CCW) describes the centre's neighbours *in
the order of its bonds*: swapping two neighbours in the bond list flips the tag with the molecule
unchanged, so the raw tag means nothing to a message-passing network, which sees no bond order.
This module turns it into a label that depends on the molecule alone:

    s_i = sign(tag_i) x parity(the permutation that sorts i's neighbours, in bond order, by a
          canonical atom ranking)

with sign(CW) = -1, sign(CCW) = +1 (as qdiff.eval.chirality) and parity +1 for even, -1 for odd
permutations. Sorting by the ranking undoes whatever order the bonds were listed in, so s_i is the
handedness of the neighbours taken in canonical rank order: relabelling the atoms leaves it
unchanged, the mirror image flips it. The ranking is Weisfeiler-Lehman (colour) refinement over
the bond graph of (element, formal charge, degree, H count, aromatic), with bond orders on the
edges, to a stable partition; classes are numbered by sorting their (value-only) signatures, so the
ranks do not depend on atom order. s_i = 0 where the atom has no CW/CCW tag, has fewer than 3 or
more than 4 neighbours, or two of its neighbours share a rank (no stereo centre this ranking can
orient, e.g. r/s pseudo-asymmetric centres whose neighbours differ only in their own stereo).
With three neighbours the implicit fourth (a lone pair or implicit H) keeps its place in the tag's
order whatever the bond order, so the same rule holds.

It is a scalar that does not change under reflections of the coordinates, so it leaves an O(3)
network's f(-x) = -f(x) intact; an SO(3) network can combine it with its pseudoscalar features to
pick the handedness. Double-bond (E/Z) stereo is not encoded.
"""
from __future__ import annotations

import numpy as np

TAG_SIGN = {1: -1, 2: 1}  # store chiral_tag codes: 1 = CHI_TETRAHEDRAL_CW, 2 = CHI_TETRAHEDRAL_CCW


def _compress(signatures: list[tuple]) -> np.ndarray:
    """Dense integer classes numbered in sorted order of the signatures (atom-order independent)."""
    order = {s: k for k, s in enumerate(sorted(set(signatures)))}
    return np.asarray([order[s] for s in signatures], dtype=np.int64)


def canonical_ranks(atoms: dict[str, np.ndarray], bond_index: np.ndarray, bond_order: np.ndarray | None = None) -> np.ndarray:
    """[n_atoms] Weisfeiler-Lehman classes of (element, charge, degree, H count, aromatic) refined
    over the bond graph (with bond orders) until the partition is stable. Atoms in one class are
    not told apart; the numbering does not depend on the atom order."""
    n = int(np.asarray(atoms["z"]).shape[0])
    bond_index = np.asarray(bond_index, dtype=np.int64).reshape(-1, 2)
    order = np.zeros(bond_index.shape[0], np.int64) if bond_order is None else np.asarray(bond_order, dtype=np.int64)
    neighbours: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for (i, j), o in zip(bond_index.tolist(), order.tolist()):
        neighbours[i].append((j, o))
        neighbours[j].append((i, o))
    keys = [np.asarray(atoms[k]).astype(np.int64) for k in ("z", "formal_charge", "degree", "num_hs", "aromatic")]
    ranks = _compress([tuple(int(k[i]) for k in keys) for i in range(n)])
    classes = len(set(ranks.tolist()))
    for _ in range(n):
        refined = _compress([(int(ranks[i]), tuple(sorted((int(ranks[j]), o) for j, o in neighbours[i]))) for i in range(n)])
        new = len(set(refined.tolist()))
        ranks = refined
        if new == classes:
            break
        classes = new
    return ranks


def tag_neighbours(bond_index: np.ndarray, atom: int) -> np.ndarray:
    """The neighbours of `atom` in the order of its bonds in the store (molecule-local pairs
    [n_bond, 2]): the order RDKit's CW/CCW tag refers to."""
    bond_index = np.asarray(bond_index, dtype=np.int64).reshape(-1, 2)
    pairs = bond_index[(bond_index == atom).any(axis=1)]
    return np.where(pairs[:, 0] == atom, pairs[:, 1], pairs[:, 0])


def _parity(values: list[int]) -> int:
    """+1 for an even, -1 for an odd number of inversions."""
    inversions = sum(1 for a in range(len(values)) for b in range(a + 1, len(values)) if values[a] > values[b])
    return -1 if inversions % 2 else 1


def stereo_frames(atoms: dict[str, np.ndarray], bond_index: np.ndarray,
                  bond_order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(signs [n_atoms] int8 in {-1, 0, +1}, frames [n_atoms, 3] int64): the permutation-invariant
    handedness of each tagged centre (module docstring) and its three lowest-ranked neighbours in
    canonical rank order; unlabelled atoms (sign 0) have the atom itself three times.

    With the neighbours of a labelled centre c in that order, the signed volume
    V = (a - c) · ((b - c) × (d - c)) of the first three has the sign s_c in the reference geometry
    and -s_c in its mirror image: the sign of a volume changes with the parity of the neighbour
    permutation (for three neighbours exactly; for four, whenever c lies inside its neighbours'
    tetrahedron, as qdiff.eval.chirality uses), and s_c is the tag's sign times that parity.
    So s_c V > 0 says "this centre has its reference handedness", a rotation-invariant,
    reflection-odd scalar that a network can read (qdiff.models.embeddings.chirality_features)."""
    tags = np.asarray(atoms["chiral_tag"]).astype(np.int64)
    n = tags.shape[0]
    signs = np.zeros(n, np.int8)
    frames = np.repeat(np.arange(n, dtype=np.int64)[:, None], 3, axis=1)
    centres = [i for i, tag in enumerate(tags.tolist()) if tag in TAG_SIGN]
    if not centres:
        return signs, frames
    bond_index = np.asarray(bond_index, dtype=np.int64).reshape(-1, 2)
    ranks = canonical_ranks(atoms, bond_index, bond_order)
    for i in centres:
        neighbours = tag_neighbours(bond_index, i)
        if not 3 <= neighbours.shape[0] <= 4:
            continue
        nbr_ranks = [int(ranks[j]) for j in neighbours]
        if len(set(nbr_ranks)) < len(nbr_ranks):
            continue  # two neighbours this ranking cannot tell apart
        signs[i] = TAG_SIGN[int(tags[i])] * _parity(nbr_ranks)
        frames[i] = neighbours[np.argsort(nbr_ranks)][:3]
    return signs, frames


def stereo_signs(atoms: dict[str, np.ndarray], bond_index: np.ndarray, bond_order: np.ndarray | None = None) -> np.ndarray:
    """[n_atoms] int8 in {-1, 0, +1}: the permutation-invariant handedness of each tagged centre
    (module docstring); zeros when the molecule has no CW/CCW tag."""
    return stereo_frames(atoms, bond_index, bond_order)[0]
