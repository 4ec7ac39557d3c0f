"""Stochastic interpolants x_t = α_t x0 + β_t x1 + γ_t ε, with t = 0 the prior and t = 1 the data.

Boundary conditions α_0 = 1, β_0 = γ_0 = 0, α_1 = γ_1 = 0, β_1 = 1. With a Gaussian prior x0 and
the noise ε merge: x_t = α̂_t ε' + β_t x1 with α̂_t = sqrt(α_t² + γ_t²), and a denoiser D ≈ E[x1|x_t]
determines both the velocity and the score (paper Eq. 4 and the score identity):

    v = (α̂'/α̂) x_t - (α̂' β/α̂ - β') D,        s = -(x_t - β D) / α̂².
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _as_time(t: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast t (scalar or [B]) to [B, 1, 1] in like's dtype and device."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    return t.reshape(-1, 1, 1)


@dataclass(frozen=True)
class Interpolant:
    """Base class: subclasses define the coefficient functions and their time derivatives."""

    name = "interpolant"

    def alpha(self, t: Tensor) -> Tensor: ...
    def beta(self, t: Tensor) -> Tensor: ...
    def gamma(self, t: Tensor) -> Tensor: ...
    def alpha_dot(self, t: Tensor) -> Tensor: ...
    def beta_dot(self, t: Tensor) -> Tensor: ...
    def gamma_dot(self, t: Tensor) -> Tensor: ...

    def alpha_hat(self, t: Tensor) -> Tensor:
        """α̂_t = sqrt(α_t² + γ_t²): the total noise scale under a Gaussian prior."""
        return torch.sqrt(self.alpha(t) ** 2 + self.gamma(t) ** 2)

    def alpha_hat_dot(self, t: Tensor) -> Tensor:
        """d α̂/dt = (α α' + γ γ') / α̂ (finite at t = 0 for the ET-Flow form)."""
        return (self.alpha(t) * self.alpha_dot(t) + self._gamma_gamma_dot(t)) / self.alpha_hat(t)

    def _gamma_gamma_dot(self, t: Tensor) -> Tensor:
        return self.gamma(t) * self.gamma_dot(t)

    def sample(self, x0: Tensor, x1: Tensor, noise: Tensor, t: Tensor | float) -> Tensor:
        """x_t = α_t x0 + β_t x1 + γ_t ε."""
        t = _as_time(t, x1)
        return self.alpha(t) * x0 + self.beta(t) * x1 + self.gamma(t) * noise

    def velocity_target(self, x0: Tensor, x1: Tensor, noise: Tensor, t: Tensor | float) -> Tensor:
        """d x_t / dt = α'_t x0 + β'_t x1 + γ'_t ε (the regression target of a velocity model)."""
        t = _as_time(t, x1)
        return self.alpha_dot(t) * x0 + self.beta_dot(t) * x1 + self.gamma_dot(t) * noise

    def velocity_from_denoiser(self, x: Tensor, denoised: Tensor, t: Tensor | float) -> Tensor:
        """v = (α̂'/α̂) x - (α̂' β/α̂ - β') D (Gaussian prior)."""
        t = _as_time(t, x)
        ah, ahd, b, bd = self.alpha_hat(t), self.alpha_hat_dot(t), self.beta(t), self.beta_dot(t)
        return (ahd / ah) * x - (ahd * b / ah - bd) * denoised

    def denoiser_from_velocity(self, x: Tensor, velocity: Tensor, t: Tensor | float) -> Tensor:
        """Inverse of `velocity_from_denoiser`: D = ((α̂'/α̂) x - v) / (α̂' β/α̂ - β')."""
        t = _as_time(t, x)
        ah, ahd, b, bd = self.alpha_hat(t), self.alpha_hat_dot(t), self.beta(t), self.beta_dot(t)
        return ((ahd / ah) * x - velocity) / (ahd * b / ah - bd)

    def score_from_denoiser(self, x: Tensor, denoised: Tensor, t: Tensor | float) -> Tensor:
        """s = ∇ log p_t(x) = -(x - β D) / α̂² (Gaussian prior)."""
        t = _as_time(t, x)
        return -(x - self.beta(t) * denoised) / self.alpha_hat(t) ** 2


@dataclass(frozen=True)
class LinearInterpolant(Interpolant):
    """Rectified flow / conditional OT (Proteina): x_t = (1-t) x0 + t x1."""

    name = "linear"

    def alpha(self, t): return 1 - t
    def beta(self, t): return t
    def gamma(self, t): return torch.zeros_like(t)
    def alpha_dot(self, t): return -torch.ones_like(t)
    def beta_dot(self, t): return torch.ones_like(t)
    def gamma_dot(self, t): return torch.zeros_like(t)


@dataclass(frozen=True)
class ETFlowInterpolant(Interpolant):
    """ET-Flow: x_t = (1-t) x0 + t x1 + σ sqrt(t(1-t)) ε (σ = 0.1 in the paper).

    γ' = σ (1-2t) / (2 sqrt(t(1-t))) is infinite at t = 0 and 1: train on t in [1e-4, 1-1e-4].
    """

    sigma: float = 0.1
    name = "etflow"

    def alpha(self, t): return 1 - t
    def beta(self, t): return t
    def gamma(self, t): return self.sigma * torch.sqrt((t * (1 - t)).clamp_min(0))
    def alpha_dot(self, t): return -torch.ones_like(t)
    def beta_dot(self, t): return torch.ones_like(t)

    def gamma_dot(self, t):
        return self.sigma * (1 - 2 * t) / (2 * torch.sqrt((t * (1 - t)).clamp_min(1e-12)))

    def _gamma_gamma_dot(self, t):
        return self.sigma**2 * (1 - 2 * t) / 2


@dataclass(frozen=True)
class TrigonometricInterpolant(Interpolant):
    """Variance preserving: x_t = cos(πt/2) x0 + sin(πt/2) x1."""

    name = "trigonometric"

    def alpha(self, t): return torch.cos(math.pi * t / 2)
    def beta(self, t): return torch.sin(math.pi * t / 2)
    def gamma(self, t): return torch.zeros_like(t)
    def alpha_dot(self, t): return -(math.pi / 2) * torch.sin(math.pi * t / 2)
    def beta_dot(self, t): return (math.pi / 2) * torch.cos(math.pi * t / 2)
    def gamma_dot(self, t): return torch.zeros_like(t)


INTERPOLANTS = {
    "linear": LinearInterpolant,
    "etflow": ETFlowInterpolant,
    "trigonometric": TrigonometricInterpolant,
}


def make_interpolant(name: str, **kwargs) -> Interpolant:
    """Build an interpolant by name (`linear`, `etflow`, `trigonometric`)."""
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolant {name!r}; choose one of {sorted(INTERPOLANTS)}")
    try:
        return INTERPOLANTS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"interpolant {name!r}: bad settings {sorted(kwargs)} ({err})") from None


def interpolant_from_spec(spec: dict) -> Interpolant:
    """`make_interpolant` from a config mapping {"name": ..., **settings}."""
    return make_interpolant(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
