"""Property tests of qdiff.geometry against definitions, a general Lie-group reference, autograd
and RDKit."""
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import random_clouds, random_mask
from qdiff.geometry import (
    apply_rotation,
    center,
    horizontal_projection,
    inertia_tensor,
    kabsch_align,
    kabsch_rotation,
    mean_curvature,
    random_rotation,
    rmsd,
    vertical_component,
)
from qdiff.geometry.lie_reference import se3_action, so3_action

sizes = st.integers(min_value=3, max_value=9)
batches = st.integers(min_value=1, max_value=4)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def flat(x):
    return x.reshape(-1)


def projection_matrix(x, mask=None):
    """The Jacobian of v -> P_x(v) for one cloud [1, N, 3], as a [3N, 3N] matrix."""
    n = x.shape[1]
    eye = torch.eye(3 * n, dtype=x.dtype).reshape(3 * n, n, 3)
    cols = horizontal_projection(x.expand(3 * n, -1, -1), eye, None if mask is None else mask.expand(3 * n, -1))
    return cols.reshape(3 * n, 3 * n).T


# ---------------------------------------------------------------- centering and inertia
@given(b=batches, n=sizes, seed=seeds)
def test_center_removes_masked_mean_and_zeroes_padding(b, n, seed):
    x = random_clouds(b, n + 2, seed)
    mask = random_mask(b, n + 2, seed)
    c = center(x, mask)
    assert torch.allclose(c.sum(dim=1), torch.zeros(b, 3, dtype=x.dtype), atol=1e-10)
    assert (c[~mask] == 0).all()
    shift = torch.randn(b, 1, 3, dtype=x.dtype)
    assert torch.allclose(center(x + shift, mask), c, atol=1e-10)


@given(b=batches, n=sizes, seed=seeds)
def test_inertia_tensor_matches_definition_and_rotates(b, n, seed):
    x = random_clouds(b, n, seed)
    xc = center(x)
    for i in range(b):
        K = sum(float(p @ p) * torch.eye(3, dtype=x.dtype) - torch.outer(p, p) for p in xc[i])
        assert torch.allclose(inertia_tensor(x)[i], K, atol=1e-10)
    R = random_rotation(b, torch.Generator().manual_seed(seed), dtype=x.dtype)
    K_rot = inertia_tensor(apply_rotation(R, x) + 3.0)
    assert torch.allclose(K_rot, R @ inertia_tensor(x) @ R.transpose(-1, -2), atol=1e-9)
    assert (torch.linalg.eigvalsh(inertia_tensor(x)) > -1e-10).all()


# ---------------------------------------------------------------- horizontal projection
@given(n=sizes, seed=seeds)
def test_projection_matches_general_lie_reference(n, seed):
    x = random_clouds(1, n, seed)
    v = random_clouds(1, n, seed + 1)
    ref = se3_action(n).horizontal_projection(flat(x), flat(v))
    assert torch.allclose(flat(horizontal_projection(x, v)), ref, atol=1e-9)
    # For a centered cloud, SO(3)-only projection of a centered field agrees too.
    xc, vc = center(x), center(v)
    ref_so3 = so3_action(n).horizontal_projection(flat(xc), flat(vc))
    assert torch.allclose(flat(horizontal_projection(xc, vc)), ref_so3, atol=1e-9)


@given(n=sizes, seed=seeds)
def test_projection_is_symmetric_idempotent_rank_3n_minus_6(n, seed):
    x = random_clouds(1, n, seed)
    P = projection_matrix(x)
    assert torch.allclose(P, P.T, atol=1e-10)
    assert torch.allclose(P @ P, P, atol=1e-9)
    assert torch.linalg.matrix_rank(P, atol=1e-8) == 3 * n - 6
    assert abs(torch.trace(P).item() - (3 * n - 6)) < 1e-8


@given(b=batches, n=sizes, seed=seeds)
def test_projection_fixes_x_and_kills_rigid_motions(b, n, seed):
    x = random_clouds(b, n, seed)
    xc = center(x)
    assert torch.allclose(horizontal_projection(x, xc), xc, atol=1e-9)
    omega = torch.randn(b, 1, 3, dtype=x.dtype)
    rigid = torch.cross(omega.expand_as(xc), xc, dim=-1) + torch.randn(b, 1, 3, dtype=x.dtype)
    assert torch.allclose(horizontal_projection(x, rigid), torch.zeros_like(x), atol=1e-9)
    v = random_clouds(b, n, seed + 1)
    assert torch.allclose(vertical_component(x, v) + horizontal_projection(x, v), v, atol=1e-10)
    Pv = horizontal_projection(x, v)
    # Horizontal: zero total linear and angular momentum.
    assert torch.allclose(Pv.sum(1), torch.zeros(b, 3, dtype=x.dtype), atol=1e-9)
    assert torch.allclose(torch.cross(xc, Pv, dim=-1).sum(1), torch.zeros(b, 3, dtype=x.dtype), atol=1e-9)


@given(b=batches, n=sizes, seed=seeds)
def test_projection_is_equivariant(b, n, seed):
    x, v = random_clouds(b, n, seed), random_clouds(b, n, seed + 1)
    R = random_rotation(b, torch.Generator().manual_seed(seed), dtype=x.dtype)
    shift = torch.randn(b, 1, 3, dtype=x.dtype)
    lhs = horizontal_projection(apply_rotation(R, x) + shift, apply_rotation(R, v))
    assert torch.allclose(lhs, apply_rotation(R, horizontal_projection(x, v)), atol=1e-9)


@given(b=batches, n=sizes, seed=seeds)
def test_padding_atoms_are_ignored(b, n, seed):
    pad = 3
    x, v = random_clouds(b, n + pad, seed), random_clouds(b, n + pad, seed + 1)
    mask = random_mask(b, n + pad, seed)
    garbage = 1e3 * torch.randn_like(x)
    x2 = torch.where(mask[..., None], x, garbage)
    v2 = torch.where(mask[..., None], v, garbage)
    for fn in (lambda a, u, m: horizontal_projection(a, u, m), lambda a, u, m: mean_curvature(a, m)):
        out, out2 = fn(x, v, mask), fn(x2, v2, mask)
        assert torch.allclose(out, out2, atol=1e-9)
        assert (out2[~mask] == 0).all()
    # Same result as the cloud with the padding removed.
    for i in range(b):
        xi, vi = x[i : i + 1, mask[i]], v[i : i + 1, mask[i]]
        assert torch.allclose(horizontal_projection(x, v, mask)[i, mask[i]], horizontal_projection(xi, vi)[0], atol=1e-9)


# ---------------------------------------------------------------- mean curvature
@given(n=sizes, seed=seeds)
def test_mean_curvature_matches_second_fundamental_form_and_log_volume_gradient(n, seed):
    x = random_clouds(1, n, seed)
    xc = flat(center(x))
    h = flat(mean_curvature(x))
    action = so3_action(n)
    assert torch.allclose(h, action.mean_curvature(xc), atol=1e-8)
    assert torch.allclose(h, action.log_volume_gradient(xc), atol=1e-8)
    assert torch.allclose(h, se3_action(n).mean_curvature(flat(x)), atol=1e-8)
    # -1/2 ∇ log det K directly
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.logdet(inertia_tensor(xg)).sum(), xg)
    assert torch.allclose(h, flat(-0.5 * g), atol=1e-8)


@given(b=batches, n=sizes, seed=seeds)
def test_mean_curvature_is_horizontal_equivariant_and_homogeneous(b, n, seed):
    x = random_clouds(b, n, seed)
    h = mean_curvature(x)
    assert torch.allclose(horizontal_projection(x, h), h, atol=1e-9)
    xc = center(x)
    assert torch.allclose((xc * h).sum(dim=(1, 2)), torch.full((b,), -3.0, dtype=x.dtype), atol=1e-8)
    R = random_rotation(b, torch.Generator().manual_seed(seed), dtype=x.dtype)
    assert torch.allclose(mean_curvature(apply_rotation(R, x) - 2.0), apply_rotation(R, h), atol=1e-9)
    # h scales like 1/|x|
    assert torch.allclose(mean_curvature(3.0 * x), h / 3.0, atol=1e-9)


# ---------------------------------------------------------------- degenerate clouds
def test_single_atom_cloud_is_finite_and_zero():
    x = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    v = torch.tensor([[[0.5, -1.0, 2.0]]], dtype=torch.float64)
    assert torch.equal(horizontal_projection(x, v), torch.zeros_like(v))
    assert torch.equal(mean_curvature(x), torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 6])
def test_collinear_clouds_have_the_exact_sphere_curvature(n, dtype):
    direction = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    offsets = torch.linspace(-1.3, 2.1, n, dtype=torch.float64) ** 3 + torch.arange(n)
    x = (offsets[:, None] * direction + torch.tensor([0.3, -1.0, 4.0]))[None].to(dtype)
    h = mean_curvature(x)
    xc = center(x)
    expected = -2 * xc / (xc**2).sum()  # orbit = 2-sphere of radius |x|: mean curvature -2x/|x|^2
    assert torch.isfinite(h).all()
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(h, expected, atol=tol * expected.abs().max().item(), rtol=tol)
    v = random_clouds(1, n, 3, dtype=dtype)
    Pv = horizontal_projection(x, v)
    assert torch.isfinite(Pv).all()
    P = projection_matrix(x.to(torch.float64))
    assert torch.linalg.matrix_rank(P, atol=1e-6) == 3 * n - 5
    ref = se3_action(n).horizontal_projection(flat(x.to(torch.float64)), flat(v.to(torch.float64)))
    assert torch.allclose(flat(Pv).to(torch.float64), ref, atol=10 * tol)


def test_near_collinear_curvature_is_bounded_by_the_regularization():
    eps = 1e-6
    for wiggle in [1e-3, 1e-6, 1e-9, 0.0]:
        x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, wiggle, 0], [3, 0, 0]]], dtype=torch.float64)
        h = mean_curvature(x, eps=eps)
        xc = center(x)
        bound = xc.norm(dim=-1).max() / (eps * (xc**2).sum()) + 2 / xc.norm()
        assert torch.isfinite(h).all() and h.norm(dim=-1).max() <= bound


@pytest.mark.parametrize("n", [1, 2, 4])
def test_degenerate_gradients_are_finite(n):
    x = torch.zeros(1, n, 3, dtype=torch.float64)
    x[0, :, 0] = torch.arange(n, dtype=torch.float64)
    x.requires_grad_(True)
    v = torch.randn(1, n, 3, dtype=torch.float64)
    loss = (horizontal_projection(x, v) ** 2).sum() + (mean_curvature(x) ** 2).sum()
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(g).all()


# ---------------------------------------------------------------- gradients and dtypes
@given(n=st.integers(3, 6), seed=seeds)
def test_float64_gradients_match_finite_differences(n, seed):
    x = random_clouds(2, n, seed).requires_grad_(True)
    v = random_clouds(2, n, seed + 1).requires_grad_(True)
    mask = random_mask(2, n, seed, min_valid=3)
    y = random_clouds(2, n, seed + 2)
    # Finite differences need a well-conditioned cloud: near-collinear ones (smallest inertia
    # eigenvalue below 5% of sum|x|^2) have curvature ~1/λ² that a 1e-6 step cannot resolve.
    # Degenerate clouds are covered by the tests above.
    with torch.no_grad():
        lam = torch.linalg.eigvalsh(inertia_tensor(x, mask))[:, 0] / (center(x, mask) ** 2).sum((1, 2))
    assume(bool((lam > 0.05).all()))
    assert torch.autograd.gradcheck(lambda a: center(a, mask), (x,))
    assert torch.autograd.gradcheck(lambda a, u: horizontal_projection(a, u, mask), (x, v))
    assert torch.autograd.gradcheck(lambda a: mean_curvature(a, mask), (x,))
    assert torch.autograd.gradcheck(lambda a: kabsch_align(a, y, mask), (x,))
    assert torch.autograd.gradcheck(lambda a: rmsd(a, y, mask), (x,))


def test_float32_and_device(device):
    x = random_clouds(4, 20, 0, dtype=torch.float32, device=device)
    v = random_clouds(4, 20, 1, dtype=torch.float32, device=device)
    mask = random_mask(4, 20, 0, device=device)
    ref = horizontal_projection(x.double(), v.double(), mask)
    out = horizontal_projection(x, v, mask)
    assert out.dtype == torch.float32 and out.device.type == device.type
    assert torch.allclose(out.double(), ref, atol=1e-5)
    h = mean_curvature(x, mask)
    assert h.dtype == torch.float32
    assert torch.allclose(h.double(), mean_curvature(x.double(), mask), atol=1e-5)
    r = rmsd(x, v, mask)
    assert r.dtype == torch.float32 and r.shape == (4,)


# ---------------------------------------------------------------- alignment and rotations
@given(b=batches, n=sizes, seed=seeds)
def test_kabsch_recovers_a_rigid_motion_with_proper_rotations(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = random_clouds(b, n, seed)
    R = random_rotation(b, g, dtype=x.dtype)
    y = apply_rotation(R, x) + torch.randn(b, 1, 3, generator=g, dtype=x.dtype)
    assert torch.allclose(kabsch_align(x, y), y, atol=1e-8)
    assert torch.allclose(kabsch_rotation(x, y), R, atol=1e-8)
    assert torch.allclose(rmsd(x, y), torch.zeros(b, dtype=x.dtype), atol=1e-7)
    mirror = x * torch.tensor([1.0, 1.0, -1.0], dtype=x.dtype)
    Rm = kabsch_rotation(mirror, x)
    assert torch.allclose(torch.linalg.det(Rm), torch.ones(b, dtype=x.dtype), atol=1e-9)


@given(n=st.integers(3, 12), seed=seeds)
def test_rmsd_and_weighted_alignment_agree_with_rdkit(n, seed):
    from rdkit import Geometry  # noqa: F401
    from rdkit.Numerics import rdAlignment

    x, y = random_clouds(1, n, seed), random_clouds(1, n, seed + 1)
    w = torch.rand(1, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    ssd, transform = rdAlignment.GetAlignmentTransform(y[0].numpy(), x[0].numpy())
    assert math.isclose(rmsd(x, y).item(), math.sqrt(ssd / n), rel_tol=1e-7, abs_tol=1e-9)
    wssd, _ = rdAlignment.GetAlignmentTransform(y[0].numpy(), x[0].numpy(), weights=w[0].numpy())
    aligned = kabsch_align(x, y, weights=w)
    ours = float((w[0] * ((aligned - y) ** 2).sum(-1)[0]).sum())
    assert math.isclose(ours, wssd, rel_tol=1e-6, abs_tol=1e-9)


def test_random_rotation_is_haar():
    n = 20000
    R = random_rotation(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand(n, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(n, dtype=R.dtype), atol=1e-12)
    # Haar: E[R] = 0, E[R_ij^2] = 1/3, and tr R has density (1 - cos θ)/π: E[tr R] = 0, E[tr R^2] = 1.
    se = 1 / math.sqrt(n)
    assert R.mean(0).abs().max() < 5 * se * math.sqrt(1 / 3)
    assert ((R**2).mean(0) - 1 / 3).abs().max() < 5 * se * math.sqrt(4 / 45)
    tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs((tr**2).mean().item() - 1.0) < 5 * se * tr.pow(2).std().item()


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        center(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="mask shape"):
        center(torch.zeros(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not match"):
        horizontal_projection(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3))
    _ = np


# ---------------------------------------------------------------- the closed-form 3x3 filter
def _eigh_filter(K: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Independent reference: V diag(f(λ)) Vᵀ from LAPACK's eigh, f(λ) = λ(λ² + 2δ²)/(λ² + δ²)²."""
    K = K.to(torch.float64)
    delta = eps * K.diagonal(dim1=-2, dim2=-1).sum(-1) / 2
    lam, V = torch.linalg.eigh(K)
    d2 = (delta**2)[:, None]
    f = lam * (lam**2 + 2 * d2) / (lam**2 + d2) ** 2
    return V @ torch.diag_embed(f) @ V.transpose(-1, -2)


def _special_clouds() -> dict:
    """Clouds whose inertia tensors have repeated eigenvalues (where the closed-form eigenvalues
    are least accurate), a planar one, a zero one and extreme scales, each randomly rotated."""
    import itertools
    import math

    g = torch.Generator().manual_seed(11)
    R = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    angles = torch.arange(6, dtype=torch.float64) * 2 * math.pi / 6
    tetrahedron = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    clouds = {
        "hexagon (2 equal)": torch.stack([angles.cos(), angles.sin(), torch.zeros(6, dtype=torch.float64)], -1),
        "tetrahedron (3 equal)": tetrahedron,
        "cube (3 equal)": torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=torch.float64),
        "nearly a tetrahedron": tetrahedron + 1e-7 * torch.randn(4, 3, generator=g, dtype=torch.float64),
        "planar": torch.cat([torch.randn(7, 2, generator=g, dtype=torch.float64), torch.zeros(7, 1, dtype=torch.float64)], -1),
        "large (1e4 Å)": 1e4 * torch.randn(30, 3, generator=g, dtype=torch.float64),
        "small (1e-4 Å)": 1e-4 * torch.randn(30, 3, generator=g, dtype=torch.float64),
        "elongated": torch.randn(20, 3, generator=g, dtype=torch.float64) * torch.tensor([30.0, 1.0, 0.05], dtype=torch.float64),
    }
    return {name: (x @ R.T)[None] for name, x in clouds.items()}


@pytest.mark.parametrize("name", list(_special_clouds()))
def test_closed_form_filter_equals_the_eigendecomposition(name):
    from qdiff.geometry.se3 import regularized_inverse

    K = inertia_tensor(_special_clouds()[name])
    expected = _eigh_filter(K)
    for method in ("closed_form", "solve"):
        got = regularized_inverse(K, method=method)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))


def test_closed_form_filter_on_random_batches_and_the_zero_cloud():
    from qdiff.geometry.se3 import regularized_inverse

    K = inertia_tensor(random_clouds(64, 9, 7, dtype=torch.float64))
    torch.testing.assert_close(regularized_inverse(K, method="closed_form"), _eigh_filter(K), rtol=1e-11, atol=1e-14)
    zero = torch.zeros(2, 3, 3, dtype=torch.float64)
    assert torch.equal(regularized_inverse(zero, method="closed_form"), zero)
    with pytest.raises(ValueError, match="method 'adjugate'"):
        regularized_inverse(K, method="adjugate")


@pytest.mark.parametrize("n", [2, 3, 6])
def test_closed_form_keeps_the_exact_collinear_curvature(n, monkeypatch):
    """The degenerate-cloud contract (see test_collinear_clouds_have_the_exact_sphere_curvature) with
    the closed form in every operator."""
    import functools

    import qdiff.geometry.se3 as se3

    monkeypatch.setattr(se3, "regularized_inverse", functools.partial(se3.regularized_inverse, method="closed_form"))
    test_collinear_clouds_have_the_exact_sphere_curvature(n, torch.float64)
    test_collinear_clouds_have_the_exact_sphere_curvature(n, torch.float32)
    test_single_atom_cloud_is_finite_and_zero()


def test_closed_form_eigenvalues_and_gradients():
    from qdiff.geometry.se3 import _regularized_inverse_solve, regularized_inverse, symmetric_eigenvalues

    K = inertia_tensor(random_clouds(16, 6, 8, dtype=torch.float64))
    torch.testing.assert_close(symmetric_eigenvalues(K), torch.linalg.eigvalsh(K), rtol=1e-12, atol=1e-12)
    K1 = K.clone().requires_grad_(True)
    K2 = K.clone().requires_grad_(True)
    weights = torch.randn(16, 3, 3, dtype=torch.float64)
    (regularized_inverse(K1, method="closed_form") * weights).sum().backward()
    (_regularized_inverse_solve(K2, 1e-6) * weights).sum().backward()
    torch.testing.assert_close(K1.grad, K2.grad)
    assert torch.autograd.gradcheck(lambda k: regularized_inverse(k + k.transpose(-1, -2), method="closed_form"),
                                    (K[:2].clone().requires_grad_(True),))
