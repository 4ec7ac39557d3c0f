"""demo-backbones: synthetic, idealized Cα backbones (not PDB data) for the offline demo.

Chains are grown with the NeRF construction from the Cα virtual-bond geometry: bond 3.80 Å;
α-helix virtual bond angle 91° and dihedral 50°; β-strand angle 123° and dihedral -170°; loops
and turns draw angles in [85°, 130°] and dihedrals uniformly. Motifs: helix bundles (2-4
helices), β-strand series (3-5 strands joined by 2-4 residue turns; the strands are not forced
to pair into a sheet), helix-loop-helix.
Chains whose non-adjacent Cα pairs (|i-j| >= 3) come closer than 4.0 Å are rejected. Lengths
32-128. Everything is drawn from numpy's PCG64 with the given seed.
"""
from __future__ import annotations

import numpy as np

BOND = 3.80
HELIX = (np.deg2rad(91.0), np.deg2rad(50.0))
STRAND = (np.deg2rad(123.0), np.deg2rad(-170.0))
MIN_NONLOCAL = 4.0
MOTIFS = ("helix-bundle", "beta-strands", "helix-loop-helix")


def _segments(motif: str, rng: np.random.Generator) -> list[tuple[str, int]]:
    if motif == "helix-bundle":
        n = int(rng.integers(2, 5))
        segs = []
        for k in range(n):
            segs.append(("helix", int(rng.integers(14, 26))))
            if k < n - 1:
                segs.append(("loop", int(rng.integers(3, 6))))
        return segs
    if motif == "beta-strands":
        n = int(rng.integers(3, 6))
        segs = []
        for k in range(n):
            segs.append(("strand", int(rng.integers(7, 12))))
            if k < n - 1:
                segs.append(("turn", int(rng.integers(2, 5))))
        return segs
    return [("helix", int(rng.integers(12, 20))), ("loop", int(rng.integers(4, 8))), ("helix", int(rng.integers(12, 20)))]


def _angles(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "helix":
        return np.full(n, HELIX[0]) + rng.normal(0, 0.02, n), np.full(n, HELIX[1]) + rng.normal(0, 0.05, n)
    if kind == "strand":
        return np.full(n, STRAND[0]) + rng.normal(0, 0.03, n), np.full(n, STRAND[1]) + rng.normal(0, 0.08, n)
    if kind == "turn":
        return np.deg2rad(rng.uniform(85, 100, n)), rng.uniform(-np.pi, np.pi, n)
    return np.deg2rad(rng.uniform(85, 130, n)), rng.uniform(-np.pi, np.pi, n)


def nerf_chain(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Cα positions [n, 3] from virtual bond angles theta[i] and dihedrals phi[i] (i >= 3 used)."""
    n = theta.shape[0]
    x = np.zeros((n, 3))
    x[1] = [BOND, 0, 0]
    x[2] = x[1] + BOND * np.array([-np.cos(theta[2]), np.sin(theta[2]), 0.0])
    for i in range(3, n):
        a, b, c = x[i - 3], x[i - 2], x[i - 1]
        bc = (c - b) / np.linalg.norm(c - b)
        normal = np.cross(b - a, bc)
        normal /= np.linalg.norm(normal)
        m = np.stack([bc, np.cross(normal, bc), normal], axis=1)
        d = BOND * np.array([-np.cos(theta[i]), np.sin(theta[i]) * np.cos(phi[i]), np.sin(theta[i]) * np.sin(phi[i])])
        x[i] = c + m @ d
    return x


def clashes(x: np.ndarray) -> bool:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.triu_indices(len(x), k=3)
    return bool((d[i, j] < MIN_NONLOCAL).any())


def generate_backbones(n: int, seed: int, min_length: int = 32, max_length: int = 128, max_tries: int = 5000):
    """[(name, motif, Cα [L, 3] centered, float32)] for n accepted chains."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        motif = MOTIFS[len(out) % len(MOTIFS)]
        for _ in range(max_tries):
            segs = _segments(motif, rng)
            lead, tail = int(rng.integers(2, 5)), int(rng.integers(2, 5))
            segs = [("loop", lead)] + segs + [("loop", tail)]
            length = sum(k for _, k in segs)
            if not min_length <= length <= max_length:
                continue
            parts = [_angles(kind, k, rng) for kind, k in segs]
            theta = np.concatenate([p[0] for p in parts])
            phi = np.concatenate([p[1] for p in parts])
            x = nerf_chain(theta, phi)
            if not clashes(x):
                out.append((f"synth{len(out):04d}", motif, (x - x.mean(0)).astype(np.float32)))
                break
        else:
            from ...errors import SettingsError

            raise SettingsError(f"could not build a clash-free {motif} of length {min_length}-{max_length} in {max_tries} tries; "
                                "widen min_length/max_length (the defaults are 32-128)")
    return out
