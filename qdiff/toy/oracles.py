"""Oracle denoisers: the exact minimizer of each treatment's loss on a toy target.

  conventional   E[x1 | x_t]
  quotient       P_{x_t} E[x1 | x_t] + an arbitrary vertical field (here a random rigid motion:
                 the loss cannot see it, and neither may the sampler)
  align-geodiff  E[A_{x_t}(x1) | x_t]                (Monte Carlo over exact posterior draws)
  align-af3      g · E[A_{x_t}(x1) | x_t]            (g: an arbitrary rotation, here one random
                 rotation per trajectory about the prediction's centroid; optionally realigned
                 onto x_t before each update, the Boltz-1 fix)

`OracleVelocity` is the minimizer of the same treatment's *velocity-form* loss (Gaussian prior):
Eq. 4's velocity of the conventional/quotient oracle, and for the alignment baselines the
conventional velocity moved by the aligned endpoint, E[u | x_t] + (D_align - E[x1 | x_t]) / (1 - t)
(`qdiff.diffusion.treatments`: u_A = u + (A(x1) - x1) / (1 - t)). For the linear interpolant both
forms give the same field; the table shows it.

`vertical_drift` = c adds c · ω̂(x) × x to any oracle, with the equivariant unit axial vector
ω̂ = ω / |ω|, ω(x) = sum_n x_n × x_{n+1} (cyclic, centered x): a rigid-rotation error such as a learned network
makes. In continuous time a vertical drift only moves samples along orbits and cannot change the
sampled shape distribution; a discretized conventional sampler follows it (longer paths, and the
final denoiser step adds it orthogonally, which inflates |x|), the quotient sampler projects it
away exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion import Interpolant, check_treatment
from ..geometry import center, horizontal_projection, kabsch_align, random_rotation
from .targets import ToyTarget


@dataclass
class OracleDenoiser:
    target: ToyTarget
    treatment: str
    interpolant: Interpolant
    generator: torch.Generator
    mc_draws: int = 32
    vertical_scale: float = 1.0
    boltz_realign: bool = False
    vertical_drift: float = 0.0
    _g: Tensor | None = None

    def __post_init__(self):
        check_treatment(self.treatment)

    def __call__(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        D = self._minimizer(x.to(torch.float64), t)
        if self.vertical_drift:
            D = D + self.vertical_drift * equivariant_rotation_field(x.to(torch.float64))
        return D

    def _minimizer(self, x: Tensor, t: Tensor) -> Tensor:
        ah, b = self.interpolant.alpha_hat(t), self.interpolant.beta(t)
        if self.treatment == "conventional":
            return self.target.denoiser(x, ah, b)
        if self.treatment == "quotient":
            D = horizontal_projection(x, self.target.denoiser(x, ah, b))
            return D + self._random_rigid_motion(x)
        D = self.target.aligned_denoiser(x, ah, b, self.mc_draws, self.generator)
        if self.treatment == "align-af3":
            if self._g is None or self._g.shape[0] != x.shape[0]:
                self._g = random_rotation(x.shape[0], self.generator, dtype=x.dtype)
            D = center(D) @ self._g.transpose(-1, -2)
            if self.boltz_realign:
                D = center(kabsch_align(D, x))
        return D

    def _random_rigid_motion(self, x: Tensor) -> Tensor:
        """omega × x_n + c with omega, c ~ N(0, vertical_scale² I): a vertical field at x."""
        if self.vertical_scale == 0:
            return torch.zeros_like(x)
        B = x.shape[0]
        omega = self.vertical_scale * torch.randn(B, 1, 3, generator=self.generator, dtype=x.dtype)
        shift = self.vertical_scale * torch.randn(B, 1, 3, generator=self.generator, dtype=x.dtype)
        return torch.cross(omega.expand_as(x), center(x), dim=-1) + shift


def equivariant_rotation_field(x: Tensor) -> Tensor:
    """ω̂(x) × x_n, ω̂ = ω/|ω|, ω(x) = sum_n x_n × x_{n+1} (cyclic): equivariant and vertical."""
    xc = center(x)
    omega = torch.cross(xc, xc.roll(-1, dims=-2), dim=-1).sum(dim=-2, keepdim=True)
    omega = omega / omega.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.cross(omega.expand_as(xc), xc, dim=-1)


@dataclass
class OracleVelocity:
    """The exact minimizer of `denoiser.treatment`'s velocity-form loss, as a velocity field.

    conventional, quotient: v = velocity_from_denoiser(x, D) with D the denoiser oracle (Eq. 4; a
    vertical part of D stays vertical, as x_t is horizontal at itself).
    align-*: v = velocity_from_denoiser(x, E[x1 | x]) + (D_align - E[x1 | x]) / (1 - t), the
    conditional mean of the aligned-endpoint target u + (A(x1) - x1) / (1 - t).
    """

    denoiser: OracleDenoiser

    def __call__(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        it = self.denoiser.interpolant
        x64 = x.to(torch.float64)
        D = self.denoiser(x64, t, mask)
        if self.denoiser.treatment in ("conventional", "quotient"):
            return it.velocity_from_denoiser(x64, D, t)
        mean = self.denoiser.target.denoiser(x64, it.alpha_hat(t), it.beta(t))
        gap = (1 - t.to(torch.float64)).reshape(-1, 1, 1)
        return it.velocity_from_denoiser(x64, mean, t) + (center(D) - mean) / gap
