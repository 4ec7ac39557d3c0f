"""The four symmetry treatments as regression losses, in denoiser and velocity form.

Denoiser form (prediction D ≈ x1, target x1):
  conventional   r = D - x1                              (CoM removed; EDM, ET-Flow)
  align-geodiff  r = D - A_{x_t}(x1)                     (target Kabsch-aligned to the input)
  align-af3      r = D - A_{sg(D)}(x1)                   (target aligned to the stop-grad prediction)
  quotient       r = P_{x_t}(D - x1)                     (horizontal projection at x_t)
Velocity form (prediction v, target u = α' x0 + β' x1 + γ' ε): conventional and quotient as above
with (v, u). The paper does not say how alignment applies to a velocity model; qdiff rotates the
target field with the rotation that aligns the clean structure x1 onto the reference (x_t for
GeoDiff, the stop-grad clean prediction x̂1 for AF3): r = v - R u.
Every residual is centered: translations are quotiented the same way in all four treatments.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..geometry import DEFAULT_EPS, center, horizontal_projection, kabsch_align, kabsch_rotation
from ..geometry._masks import atom_counts, atom_weights

TREATMENTS = ("conventional", "align-geodiff", "align-af3", "quotient")
PARAMETERIZATIONS = ("denoiser", "velocity")


def check_treatment(treatment: str) -> str:
    if treatment not in TREATMENTS:
        raise ValueError(f"unknown treatment {treatment!r}; choose one of {', '.join(TREATMENTS)}")
    return treatment


def sampler_geometry(treatment: str) -> str:
    """How a sampler treats updates for models trained with `treatment`: `horizontal` (projected
    updates, projected noise, curvature drift) for quotient, `center` (CoM removal) otherwise."""
    return "horizontal" if check_treatment(treatment) == "quotient" else "center"


def regression_residual(
    treatment: str,
    *,
    x_t: Tensor,
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    parameterization: str = "denoiser",
    clean_target: Tensor | None = None,
    clean_prediction: Tensor | None = None,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """The residual r [B, N, 3] whose squared norm is the treatment's loss (see module docstring).

    Velocity form with an alignment treatment needs `clean_target` (x1), and for align-af3 also
    `clean_prediction` (the clean structure implied by the prediction; it is detached here).
    """
    check_treatment(treatment)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; use one of {PARAMETERIZATIONS}")
    if treatment == "quotient":
        return horizontal_projection(x_t, prediction - target, mask, eps)
    if treatment == "conventional":
        return center(prediction - target, mask)
    if parameterization == "denoiser":
        ref = x_t if treatment == "align-geodiff" else prediction.detach()
        aligned = kabsch_align(target.detach(), ref.detach(), mask)
        return center(prediction, mask) - center(aligned, mask)
    if clean_target is None:
        raise ValueError(f"{treatment} in velocity form needs clean_target (x1)")
    if treatment == "align-geodiff":
        ref = x_t
    elif clean_prediction is None:
        raise ValueError("align-af3 in velocity form needs clean_prediction (the implied x̂1)")
    else:
        ref = clean_prediction
    R = kabsch_rotation(clean_target.detach(), ref.detach(), mask)
    rotated = center(target, mask) @ R.transpose(-1, -2)
    return center(prediction, mask) - rotated * atom_weights(target, mask)


def treatment_loss(
    treatment: str,
    *,
    x_t: Tensor,
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mse",
    **kwargs,
) -> Tensor:
    """Per-sample loss [B]: mean over valid atoms of |r_n|² (`mse`) or of |r_n| (`atom_l2`, the
    unsquared per-atom norm of ET-Flow), times `weight` [B] (the time weighting w(t)) if given."""
    r = regression_residual(
        treatment, x_t=x_t, prediction=prediction, target=target, mask=mask, **kwargs
    )
    w = atom_weights(x_t, mask)
    sq = (r**2).sum(-1, keepdim=True)
    if reduction == "mse":
        per_atom = sq
    elif reduction == "atom_l2":
        per_atom = torch.where(sq > 0, torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt(), 0 * sq)
    else:
        raise ValueError(f"unknown reduction {reduction!r}; use 'mse' or 'atom_l2'")
    loss = ((per_atom * w).sum(dim=(-2, -1)) / atom_counts(w).reshape(-1))
    return loss if weight is None else loss * weight
