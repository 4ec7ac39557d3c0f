"""ODE (Euler, Heun) and SDE (Euler-Maruyama) samplers over t in [0, 1], for every treatment.

geometry="center" (conventional and alignment-trained models): updates and noise are centered.
geometry="horizontal" (quotient models): updates and noise are projected with P_x, and the SDE
carries the curvature drift of the lifted quotient process (paper Thm. 4, Eq. 9, σ² = 2η):

    x <- x + dt [P_x(v + η s) - η h(x)] + sqrt(2 η dt) P_x(z).

The paper's Eq. 12 / Alg. 3 print +η h; `curvature="plus"` keeps that variant selectable only so
that the tests can show it samples the wrong distribution; `curvature="none"` omits the term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor

from ..geometry import DEFAULT_EPS, center, horizontal_projection, mean_curvature
from .interpolants import Interpolant

GEOMETRIES = ("center", "horizontal")
CURVATURE_SIGNS = {"minus": -1.0, "plus": 1.0, "none": 0.0}


@dataclass
class Fields:
    """What a model gives at (x, t): the velocity, and the score when the prior is Gaussian."""

    velocity: Tensor
    score: Tensor | None = None


class VectorField(Protocol):
    def __call__(self, x: Tensor, t: Tensor, mask: Tensor | None) -> Fields: ...


def fields_from_denoiser(
    denoiser: Callable[[Tensor, Tensor, Tensor | None], Tensor], interpolant: Interpolant
) -> VectorField:
    """Velocity and score from a denoiser D(x, t, mask) ≈ E[x1 | x_t] (Gaussian prior, Eq. 4)."""

    def fields(x: Tensor, t: Tensor, mask: Tensor | None) -> Fields:
        D = denoiser(x, t, mask)
        return Fields(
            interpolant.velocity_from_denoiser(x, D, t), interpolant.score_from_denoiser(x, D, t)
        )

    return fields


def fields_from_velocity(velocity: Callable[[Tensor, Tensor, Tensor | None], Tensor]) -> VectorField:
    """A velocity model (any prior): ODE sampling only."""

    def fields(x: Tensor, t: Tensor, mask: Tensor | None) -> Fields:
        return Fields(velocity(x, t, mask))

    return fields


@dataclass
class SampleResult:
    """Final clouds, the number of model evaluations, and per-sample path length sum_k |Δx_k|."""

    x: Tensor
    nfe: int
    path_length: Tensor
    trajectory: list[Tensor] = field(default_factory=list)


def time_grid(
    steps: int, t_start: float = 0.0, t_end: float = 1.0, rho: float = 1.0, dtype=torch.float64
) -> Tensor:
    """t_k = t_end - (t_end - t_start)(1 - k/K)^rho, k = 0..K: uniform for rho = 1; rho > 1
    refines the steps near the data end, where the fields change fastest."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= t_start < t_end <= 1.0:
        raise ValueError(f"need 0 <= t_start < t_end <= 1, got {t_start}, {t_end}")
    if rho < 1.0:
        raise ValueError(f"rho must be >= 1, got {rho}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    grid = t_end - (t_end - t_start) * (1 - u) ** rho
    grid[0], grid[-1] = t_start, t_end
    return grid


def project(x: Tensor, v: Tensor, mask: Tensor | None, geometry: str, eps: float = DEFAULT_EPS) -> Tensor:
    """Center v, or project it onto the horizontal space at x."""
    if geometry == "center":
        return center(v, mask)
    if geometry == "horizontal":
        return horizontal_projection(x, v, mask, eps)
    raise ValueError(f"unknown sampler geometry {geometry!r}; use one of {GEOMETRIES}")


def _standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) shaped like `like`, drawn on the generator's device and moved to like's device."""
    source = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=source).to(like.device)


def _step_norm(dx: Tensor) -> Tensor:
    return dx.flatten(1).norm(dim=-1)


def sample_ode(
    fields: VectorField,
    x0: Tensor,
    *,
    steps: int,
    mask: Tensor | None = None,
    geometry: str = "horizontal",
    method: str = "euler",
    t_start: float = 0.0,
    t_end: float = 1.0,
    rho: float = 1.0,
    keep_trajectory: bool = False,
) -> SampleResult:
    """Integrate dx/dt = Proj_x(v(x, t)) from t_start to t_end (Euler or Heun's 2nd order).

    Heun's last step falls back to Euler, so the model is never evaluated at t_end = 1.
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown ODE method {method!r}; use 'euler' or 'heun'")
    grid = time_grid(steps, t_start, t_end, rho)
    x = center(x0, mask)
    path = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    traj = [x] if keep_trajectory else []
    nfe = 0
    for k in range(steps):
        t, t_next = grid[k].item(), grid[k + 1].item()
        dt = t_next - t
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        d1 = project(x, fields(x, tb, mask).velocity, mask, geometry)
        nfe += 1
        if method == "heun" and k < steps - 1:
            x_pred = x + dt * d1
            tb_next = torch.full_like(tb, t_next)
            d2 = project(x_pred, fields(x_pred, tb_next, mask).velocity, mask, geometry)
            nfe += 1
            dx = 0.5 * dt * (d1 + d2)
        else:
            dx = dt * d1
        x = center(x + dx, mask)
        path = path + _step_norm(dx)
        if keep_trajectory:
            traj.append(x)
    return SampleResult(x, nfe, path, traj)


def sample_sde(
    fields: VectorField,
    x0: Tensor,
    *,
    steps: int,
    eta: Callable[[Tensor], Tensor],
    mask: Tensor | None = None,
    geometry: str = "horizontal",
    curvature: str = "minus",
    generator: torch.Generator | None = None,
    t_start: float = 0.0,
    t_end: float = 1.0,
    rho: float = 1.0,
    keep_trajectory: bool = False,
) -> SampleResult:
    """Euler-Maruyama for dx = [Proj(v + η s) + c η h(x)] dt + sqrt(2η) Proj(dW), c = -1 (correct),
    +1 (the paper's printed sign) or 0, where h is applied only with geometry="horizontal".
    `eta(t)` maps times [B] to noise levels [B] (>= 0); the model must supply a score.
    """
    if curvature not in CURVATURE_SIGNS:
        raise ValueError(f"unknown curvature sign {curvature!r}; use one of {sorted(CURVATURE_SIGNS)}")
    sign = CURVATURE_SIGNS[curvature] if geometry == "horizontal" else 0.0
    grid = time_grid(steps, t_start, t_end, rho)
    x = center(x0, mask)
    path = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    traj = [x] if keep_trajectory else []
    for k in range(steps):
        t, t_next = grid[k].item(), grid[k + 1].item()
        dt = t_next - t
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        out = fields(x, tb, mask)
        if out.score is None:
            raise ValueError("SDE sampling needs a score: use a denoiser model with a Gaussian prior")
        e = eta(tb).to(x.dtype).reshape(-1, 1, 1)
        drift = project(x, out.velocity + e * out.score, mask, geometry)
        if sign != 0.0:
            drift = drift + sign * e * mean_curvature(x, mask)
        z = _standard_normal(x, generator)
        noise = torch.sqrt(2 * e * dt) * project(x, z, mask, geometry)
        dx = dt * drift + noise
        x = center(x + dx, mask)
        path = path + _step_norm(dx)
        if keep_trajectory:
            traj.append(x)
    return SampleResult(x, steps, path, traj)


def denoiser_noise_schedule(interpolant: Interpolant, scale: float) -> Callable[[Tensor], Tensor]:
    """η_t = scale · α̂_t²: vanishes at the data end, where the score grows like 1/α̂², so η s and
    the noise stay bounded."""
    if scale < 0 or not math.isfinite(scale):
        raise ValueError(f"noise scale must be finite and >= 0, got {scale}")

    def eta(t: Tensor) -> Tensor:
        return scale * interpolant.alpha_hat(t) ** 2

    return eta
