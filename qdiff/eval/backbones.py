"""Backbone metrics that need no model weights: Cα geometry, clashes, radius of gyration and its
power law, P-SEA-like secondary structure from Cα only, and distribution distances."""
from __future__ import annotations

import numpy as np

CA_CA = 3.80
CLASH_DISTANCE = 3.0  # Cα pairs with |i-j| >= 3 closer than this count as a clash
RG_PREFACTOR, RG_EXPONENT = 2.2, 0.38  # Rg ≈ 2.2 N^0.38 Å for compact globular proteins (Skolnick et al.)


def consecutive_distances(ca: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(np.asarray(ca, dtype=np.float64), axis=0), axis=-1)


def ca_bond_stats(ca: np.ndarray) -> dict[str, float]:
    """Mean, std and max deviation of consecutive Cα-Cα distances from 3.80 Å."""
    d = consecutive_distances(ca)
    return {"mean": float(d.mean()), "std": float(d.std()), "max_abs_dev": float(np.abs(d - CA_CA).max())}


def clash_count(ca: np.ndarray, cutoff: float = CLASH_DISTANCE) -> int:
    x = np.asarray(ca, dtype=np.float64)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.triu_indices(len(x), k=3)
    return int((d[i, j] < cutoff).sum())


def radius_of_gyration(ca: np.ndarray) -> float:
    x = np.asarray(ca, dtype=np.float64)
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(-1).mean()))


def fit_power_law(lengths, rgs) -> tuple[float, float]:
    """Least-squares fit of log Rg = log a + nu log N: returns (a, nu)."""
    nu, log_a = np.polyfit(np.log(np.asarray(lengths, float)), np.log(np.asarray(rgs, float)), 1)
    return float(np.exp(log_a)), float(nu)


def _angles_dihedrals(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Virtual bond angle at residue i (i-1, i, i+1) and dihedral (i-1, i, i+1, i+2), in degrees."""
    b = np.diff(x, axis=0)
    u1, u2 = -b[:-1], b[1:]
    cos = (u1 * u2).sum(-1) / (np.linalg.norm(u1, axis=-1) * np.linalg.norm(u2, axis=-1))
    theta = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    b0, b1, b2 = b[:-2], b[1:-1], b[2:]
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    m1 = np.cross(n1, b1 / np.linalg.norm(b1, axis=-1, keepdims=True))
    phi = np.degrees(np.arctan2((m1 * n2).sum(-1), (n1 * n2).sum(-1)))
    return theta, phi


def secondary_structure(ca: np.ndarray, min_helix: int = 5, min_strand: int = 3) -> str:
    """P-SEA-like assignment from Cα only (Labesse et al. 1997 criteria): residue i is helical when
    its virtual angle is 89 ± 12° and dihedral 50 ± 20°, or d(i, i+3) = 5.3 ± 0.5 Å and
    d(i, i+4) = 6.4 ± 0.6 Å; extended when angle 124 ± 14° and dihedral -170 ± 45°, or
    d(i, i+2) = 6.7 ± 0.6 Å, d(i, i+3) = 9.9 ± 0.9 Å, d(i, i+4) = 12.4 ± 1.1 Å. Runs shorter than
    min_helix / min_strand are coil. Returns a string of H, E and C, one letter per residue."""
    x = np.asarray(ca, dtype=np.float64)
    n = len(x)
    helix = np.zeros(n, bool)
    strand = np.zeros(n, bool)
    if n >= 4:
        theta, phi = _angles_dihedrals(x)
        for k in range(len(phi)):  # dihedral k spans residues k..k+3; angle at residue k+1
            i = k + 1
            t, p = theta[k], phi[k]
            if abs(t - 89) <= 12 and abs(p - 50) <= 20:
                helix[i : i + 2] = True
            if abs(t - 124) <= 14 and abs(((p + 170 + 180) % 360) - 180) <= 45:
                strand[i : i + 2] = True

        def dist(k):
            return np.linalg.norm(x[k:] - x[:-k], axis=-1)

        d2, d3 = dist(2), dist(3)
        d4 = dist(4) if n > 4 else np.zeros(0)
        for i in range(len(d4)):
            if abs(d3[i] - 5.3) <= 0.5 and abs(d4[i] - 6.4) <= 0.6:
                helix[i : i + 5] = True
            if abs(d2[i] - 6.7) <= 0.6 and abs(d3[i] - 9.9) <= 0.9 and abs(d4[i] - 12.4) <= 1.1:
                strand[i : i + 5] = True
    labels = np.where(helix, "H", np.where(strand, "E", "C"))
    out = labels.copy()
    i = 0
    while i < n:  # remove short runs
        j = i
        while j < n and labels[j] == labels[i]:
            j += 1
        if (labels[i] == "H" and j - i < min_helix) or (labels[i] == "E" and j - i < min_strand):
            out[i:j] = "C"
        i = j
    return "".join(out)


def histogram_jsd(a, b, bins) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the histograms of samples a and b."""
    from scipy.spatial.distance import jensenshannon

    pa, _ = np.histogram(np.asarray(a, float), bins=bins)
    pb, _ = np.histogram(np.asarray(b, float), bins=bins)
    if pa.sum() == 0 or pb.sum() == 0:
        return float("nan")
    return float(jensenshannon(pa / pa.sum(), pb / pb.sum(), base=2))


def pair_distances(ca: np.ndarray, min_separation: int = 3) -> np.ndarray:
    x = np.asarray(ca, dtype=np.float64)
    i, j = np.triu_indices(len(x), k=min_separation)
    return np.linalg.norm(x[i] - x[j], axis=-1)
