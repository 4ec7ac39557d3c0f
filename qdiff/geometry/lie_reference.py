"""A general, slow reference for the quotient operators of any Lie group acting affinely.

The group acts on flattened clouds x in R^D through infinitesimal generators
xi_a(x) = A_a x + b_a (a = 1..k). At x the vertical space is span{xi_a(x)}; with the Gram matrix
G_ab = <xi_a, xi_b> the horizontal projector is P = I - V^T G⁺ V (V = [xi_a(x)] as rows), and the
mean-curvature vector of the orbit is the trace of its second fundamental form,

    h(x) = sum_ab (G⁻¹)_ab P(A_b xi_a(x))        (∇_{xi_a} xi_b = A_b xi_a in flat space),

which also equals -1/2 ∇ log det G(x) when the action is isometric. Used by the tests to check
the SE(3) closed forms of `qdiff.geometry.se3`; it builds D x D matrices, so keep D small.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .rotations import so3_generators


@dataclass(frozen=True)
class AffineGroupAction:
    """Generators xi_a(x) = matrices[a] @ x + offsets[a] on R^D; matrices [k, D, D], offsets [k, D]."""

    matrices: Tensor
    offsets: Tensor

    def vertical_basis(self, x: Tensor) -> Tensor:
        """The k vertical vectors xi_a(x) as rows, shape [k, D]."""
        return torch.einsum("kij,j->ki", self.matrices, x) + self.offsets

    def gram(self, x: Tensor) -> Tensor:
        """G_ab = <xi_a(x), xi_b(x)>, shape [k, k]."""
        V = self.vertical_basis(x)
        return V @ V.T

    def projection_matrix(self, x: Tensor, rcond: float = 1e-10) -> Tensor:
        """The orthogonal projector [D, D] onto the horizontal space (the complement of span xi_a)."""
        V = self.vertical_basis(x)
        G_pinv = torch.linalg.pinv(V @ V.T, rtol=rcond, hermitian=True)
        return torch.eye(x.numel(), dtype=x.dtype, device=x.device) - V.T @ G_pinv @ V

    def horizontal_projection(self, x: Tensor, v: Tensor) -> Tensor:
        return self.projection_matrix(x) @ v

    def mean_curvature(self, x: Tensor) -> Tensor:
        """Trace of the second fundamental form: sum_ab G⁻¹_ab P(A_b xi_a(x)) (G invertible)."""
        V = self.vertical_basis(x)
        G_inv = torch.linalg.inv(V @ V.T)
        second = torch.einsum("bij,aj->abi", self.matrices, V)  # [a, b, D] = A_b xi_a
        return self.projection_matrix(x) @ torch.einsum("ab,abi->i", G_inv, second)

    def log_volume_gradient(self, x: Tensor) -> Tensor:
        """-1/2 ∇_x log det G(x), by automatic differentiation."""
        x = x.detach().requires_grad_(True)
        logdet = torch.logdet(self.gram(x))
        (grad,) = torch.autograd.grad(logdet, x)
        return -0.5 * grad


def _rotation_generators(n_atoms: int, dtype: torch.dtype) -> Tensor:
    J = so3_generators(dtype)
    eye = torch.eye(n_atoms, dtype=dtype)
    return torch.stack([torch.kron(eye, J[i]) for i in range(3)])


def so3_action(n_atoms: int, dtype: torch.dtype = torch.float64) -> AffineGroupAction:
    """SO(3) rotating every point of a flattened cloud in R^{3N} (atom-major: x_1, x_2, ...)."""
    mats = _rotation_generators(n_atoms, dtype)
    return AffineGroupAction(mats, torch.zeros(3, 3 * n_atoms, dtype=dtype))


def se3_action(n_atoms: int, dtype: torch.dtype = torch.float64) -> AffineGroupAction:
    """SE(3) = translations (constant fields e_i on every atom) and rotations, on R^{3N}."""
    rot = _rotation_generators(n_atoms, dtype)
    trans = torch.eye(3, dtype=dtype).repeat(1, n_atoms)  # [3, 3N]
    mats = torch.cat([torch.zeros(3, 3 * n_atoms, 3 * n_atoms, dtype=dtype), rot])
    offsets = torch.cat([trans, torch.zeros(3, 3 * n_atoms, dtype=dtype)])
    return AffineGroupAction(mats, offsets)
