"""ODE (Euler, Heun) and SDE (Euler-Maruyama) samplers over t in [0, 1], for every treatment.

geometry="center" (conventional and alignment-trained models): updates and noise are centered.
geometry="horizontal" (quotient models): updates and noise are projected with P_x, and the SDE
carries the curvature drift of the lifted quotient process (paper Thm. 4, Eq. 9: the drift is
-σ²/2 · h with σ² the noise variance rate, here σ² = 2γη):

    x <- x + dt [P_x(v + η s) - γ η h(x)] + sqrt(2 γ η dt) P_x(z).

γ = 1 (the default) samples p_t exactly for any η ≥ 0 (temperature 1: qdiff's η-sampler, η_t =
scale · α̂_t²). γ < 1 scales the noise only: Proteína's low-temperature SDE (its `sc_scale_noise`,
with η_t = g(t) = 1 / (t + 0.01) and the last steps, t > 0.99, taken as ODE steps; see
`proteina_noise_schedule` and `proteina_time_grid`). The curvature term follows the noise
variance (γη), not the score drift (η): digest §1.6 and §6 q2.

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
from .interpolants import Interpolant, _as_time
from .priors import PriorSpectrum

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


def fields_from_velocity(
    velocity: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    interpolant: Interpolant | None = None,
    prior: PriorSpectrum | None = None,
) -> VectorField:
    """A velocity model v(x, t, mask). Without `interpolant`: ODE sampling only (no score).

    With the interpolant and a Gaussian prior (`prior`; None is the isotropic N(0, I)), the score
    follows from the velocity
    (`denoiser_and_score_from_velocity`), so the SDE samplers accept velocity models too.
    """

    def fields(x: Tensor, t: Tensor, mask: Tensor | None) -> Fields:
        v = velocity(x, t, mask)
        if interpolant is None:
            return Fields(v)
        _, score = denoiser_and_score_from_velocity(x, v, t, interpolant, prior)
        return Fields(v, score)

    return fields


def denoiser_and_score_from_velocity(
    x: Tensor, velocity: Tensor, t: Tensor | float, interpolant: Interpolant, prior: PriorSpectrum | None = None
) -> tuple[Tensor, Tensor]:
    """(D ≈ E[x1 | x_t], s = ∇ log p_t) from a velocity v ≈ E[α' x0 + β' x1 + γ' ε | x_t], for a
    prior x0 ~ N(0, Σ) with Σ = U diag(σ²_k) U^T (`prior`; None: Σ = I).

    Given x1, x_t - β x1 = α x0 + γ ε ~ N(0, C) with C = α² Σ + γ² I, so (Gaussian conditioning,
    linear in x1, hence valid under E[· | x_t] with D = E[x1 | x_t]):

        E[x0 | x_t] = α Σ C⁻¹ (x_t - β D),   E[ε | x_t] = γ C⁻¹ (x_t - β D),
        v = M (x_t - β D) + β' D,   M = (α' α Σ + γ' γ I) C⁻¹,
        s = -C⁻¹ (x_t - β D).

    All of Σ, C, M are diagonal in U: per mode k, with c_k = α² σ²_k + γ² and
    m_k = (α' α σ²_k + γ' γ) / c_k,  D_k = (v_k - m_k x_k) / (β' - m_k β),  s_k = -(x_k - β D_k) / c_k.
    For Σ = I this is `Interpolant.denoiser_from_velocity` / `score_from_denoiser` (c = α̂²,
    m = α̂'/α̂). β' - m_k β > 0 for the linear and ET-Flow interpolants at every t < 1.

    The harmonic prior of ET-Flow is Kabsch-aligned to x1 in training (`align_prior`): x0 then is
    not independent of x1 and N(β x1, C) is only an approximation of x_t | x1 (close: alignment
    removes 3 rotational degrees of freedom of x0 out of 3N - 3), so the score is approximate.
    """
    t = _as_time(t, x)
    a, ad = interpolant.alpha(t), interpolant.alpha_dot(t)
    b, bd = interpolant.beta(t), interpolant.beta_dot(t)
    gg, gg_dot = interpolant.gamma(t) ** 2, interpolant._gamma_gamma_dot(t)
    spectrum = prior if prior is not None else PriorSpectrum()
    y, w = spectrum.to_modes(x), spectrum.to_modes(velocity)
    var = spectrum.mode_variance(x)
    c = a**2 * var + gg
    m = (ad * a * var + gg_dot) / c
    d_modes = (w - m * y) / (bd - m * b)
    s_modes = -(y - b * d_modes) / c
    return spectrum.from_modes(d_modes), spectrum.from_modes(s_modes)


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
    noise_scale: float = 1.0,
    grid: Tensor | None = None,
) -> SampleResult:
    """Euler-Maruyama for dx = [Proj(v + η s) + c γ η h(x)] dt + sqrt(2 γ η) Proj(dW), c = -1
    (correct), +1 (the paper's printed sign) or 0, where h is applied only with
    geometry="horizontal". `eta(t)` maps times [B] to score weights [B] (>= 0); `noise_scale` γ
    scales the noise variance only (γ = 1: exact marginals; γ < 1: low temperature, Proteína).
    Steps with η = 0 are ODE steps and do not use the score; any other step needs one.
    `grid`: the times t_0 < ... < t_K (default `time_grid(steps, t_start, t_end, rho)`).
    """
    if curvature not in CURVATURE_SIGNS:
        raise ValueError(f"unknown curvature sign {curvature!r}; use one of {sorted(CURVATURE_SIGNS)}")
    if noise_scale < 0 or not math.isfinite(noise_scale):
        raise ValueError(f"noise scale must be finite and >= 0, got {noise_scale}")
    sign = CURVATURE_SIGNS[curvature] if geometry == "horizontal" else 0.0
    if grid is None:
        grid = time_grid(steps, t_start, t_end, rho)
    elif grid.dim() != 1 or grid.numel() != steps + 1 or not bool((grid.diff() > 0).all()):
        raise ValueError(f"grid must be {steps + 1} increasing times")
    x = center(x0, mask)
    path = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    traj = [x] if keep_trajectory else []
    for k in range(steps):
        t, t_next = grid[k].item(), grid[k + 1].item()
        dt = t_next - t
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        out = fields(x, tb, mask)
        e = eta(tb).to(x.dtype).reshape(-1, 1, 1)
        if not bool((e > 0).any()):  # an ODE step (Proteína's last steps): no score, no noise
            dx = dt * project(x, out.velocity, mask, geometry)
            x = center(x + dx, mask)
            path = path + _step_norm(dx)
            if keep_trajectory:
                traj.append(x)
            continue
        if out.score is None:
            raise ValueError("SDE sampling needs a score: give the model's interpolant (and prior) to fields_from_velocity")
        drift = project(x, out.velocity + e * out.score, mask, geometry)
        if sign != 0.0:
            drift = drift + sign * noise_scale * e * mean_curvature(x, mask)
        z = _standard_normal(x, generator)
        noise = torch.sqrt(2 * noise_scale * e * dt) * project(x, z, mask, geometry)
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


# Proteína's SDE (proteinfoundation/flow_matching/r3n_fm.py: `get_gt` mode "1/t", `get_schedule`
# mode "log", `full_simulation`; configs/experiment_config/inference_base.yaml: gt_mode "1/t",
# gt_p 1.0, gt_clamp_val null, schedule_mode log, schedule_p 2.0, dt 0.0025 = 400 steps).
PROTEINA_G_OFFSET = 1e-2  # g(t) = 1 / (t + 0.01)
PROTEINA_ODE_AFTER = 0.99  # steps starting at t > 0.99 are plain ODE steps
PROTEINA_LOG_SCHEDULE_P = 2.0


def proteina_noise_schedule() -> Callable[[Tensor], Tensor]:
    """η_t = g(t) = 1 / (min(t, 1 - 1e-5) + 0.01) for t <= 0.99 and 0 after (ODE steps).

    Used with `sample_sde(..., noise_scale=γ)`: dx = [v + g s] dt + sqrt(2 g γ) dW, Proteína's
    score scale sc_scale_score = 1 and noise scale sc_scale_noise = γ (0.35 / 0.45 / 0.50 in the
    paper's Table 3), so γ < 1 samples at low temperature.
    """

    def g(t: Tensor) -> Tensor:
        value = 1.0 / (t.clamp(0.0, 1.0 - 1e-5) + PROTEINA_G_OFFSET)
        return torch.where(t > PROTEINA_ODE_AFTER, torch.zeros_like(value), value)

    return g


def proteina_time_grid(steps: int, p: float = PROTEINA_LOG_SCHEDULE_P, dtype=torch.float64) -> Tensor:
    """Proteína's "log" time grid: t_k = (1 - 10^(-p k/K)) / (1 - 10^(-p)), k = 0..K (steps
    geometrically finer towards the data end t = 1)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if p <= 0:
        raise ValueError(f"the log schedule needs p > 0, got {p}")
    k = torch.arange(steps + 1, dtype=dtype)
    grid = (1 - 10.0 ** (-p * k / steps)) / (1 - 10.0 ** (-p))
    grid[0], grid[-1] = 0.0, 1.0
    return grid
