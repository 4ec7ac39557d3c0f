"""SO(3)-invariant, centered priors: the isotropic Gaussian and the harmonic (bond-graph) prior."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry import center, kabsch_align
from ..geometry._masks import atom_weights


def gaussian_prior(
    shape: tuple[int, int, int] | torch.Size,
    mask: Tensor | None = None,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
    z: Tensor | None = None,
) -> Tensor:
    """x0 = center(scale · z), z ~ N(0, I): the standard Gaussian on the centered subspace.

    z is drawn on the generator's device (CPU if none) and moved to `device`, unless given.
    """
    if z is None:
        source = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=source)
    z = z.to(device=device, dtype=dtype)
    if mask is not None:
        mask = mask.to(z.device)
    return center(scale * z, mask)


def graph_laplacian(adjacency: Tensor, mask: Tensor | None = None) -> Tensor:
    """L = D - A of a (weighted, symmetric) adjacency [B, N, N], restricted to valid atoms."""
    A = adjacency.to(torch.float64)
    if mask is not None:
        m = mask.to(torch.float64)
        A = A * m[:, :, None] * m[:, None, :]
    return torch.diag_embed(A.sum(-1)) - A


def _harmonic_modes(adjacency: Tensor, mask: Tensor | None, stiffness: float) -> tuple[Tensor, Tensor]:
    """Eigenvectors U [B, N, N] (float64) of the bond-graph Laplacian and the prior standard
    deviation of each mode [B, N]: 1 / sqrt(stiffness λ_k), and 1 for λ_k = 0 (translation,
    fragment placement)."""
    L = graph_laplacian(adjacency, mask)
    if mask is not None:
        # Decouple padding atoms (masked out below) with an eigenvalue above every real one
        # (Gershgorin: λ <= 2 x the largest degree), so the real modes come first, in ascending
        # order, whatever the padding: z[:, :n] alone drives a molecule of n atoms.
        above = 2.0 * L.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True) + 1.0
        L = L + torch.diag_embed((1.0 - mask.to(torch.float64)) * above)
    lam, U = torch.linalg.eigh(L)
    tol = 1e-8 * lam.abs().amax(-1, keepdim=True).clamp_min(1.0)
    inv_std = torch.where(lam > tol, (stiffness * lam.clamp_min(1e-300)).rsqrt(), torch.ones_like(lam))
    return U, inv_std


@dataclass(frozen=True)
class PriorSpectrum:
    """A centered Gaussian prior x0 ~ N(0, Σ ⊗ I_3), Σ = U diag(variance) U^T over atoms (the
    same in x, y and z, hence SO(3)-invariant). `basis` None: the isotropic Gaussian (Σ = I).

    Sampling with a velocity model needs Σ to turn velocities into scores (`fields_from_velocity`).
    Every matrix that relates v, E[x1|x_t] and the score is diagonal in this basis.
    """

    basis: Tensor | None = None  # U [B, N, N]
    variance: Tensor | None = None  # [B, N]

    @property
    def isotropic(self) -> bool:
        return self.basis is None

    def to_modes(self, x: Tensor) -> Tensor:
        """Mode coefficients U^T x [B, N, 3] (identity for the isotropic prior)."""
        return x if self.basis is None else self.basis.transpose(-1, -2).to(x.dtype) @ x

    def from_modes(self, y: Tensor) -> Tensor:
        """U y: back from mode coefficients to atom coordinates."""
        return y if self.basis is None else self.basis.to(y.dtype) @ y

    def mode_variance(self, like: Tensor) -> Tensor:
        """Σ's eigenvalues as [B, N, 1] in like's dtype (ones for the isotropic prior)."""
        if self.variance is None:
            return torch.ones(like.shape[:-1] + (1,), dtype=like.dtype, device=like.device)
        return self.variance.to(device=like.device, dtype=like.dtype)[..., None]


def harmonic_spectrum(adjacency: Tensor, mask: Tensor | None = None, stiffness: float = 1.0) -> PriorSpectrum:
    """The covariance of `harmonic_prior` (without its alignment to the data) as a PriorSpectrum:
    Σ = (stiffness L)^+ on the non-zero modes of the bond-graph Laplacian L, unit variance on the
    other zero modes (translation: removed by centering anyway; fragment placement)."""
    U, std = _harmonic_modes(adjacency, mask, stiffness)
    return PriorSpectrum(U, std**2)


def harmonic_prior(
    adjacency: Tensor,
    mask: Tensor | None = None,
    stiffness: float = 1.0,
    align_to: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    z: Tensor | None = None,
) -> Tensor:
    """x0 ~ p(x) ∝ exp(-stiffness/2 · sum_{(i,j) bonded} |x_i - x_j|²) on the centered subspace
    (ET-Flow / EigenFold), sampled as x0 = sum_k z_k u_k / sqrt(stiffness λ_k) over the
    eigenpairs of the bond-graph Laplacian.

    Modes with λ = 0 beyond the global translation (a disconnected graph: relative placement of
    the fragments) get unit variance instead of an infinite one. With `align_to` (the data x1),
    x0 is Kabsch-aligned to it as ET-Flow does; that pairing is part of p(x0, x1), not of the loss.
    `z` [B, N, 3]: the standard normal mode coefficients, drawn from `generator` unless given.
    """
    B, N = adjacency.shape[:2]
    device = adjacency.device
    source = generator.device if generator is not None else device
    U, inv_std = _harmonic_modes(adjacency, mask, stiffness)
    if z is None:
        z = torch.randn(B, N, 3, generator=generator, dtype=torch.float64, device=source)
    z = z.to(device=device, dtype=torch.float64)
    x0 = U @ (inv_std[..., None] * z)
    like = torch.zeros(B, N, 3, dtype=dtype, device=device)
    x0 = center(x0.to(dtype), mask) * atom_weights(like, mask)
    if align_to is not None:
        x0 = kabsch_align(x0, align_to.to(dtype), mask)
        x0 = center(x0, mask)
    return x0
