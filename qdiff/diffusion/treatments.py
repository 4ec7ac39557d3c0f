"""The four symmetry treatments as regression losses, in denoiser and velocity form.

Denoiser form (prediction D ≈ x1, target x1):
  conventional   r = D - x1                              (CoM removed; EDM, ET-Flow)
  align-geodiff  r = D - A_{x_t}(x1)                     (target Kabsch-aligned to the input)
  align-af3      r = D - A_{sg(D)}(x1)                   (target aligned to the stop-grad prediction)
  quotient       r = P_{x_t}(D - x1)                     (horizontal projection at x_t)
Velocity form (prediction v, target u = α' x0 + β' x1 + γ' ε): conventional and quotient as above
with (v, u). The alignment baselines regress onto the velocity of the *aligned endpoint*:

  align-*        r = v - u_A,   u_A = u + (A(x1) - x1) / (1 - t)

with A(x1) the Kabsch alignment of x1 onto the reference (x_t for GeoDiff, the stop-grad implied
clean structure x̂1 = x_t + (1 - t) v for AF3). The paper leaves this open (digest §3 and §6 q5).
Why this form: qdiff reads a velocity model's clean structure as x̂1 = x_t + (1 - t) v (AF3's
reference, self-conditioning, the Boltz realignment), and u_A is the target whose implied clean
structure is moved from x1 to A(x1). So
  * for the linear interpolant without noise, u_A = (A(x1) - x_t) / (1 - t): the straight path
    from x_t lands on A(x1), a rigid copy of x1, and |v - u_A|² = |x̂1 - A(x1)|² / (1 - t)² is
    the denoiser-form baseline on the implied x̂1 (rotating u instead, R u, lands on
    x_t + (1 - t) R (x1 - x0): not a rigid copy of x1 unless x0 is aligned too);
  * with A = identity, u_A = u for every interpolant: the baselines differ from the conventional
    loss by the alignment only. The other candidate, α' x0 + β' A(x1) + γ' ε, moves the endpoint
    of a path started at x0 and does not land on A(x1) from x_t; (A(x1) - x_t) / (1 - t) equals
    u_A without noise but, for ET-Flow's noisy interpolant (γ ≠ 0), replaces the noise velocity
    γ' ε by -γ ε / (1 - t), a bias the conventional model does not have.
Every residual is centered: translations are quotiented the same way in all four treatments.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..geometry import DEFAULT_EPS, center, horizontal_projection, kabsch_align
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
    t: Tensor | None = None,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """The residual r [B, N, 3] whose squared norm is the treatment's loss (see module docstring).

    Velocity form with an alignment treatment needs `clean_target` (x1) and the times `t` [B],
    and for align-af3 also `clean_prediction` (the clean structure implied by the prediction; it
    is detached here).
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
    if t is None:
        raise ValueError(f"{treatment} in velocity form needs the times t")
    if treatment == "align-geodiff":
        ref = x_t
    elif clean_prediction is None:
        raise ValueError("align-af3 in velocity form needs clean_prediction (the implied x̂1)")
    else:
        ref = clean_prediction
    x1 = center(clean_target.detach(), mask)
    aligned = center(kabsch_align(x1, ref.detach(), mask), mask)
    gap = (1 - torch.as_tensor(t, dtype=x1.dtype, device=x1.device)).reshape(-1, 1, 1)
    aligned_target = center(target, mask) + (aligned - x1) / gap
    return center(prediction, mask) - aligned_target * atom_weights(target, mask)


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
