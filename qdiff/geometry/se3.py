"""The SE(3) quotient operators on batched, masked point clouds x [B, N, 3] (unit masses).

Translations are quotiented by centering; rotations by the horizontal projection

    v <- v - mean(v);  L = sum_n x_n × v_n;  w = K⁺ L;  P_x(v)_n = v_n - w × x_n,

with the inertia tensor K(x) = sum_n |x_n|^2 I - sum_n x_n x_n^T of the centered cloud, and the
lifted mean-curvature field of the SO(3) orbits

    h(x)_n = K⁺ x_n - tr(K⁺) x_n = -1/2 ∇ log det K(x).

Regularization (degenerate clouds). K⁺ is the iterated-Tikhonov pseudo-inverse, with eigenvalue
filter λ ↦ λ(λ² + 2δ²)/(λ² + δ²)² and δ = eps · sum_n |x_n|² (scale-aware). On generic clouds it
equals K⁻¹ up to a relative error (δ/λ_min)⁴, below 1e-12 for eps = 1e-6 unless
λ_min < 1e-3 · sum|x|². On a collinear cloud
(N = 2, or points on a line) the zero eigenvalue of K is ignored instead of inverted as 1/eps:
the rotation about the line moves nothing, so the vertical space is 2-dimensional, P_x is the
projector of rank 3N-5, and h(x) = -2 x / sum|x|², the exact mean curvature of the 2-sphere
orbit. For N = 1 (or all atoms at one point) K = 0, and P_x(v) = 0 (every centered v of one atom
is zero) and h(x) = 0. Near-collinear clouds have a genuinely large curvature; it is capped at
|x_n| / δ. The 3x3 algebra runs in float64 whatever the input dtype; outputs keep x's dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._masks import atom_counts, atom_weights

DEFAULT_EPS = 1e-6


def center(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """x - mean(x) per cloud over valid atoms; padding atoms come out as zeros."""
    w = atom_weights(x, mask)
    mean = (x * w).sum(dim=-2, keepdim=True) / atom_counts(w)
    return (x - mean) * w


def inertia_tensor(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """K(x) = sum_n |x_n|^2 I_3 - sum_n x_n x_n^T of the centered cloud, shape [B, 3, 3].

    Unit masses, valid atoms only; x is centered first, so K is translation invariant.
    """
    xc = center(x, mask)
    outer = torch.einsum("bni,bnj->bij", xc, xc)
    trace = outer.diagonal(dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    return trace[:, None, None] * eye - outer


def regularized_inverse(K: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Regularized pseudo-inverse of symmetric K [B, 3, 3] by iterated Tikhonov:
    X1 = (K² + δ² I)⁻¹ K, K⁺ = X1 + δ² (K² + δ² I)⁻¹ X1, δ = eps · tr(K)/2.

    Eigenvalue filter λ ↦ λ(λ² + 2δ²)/(λ² + δ²)²: 1/λ (1 - (δ/λ)⁴ + ...) for λ >> δ, 0 at λ = 0,
    never above 1/δ. Computed in float64; smooth in K, so gradients exist on degenerate clouds.
    """
    K64 = K.to(torch.float64)
    scale = K64.diagonal(dim1=-2, dim2=-1).sum(-1) / 2
    tiny = torch.finfo(torch.float64).eps
    delta = eps * scale.clamp_min(tiny)
    eye = torch.eye(3, dtype=torch.float64, device=K.device)
    d2 = (delta**2)[:, None, None]
    damped = K64 @ K64 + d2 * eye
    first = torch.linalg.solve_ex(damped, K64)[0]  # _ex: no error check, so no host sync (CUDA graphs)
    return first + d2 * torch.linalg.solve_ex(damped, first)[0]


def angular_momentum(x: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """L = sum_n x_n × v_n over valid atoms of the centered clouds, shape [B, 3] (float64)."""
    w = atom_weights(x, mask)
    xc = center(x, mask).to(torch.float64)
    vc = center(v, mask).to(torch.float64)
    return (torch.cross(xc, vc, dim=-1) * w.to(torch.float64)).sum(dim=-2)


def _rigid_rotation_field(omega: Tensor, xc: Tensor) -> Tensor:
    """The field n -> omega × x_n for omega [B, 3] and x [B, N, 3]."""
    return torch.cross(omega[:, None, :].expand_as(xc), xc, dim=-1)


def horizontal_projection(
    x: Tensor, v: Tensor, mask: Tensor | None = None, eps: float = DEFAULT_EPS
) -> Tensor:
    """P_x(v): v without its total linear momentum and without the rigid rotation w × x carrying
    its angular momentum (w = K⁺ sum_n x_n × v_n). Orthogonal projector onto the horizontal space
    {v : sum v_n = 0, sum x_n × v_n = 0}; rank 3N-6 on generic clouds; P_x(x - mean x) = x - mean x.
    """
    if v.shape != x.shape:
        raise ValueError(f"v shape {tuple(v.shape)} does not match x shape {tuple(x.shape)}")
    w = atom_weights(x, mask)
    xc = center(x, mask)
    vc = center(v, mask)
    K = inertia_tensor(xc.to(torch.float64), mask)
    L = angular_momentum(xc, vc, mask)
    omega = (regularized_inverse(K, eps) @ L[..., None])[..., 0].to(v.dtype)
    return (vc - _rigid_rotation_field(omega, xc.to(v.dtype))) * w


def vertical_component(
    x: Tensor, v: Tensor, mask: Tensor | None = None, eps: float = DEFAULT_EPS
) -> Tensor:
    """v - P_x(v): the rigid-motion part of v (a translation plus a rotation w × x)."""
    return v * atom_weights(x, mask) - horizontal_projection(x, v, mask, eps)


def mean_curvature(x: Tensor, mask: Tensor | None = None, eps: float = DEFAULT_EPS) -> Tensor:
    """The lifted mean-curvature field of the SO(3) orbit through x:
    h(x)_n = K⁺ x_n - tr(K⁺) x_n = -1/2 ∇_x log det K(x) (x centered). Horizontal, and
    sum_n x_n · h_n = -3 on generic clouds (det K is homogeneous of degree 6).
    """
    w = atom_weights(x, mask)
    xc = center(x, mask)
    Kinv = regularized_inverse(inertia_tensor(xc.to(torch.float64), mask), eps)
    tr = Kinv.diagonal(dim1=-2, dim2=-1).sum(-1)
    Kinv, tr = Kinv.to(x.dtype), tr.to(x.dtype)
    h = xc @ Kinv.transpose(-1, -2) - tr[:, None, None] * xc
    return h * w
