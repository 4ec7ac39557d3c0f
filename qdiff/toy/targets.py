"""Toy targets on centered R^{3N} whose exact denoiser E[x1 | x_t] is known.

The forward model is x_t = α̂ ε + β x1 with ε a standard Gaussian on the centered subspace
(d = 3(N-1) dimensions). Two families:

* `GaussianTarget`: x1 ~ N(0, σ² I_d), SO(3)-invariant; E[x1 | x_t] = β σ² / (α̂² + β² σ²) · x_t.
* `RigidMixtureTarget`: x1 = R S_k + σ_j ξ with k ~ π, R Haar-uniform, ξ standard Gaussian
  (σ_j = 0: exactly rigid). With τ² = α̂² + β² σ_j², the posterior of (k, R) is
  p(k | x_t) ∝ π_k exp(-β²|S_k|²/(2τ²)) c(F_k), R | k, x_t ~ matrix Fisher(F_k = β/τ² · x_t^T S_k),
  and E[x1 | x_t] = sum_k p(k|x_t) (1 - β²σ_j²/τ²) S_k E[R|k]^T + (β σ_j²/τ²) x_t.

Each target also draws exact posterior samples of x1 | x_t, from which the alignment treatments'
targets E[A_{x_t}(x1) | x_t] are estimated by Monte Carlo (they have no closed form).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry import center, kabsch_align, random_rotation
from ..geometry.matrix_fisher import matrix_fisher_mean, sample_matrix_fisher
from .shapes import shape


def _centered_normal(shape_: tuple[int, ...], generator, dtype) -> Tensor:
    z = torch.randn(shape_, generator=generator, dtype=dtype)
    return z - z.mean(dim=-2, keepdim=True)


class ToyTarget:
    n_atoms: int
    name: str

    @property
    def dim(self) -> int:
        """Dimension of the centered configuration space, 3(N-1)."""
        return 3 * (self.n_atoms - 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...
    def denoiser(self, x: Tensor, alpha_hat: Tensor, beta: Tensor) -> Tensor: ...
    def posterior_sample(
        self, x: Tensor, alpha_hat: Tensor, beta: Tensor, draws: int = 1, generator=None
    ) -> Tensor:
        """`draws` exact samples of x1 | x_t per cloud, shape [B, draws, N, 3]."""
    def expected_sq_norm(self) -> float: ...

    def aligned_denoiser(
        self, x: Tensor, alpha_hat: Tensor, beta: Tensor, draws: int, generator=None
    ) -> Tensor:
        """Monte Carlo E[A_{x_t}(x1) | x_t] with `draws` exact posterior samples per cloud."""
        B = x.shape[0]
        x1 = self.posterior_sample(x, alpha_hat, beta, draws, generator).flatten(0, 1)
        xs = x.repeat_interleave(draws, dim=0)
        aligned = center(kabsch_align(x1, xs))
        return aligned.reshape(B, draws, *x.shape[1:]).mean(dim=1)


@dataclass
class GaussianTarget(ToyTarget):
    n_atoms: int = 5
    sigma: float = 1.0
    name: str = "gaussian"

    def sample(self, n, generator=None):
        return self.sigma * _centered_normal((n, self.n_atoms, 3), generator, torch.float64)

    def _shrink(self, alpha_hat, beta):
        tau2 = alpha_hat**2 + beta**2 * self.sigma**2
        return (beta * self.sigma**2 / tau2).reshape(-1, 1, 1), (alpha_hat**2 * self.sigma**2 / tau2)

    def denoiser(self, x, alpha_hat, beta):
        return self._shrink(alpha_hat, beta)[0] * center(x)

    def posterior_sample(self, x, alpha_hat, beta, draws=1, generator=None):
        mean_coef, var = self._shrink(alpha_hat, beta)
        z = _centered_normal((x.shape[0], draws) + tuple(x.shape[1:]), generator, x.dtype)
        return (mean_coef * center(x))[:, None] + var.sqrt().reshape(-1, 1, 1, 1) * z

    def expected_sq_norm(self):
        return self.dim * self.sigma**2


@dataclass
class RigidMixtureTarget(ToyTarget):
    shapes: Tensor  # [K, N, 3], centered
    weights: Tensor  # [K], sums to 1
    jitter: float = 0.0
    name: str = "mixture"

    def __post_init__(self):
        self.shapes = center(self.shapes.to(torch.float64))
        self.weights = self.weights.to(torch.float64) / self.weights.sum()
        if self.shapes.shape[0] != self.weights.shape[0]:
            raise ValueError("one weight per shape")
        self.n_atoms = self.shapes.shape[1]

    @classmethod
    def from_names(cls, names, weights=None, jitter=0.0, name="mixture"):
        shapes = torch.stack([shape(n) for n in names])
        w = torch.ones(len(names)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        return cls(shapes, w, jitter, name)

    def sample(self, n, generator=None):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        R = random_rotation(n, generator, dtype=torch.float64)
        x = self.shapes[k] @ R.transpose(-1, -2)
        return x + self.jitter * _centered_normal((n, self.n_atoms, 3), generator, torch.float64)

    def _posterior(self, x, alpha_hat, beta):
        """Component log-posteriors [B, K] and matrix Fisher parameters F [B, K, 3, 3]."""
        tau2 = (alpha_hat**2 + beta**2 * self.jitter**2).reshape(-1, 1)
        F = torch.einsum("bni,knj->bkij", center(x), self.shapes) * (beta.reshape(-1, 1) / tau2)[..., None, None]
        ER, log_c = matrix_fisher_mean(F)
        sq = (self.shapes**2).sum(dim=(-2, -1))
        logits = torch.log(self.weights) - beta.reshape(-1, 1) ** 2 * sq / (2 * tau2) + log_c
        return torch.log_softmax(logits, dim=-1), F, ER, tau2

    def component_posterior(self, x, alpha_hat, beta):
        return self._posterior(x, alpha_hat, beta)[0].exp()

    def denoiser(self, x, alpha_hat, beta):
        logp, _, ER, tau2 = self._posterior(x, alpha_hat, beta)
        rotated = torch.einsum("knj,bkij->bkni", self.shapes, ER)  # S_k E[R]^T
        b2 = (beta.reshape(-1, 1) ** 2 * self.jitter**2 / tau2).reshape(-1, 1, 1)
        mean_shape = torch.einsum("bk,bkni->bni", logp.exp(), rotated)
        return (1 - b2) * mean_shape + (beta.reshape(-1, 1) * self.jitter**2 / tau2).reshape(-1, 1, 1) * center(x)

    def posterior_sample(self, x, alpha_hat, beta, draws=1, generator=None):
        logp, F, _, tau2 = self._posterior(x, alpha_hat, beta)
        B, K = logp.shape
        k = torch.multinomial(logp.exp(), draws, replacement=True, generator=generator)  # [B, draws]
        R = torch.empty(B, draws, 3, 3, dtype=torch.float64)
        for j in range(K):  # one SVD per (cloud, component), then `hits` draws from it
            hits = (k == j).sum(dim=1)
            if hits.sum() == 0:
                continue
            Rj = sample_matrix_fisher(F[:, j], int(hits.max()), generator)
            rank = torch.cumsum(k == j, dim=1) - 1
            sel = k == j
            R[sel] = Rj[torch.arange(B)[:, None].expand(B, draws)[sel], rank[sel]]
        rigid = torch.einsum("bdij,bdnj->bdni", R, self.shapes[k])
        if self.jitter == 0:
            return rigid
        b = beta.reshape(-1, 1, 1, 1)
        t2 = tau2.reshape(-1, 1, 1, 1)
        mean = rigid + (b * self.jitter**2 / t2) * (center(x)[:, None] - b * rigid)
        var = alpha_hat.reshape(-1, 1, 1, 1) ** 2 * self.jitter**2 / t2
        noise = _centered_normal(tuple(rigid.shape), generator, x.dtype)
        return mean + var.sqrt() * noise

    def expected_sq_norm(self):
        sq = (self.shapes**2).sum(dim=(-2, -1))
        return float((self.weights * sq).sum()) + self.dim * self.jitter**2

    def assign(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest shape under proper rigid motions: (index [B], RMSD [B])."""
        from ..geometry import rmsd

        d = torch.stack(
            [rmsd(x.to(torch.float64), s.expand(x.shape[0], -1, -1)) for s in self.shapes], dim=-1
        )
        best = d.min(dim=-1)
        return best.indices, best.values


def make_target(name: str, jitter: float = 0.1, shape_name: str = "pentamer") -> ToyTarget:
    """`gaussian` (N = 5, σ = 1), `shape` (one rigid shape under random rotation) or `mixture`
    (pentamer, its mirror image and a bipyramid with weights 0.5 / 0.3 / 0.2)."""
    if name == "gaussian":
        return GaussianTarget()
    if name == "shape":
        return RigidMixtureTarget.from_names([shape_name], jitter=jitter, name="shape")
    if name == "mixture":
        return RigidMixtureTarget.from_names(
            ["pentamer", "mirror-pentamer", "bipyramid"], [0.5, 0.3, 0.2], jitter=jitter
        )
    raise ValueError(f"unknown toy target {name!r}; choose gaussian, shape or mixture")


TARGETS = ("gaussian", "shape", "mixture")
