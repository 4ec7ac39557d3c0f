"""Interpolants, priors, treatment losses and samplers."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import random_clouds, random_mask
from qdiff.diffusion import (
    INTERPOLANTS,
    TREATMENTS,
    Fields,
    PriorSpectrum,
    denoiser_and_score_from_velocity,
    denoiser_noise_schedule,
    fields_from_denoiser,
    fields_from_velocity,
    gaussian_prior,
    harmonic_prior,
    harmonic_spectrum,
    make_interpolant,
    proteina_noise_schedule,
    proteina_time_grid,
    regression_residual,
    sample_ode,
    sample_sde,
    sampler_geometry,
    time_grid,
    treatment_loss,
)
from qdiff.diffusion.priors import graph_laplacian
from qdiff.geometry import apply_rotation, center, kabsch_align, kabsch_rotation, random_rotation, rmsd

seeds = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------- interpolants
@pytest.mark.parametrize("name", sorted(INTERPOLANTS))
def test_interpolant_boundaries_and_velocity(name):
    it = make_interpolant(name)
    x0, x1, eps = (random_clouds(3, 5, s) for s in range(3))
    assert torch.allclose(it.sample(x0, x1, eps, 0.0), x0)
    assert torch.allclose(it.sample(x0, x1, eps, 1.0), x1, atol=1e-12)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    h = 1e-6
    fd = (it.sample(x0, x1, eps, t + h) - it.sample(x0, x1, eps, t - h)) / (2 * h)
    assert torch.allclose(it.velocity_target(x0, x1, eps, t), fd, atol=1e-6)
    ahd_fd = (it.alpha_hat(t + h) - it.alpha_hat(t - h)) / (2 * h)
    assert torch.allclose(it.alpha_hat_dot(t), ahd_fd, atol=1e-6)


@pytest.mark.parametrize("name", sorted(INTERPOLANTS))
def test_denoiser_velocity_score_conversions(name):
    it = make_interpolant(name)
    x, D = random_clouds(3, 5, 0), random_clouds(3, 5, 1)
    t = torch.tensor([0.1, 0.4, 0.9], dtype=torch.float64)
    v = it.velocity_from_denoiser(x, D, t)
    assert torch.allclose(it.denoiser_from_velocity(x, v, t), D, atol=1e-9)
    # Gaussian target N(0, σ² I): exact denoiser and exact score agree through Tweedie.
    sigma = 0.7
    ah, b = it.alpha_hat(t).reshape(-1, 1, 1), it.beta(t).reshape(-1, 1, 1)
    exact_D = b * sigma**2 / (ah**2 + b**2 * sigma**2) * x
    exact_score = -x / (ah**2 + b**2 * sigma**2)
    assert torch.allclose(it.score_from_denoiser(x, exact_D, t), exact_score, atol=1e-9)


def test_unknown_interpolant():
    with pytest.raises(ValueError, match="unknown interpolant"):
        make_interpolant("cosine-ish")


# ---------------------------------------------------------------- priors
def test_gaussian_prior_is_centered_and_masked():
    mask = random_mask(4, 9, 0)
    x = gaussian_prior((4, 9, 3), mask, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.sum(1), torch.zeros(4, 3), atol=1e-5)
    assert (x[~mask] == 0).all()


def chain_adjacency(n, b=1):
    A = torch.zeros(b, n, n)
    idx = torch.arange(n - 1)
    A[:, idx, idx + 1] = 1
    A[:, idx + 1, idx] = 1
    return A


def test_harmonic_prior_covariance_is_the_laplacian_pseudo_inverse():
    n, draws = 6, 40000
    A = chain_adjacency(n, draws)
    x = harmonic_prior(A, stiffness=2.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = torch.einsum("bi,bj->ij", x[..., 0], x[..., 0]) / draws
    expected = torch.linalg.pinv(2.0 * graph_laplacian(A[:1])[0])
    # Each entry is a mean of products of Gaussians: SE <= sqrt(2) max var / sqrt(draws).
    se = math.sqrt(2) * expected.diagonal().max() / math.sqrt(draws)
    assert (cov - expected).abs().max() < 5 * se
    bond = (x[:, 1:] - x[:, :-1]).pow(2).sum(-1).mean()
    assert abs(bond.item() - 3 / 2.0) < 0.05  # E|x_i - x_j|^2 = 3/stiffness for a chain bond


def test_harmonic_prior_with_padding_and_fragments():
    n = 7
    A = chain_adjacency(n, 2)
    A[:, 2, 3] = A[:, 3, 2] = 0  # two fragments
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 5:] = False
    A[1, 5:, :] = 0
    A[1, :, 5:] = 0
    x = harmonic_prior(A, mask, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(x).all() and (x[~mask] == 0).all()
    assert torch.allclose(x.sum(1), torch.zeros(2, 3), atol=1e-5)


def test_harmonic_prior_draw_does_not_depend_on_the_padding():
    """Padding modes sort after the real ones, so z[:, :n] gives a molecule of n atoms the same x0
    in any padded batch (what lets data-parallel ranks reproduce a single process)."""
    n = 7
    z = torch.randn(1, n + 9, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    draws = []
    for N in (n, n + 9):
        A = torch.zeros(1, N, N)
        A[:, :n, :n] = chain_adjacency(n, 1)
        A[0, 0, 3] = A[0, 3, 0] = 1.0  # a ring closure
        mask = torch.zeros(1, N, dtype=torch.bool)
        mask[0, :n] = True
        draws.append(harmonic_prior(A, mask, z=z[:, :N], dtype=torch.float64)[0, :n])
    assert torch.allclose(draws[0], draws[1], atol=1e-10)


def test_harmonic_prior_aligned_to_data_is_closer():
    n, b = 8, 64
    A = chain_adjacency(n, b)
    x1 = center(random_clouds(b, n, 3, dtype=torch.float32))
    g = torch.Generator().manual_seed(2)
    free = harmonic_prior(A, generator=g)
    g = torch.Generator().manual_seed(2)
    aligned = harmonic_prior(A, align_to=x1, generator=g)
    assert torch.allclose(rmsd(aligned, x1, align=False), rmsd(free, x1), atol=1e-4)
    assert (rmsd(aligned, x1, align=False) <= rmsd(free, x1, align=False) + 1e-5).all()


# ---------------------------------------------------------------- treatments
def _rigid_field(x, seed):
    g = torch.Generator().manual_seed(seed)
    omega = torch.randn(x.shape[0], 1, 3, generator=g, dtype=x.dtype)
    shift = torch.randn(x.shape[0], 1, 3, generator=g, dtype=x.dtype)
    return torch.cross(omega.expand_as(x), center(x), dim=-1) + shift


@given(seed=seeds, n=st.integers(3, 10))
@pytest.mark.parametrize("parameterization", ["denoiser", "velocity"])
def test_quotient_loss_is_exactly_invariant_to_rigid_motion_fields(parameterization, seed, n):
    x_t, pred, target = (random_clouds(3, n, seed + i) for i in range(3))
    base = treatment_loss("quotient", x_t=x_t, prediction=pred, target=target, parameterization=parameterization)
    moved = treatment_loss(
        "quotient", x_t=x_t, prediction=pred + 10 * _rigid_field(x_t, seed), target=target,
        parameterization=parameterization,
    )
    assert torch.allclose(base, moved, rtol=1e-9, atol=1e-9)
    # ...while the conventional loss sees the rotation (only translations are free there).
    conv = treatment_loss("conventional", x_t=x_t, prediction=pred, target=target)
    conv_moved = treatment_loss("conventional", x_t=x_t, prediction=pred + 10 * _rigid_field(x_t, seed), target=target)
    assert not torch.allclose(conv, conv_moved)
    shift = torch.randn(3, 1, 3, dtype=x_t.dtype)
    assert torch.allclose(conv, treatment_loss("conventional", x_t=x_t, prediction=pred + shift, target=target))


def test_quotient_loss_gradient_has_no_rigid_component():
    x_t, pred, target = (random_clouds(2, 6, i) for i in range(3))
    pred.requires_grad_(True)
    treatment_loss("quotient", x_t=x_t, prediction=pred, target=target).sum().backward()
    g = pred.grad
    from qdiff.geometry import horizontal_projection
    assert torch.allclose(horizontal_projection(x_t, g), g, atol=1e-10)


def test_alignment_losses():
    x_t, x1 = random_clouds(4, 7, 0), random_clouds(4, 7, 1)
    R = random_rotation(4, torch.Generator().manual_seed(0), dtype=x1.dtype)
    # GeoDiff: a prediction equal to the target aligned onto x_t has zero loss,
    aligned = kabsch_align(x1, x_t)
    assert treatment_loss("align-geodiff", x_t=x_t, prediction=aligned, target=x1).max() < 1e-18
    # and the loss does not depend on the orientation of the data sample.
    l1 = treatment_loss("align-geodiff", x_t=x_t, prediction=x_t, target=x1)
    l2 = treatment_loss("align-geodiff", x_t=x_t, prediction=x_t, target=apply_rotation(R, x1))
    assert torch.allclose(l1, l2, atol=1e-9)
    # AF3: any rotation of the prediction attains the same loss.
    pred = random_clouds(4, 7, 2)
    a = treatment_loss("align-af3", x_t=x_t, prediction=pred, target=x1)
    b = treatment_loss("align-af3", x_t=x_t, prediction=apply_rotation(R, pred) + 1.0, target=x1)
    assert torch.allclose(a, b, atol=1e-9)
    # ... and its gradient flows to the prediction only (target aligned to the stop-grad prediction).
    p = pred.clone().requires_grad_(True)
    treatment_loss("align-af3", x_t=x_t, prediction=p, target=x1).sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def _aligned_velocity_target(treatment, x_t, u, x1, t, clean_prediction=None):
    """The velocity-form regression target u_A of an alignment treatment: r = v - u_A at v = 0."""
    zero = torch.zeros_like(x_t)
    return -regression_residual(treatment, x_t=x_t, prediction=zero, target=u, parameterization="velocity",
                                clean_target=x1, clean_prediction=clean_prediction, t=t)


def pairwise_distances(x):
    return torch.cdist(x, x)


def test_velocity_form_alignment_flows_to_a_rigid_copy_of_the_data():
    """Linear interpolant without noise. The training pair's target field, held for the rest of
    the path from x_t (t -> 1), ends on the aligned copy of x1 (pairwise distances of x1); the old
    form, the whole velocity x1 - x0 rotated by R, ends on x_t + (1 - t) R (x1 - x0), which is not
    a rigid copy of x1. Followed as a field (realigned at every step, the interpolant's target
    (x1 - x)/(1 - s) at each point), the new target also stays on that aligned copy."""
    x0, x1 = center(random_clouds(4, 7, 0)), center(random_clouds(4, 7, 1))
    t0 = 0.3
    t = torch.full((4,), t0, dtype=x1.dtype)
    x_t = (1 - t0) * x0 + t0 * x1
    u = x1 - x0
    aligned = kabsch_align(x1, x_t)
    new = x_t + (1 - t0) * _aligned_velocity_target("align-geodiff", x_t, u, x1, t)
    assert torch.allclose(new, aligned, atol=1e-9)
    old = x_t + (1 - t0) * apply_rotation(kabsch_rotation(x1, x_t), u)
    assert (pairwise_distances(old) - pairwise_distances(x1)).abs().amax() > 0.1
    ref = random_clouds(4, 7, 5)  # AF3: aligned onto the implied clean structure instead
    af3 = x_t + (1 - t0) * _aligned_velocity_target("align-af3", x_t, u, x1, t, clean_prediction=ref)
    assert torch.allclose(pairwise_distances(af3), pairwise_distances(x1), atol=1e-9)
    assert torch.allclose(af3, center(kabsch_align(x1, ref)), atol=1e-9)
    x = x_t.clone()
    grid = torch.linspace(t0, 1.0, 101, dtype=x1.dtype)
    for s, s_next in zip(grid[:-1], grid[1:]):
        ts = torch.full((4,), float(s), dtype=x1.dtype)
        x = x + (s_next - s) * _aligned_velocity_target("align-geodiff", x, (x1 - x) / (1 - s), x1, ts)
    assert torch.allclose(x, aligned, atol=1e-9)


def test_velocity_form_alignment_is_the_conventional_target_when_already_aligned():
    """With A(x1) = x1 (reference = x1) the baselines regress onto ET-Flow's own noisy target."""
    it = make_interpolant("etflow", sigma=0.1)
    x0, x1, eps = (center(random_clouds(3, 6, i)) for i in range(3))
    t = torch.tensor([0.1, 0.5, 0.9], dtype=x1.dtype)
    x_t, u = it.sample(x0, x1, eps, t), it.velocity_target(x0, x1, eps, t)
    target = _aligned_velocity_target("align-af3", x_t, u, x1, t, clean_prediction=x1)
    assert torch.allclose(target, u, atol=1e-9)


def test_velocity_form_alignment_sees_the_data_only_through_its_aligned_copy():
    """Linear interpolant: pairs (x0, x1) with the same x_t and the same aligned copy of x1 (x1
    rotated, x0 adjusted) have the same loss; rotating the target field by R (the old form) did not."""
    x0, x1, pred = (center(random_clouds(3, 6, i)) for i in range(3))
    t = torch.tensor([0.2, 0.5, 0.7], dtype=x1.dtype).reshape(-1, 1, 1)
    x_t = (1 - t) * x0 + t * x1
    Q = random_rotation(3, torch.Generator().manual_seed(5), dtype=x1.dtype)
    x1b = apply_rotation(Q, x1)
    x0b = (x_t - t * x1b) / (1 - t)
    kw = dict(x_t=x_t, prediction=pred, parameterization="velocity", t=t.reshape(-1))
    l1 = treatment_loss("align-geodiff", target=x1 - x0, clean_target=x1, **kw)
    l2 = treatment_loss("align-geodiff", target=x1b - x0b, clean_target=x1b, **kw)
    assert torch.allclose(l1, l2, atol=1e-9)
    old = lambda a, b: ((pred - apply_rotation(kabsch_rotation(a, x_t), a - b)) ** 2).sum((-2, -1))  # noqa: E731
    assert (old(x1, x0) - old(x1b, x0b)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="clean_target"):
        regression_residual("align-geodiff", target=x1, **kw)
    with pytest.raises(ValueError, match="clean_prediction"):
        regression_residual("align-af3", target=x1, clean_target=x1, **kw)
    with pytest.raises(ValueError, match="times"):
        regression_residual("align-geodiff", target=x1, clean_target=x1, **{**kw, "t": None})


def test_treatment_errors_and_reductions():
    x = random_clouds(2, 5, 0)
    with pytest.raises(ValueError, match="unknown treatment"):
        treatment_loss("kabsch", x_t=x, prediction=x, target=x)
    with pytest.raises(ValueError, match="reduction"):
        treatment_loss("quotient", x_t=x, prediction=x, target=x, reduction="sum")
    mask = random_mask(2, 5, 0)
    pred = random_clouds(2, 5, 1)
    l2 = treatment_loss("conventional", x_t=x, prediction=pred, target=x, mask=mask, reduction="atom_l2")
    r = center(pred - x, mask)
    expected = (r.norm(dim=-1) * mask).sum(1) / mask.sum(1)
    assert torch.allclose(l2, expected)
    assert sampler_geometry("quotient") == "horizontal"
    assert {sampler_geometry(t) for t in TREATMENTS if t != "quotient"} == {"center"}


# ---------------------------------------------------------------- samplers
def test_time_grid():
    g = time_grid(4)
    assert torch.allclose(g, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=g.dtype))
    g2 = time_grid(10, rho=2.0)
    assert g2[0] == 0 and g2[-1] == 1 and (g2.diff() > 0).all() and g2.diff()[-1] < g2.diff()[0]
    for bad in [dict(steps=0), dict(steps=3, t_start=0.5, t_end=0.5), dict(steps=3, rho=0.5)]:
        with pytest.raises(ValueError):
            time_grid(**bad)


def gaussian_denoiser(sigma, interpolant):
    def D(x, t, mask):
        ah, b = interpolant.alpha_hat(t).reshape(-1, 1, 1), interpolant.beta(t).reshape(-1, 1, 1)
        return b * sigma**2 / (ah**2 + b**2 * sigma**2) * x
    return D


def test_ode_flow_of_a_gaussian_is_the_exact_rescaling():
    """For the target N(0, σ²I) and a linear interpolant, the flow map is x0 -> σ x0."""
    it = make_interpolant("linear")
    fields = fields_from_denoiser(gaussian_denoiser(2.0, it), it)
    x0 = center(random_clouds(8, 6, 0))
    errors = {}
    for method in ["euler", "heun"]:
        for steps in [40, 80]:
            out = sample_ode(fields, x0, steps=steps, method=method, geometry="horizontal")
            errors[method, steps] = (out.x - 2.0 * x0).abs().max().item()
            assert out.nfe == (steps if method == "euler" else 2 * steps - 1)
    # Convergence orders: halving the step halves Euler's error and quarters Heun's.
    assert 1.8 < errors["euler", 40] / errors["euler", 80] < 2.2
    assert 3.5 < errors["heun", 40] / errors["heun", 80] < 4.5
    assert errors["heun", 40] < errors["euler", 40] / 50


def test_path_length_is_the_sum_of_step_norms():
    it = make_interpolant("linear")
    fields = fields_from_denoiser(gaussian_denoiser(1.5, it), it)
    x0 = center(random_clouds(3, 5, 1))
    out = sample_ode(fields, x0, steps=5, keep_trajectory=True)
    steps = torch.stack([(b - a).flatten(1).norm(dim=-1) for a, b in zip(out.trajectory, out.trajectory[1:])])
    assert torch.allclose(out.path_length, steps.sum(0))


def test_sde_needs_a_score_and_valid_options():
    x0 = center(random_clouds(2, 5, 0))
    fields = fields_from_velocity(lambda x, t, m: -x)
    eta = lambda t: torch.ones_like(t)  # noqa: E731
    with pytest.raises(ValueError, match="score"):
        sample_sde(fields, x0, steps=3, eta=eta)
    with pytest.raises(ValueError, match="curvature"):
        sample_sde(lambda x, t, m: Fields(-x, -x), x0, steps=3, eta=eta, curvature="double")
    with pytest.raises(ValueError, match="geometry"):
        sample_ode(fields, x0, steps=3, geometry="aligned")
    with pytest.raises(ValueError, match="noise scale"):
        denoiser_noise_schedule(make_interpolant("linear"), -1.0)


def test_samplers_respect_masks():
    it = make_interpolant("linear")
    mask = random_mask(3, 8, 0)
    fields = fields_from_denoiser(gaussian_denoiser(1.0, it), it)
    x0 = gaussian_prior((3, 8, 3), mask, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for geometry in ["center", "horizontal"]:
        ode = sample_ode(fields, x0, steps=5, mask=mask, geometry=geometry)
        sde = sample_sde(fields, x0, steps=5, mask=mask, geometry=geometry, eta=denoiser_noise_schedule(it, 1.0),
                         generator=torch.Generator().manual_seed(1))
        for out in (ode, sde):
            assert (out.x[~mask] == 0).all() and torch.isfinite(out.x).all()
            assert torch.allclose(out.x.sum(1), torch.zeros(3, 3, dtype=out.x.dtype), atol=1e-9)


def test_sampler_is_deterministic_given_a_seed():
    it = make_interpolant("linear")
    fields = fields_from_denoiser(gaussian_denoiser(1.0, it), it)
    x0 = center(random_clouds(4, 5, 0))
    runs = [
        sample_sde(fields, x0, steps=10, eta=denoiser_noise_schedule(it, 1.0), generator=torch.Generator().manual_seed(3)).x
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])



# ---------------------------------------------------------------- Proteína's SDE
def test_proteina_schedule_and_grid():
    """g(t) = 1/(t + 0.01) up to t = 0.99, then ODE steps (g = 0); the log grid of p = 2."""
    g = proteina_noise_schedule()
    t = torch.tensor([0.0, 0.5, 0.99, 0.995, 1.0], dtype=torch.float64)
    assert torch.allclose(g(t), torch.tensor([100.0, 1 / 0.51, 1.0, 0.0, 0.0], dtype=torch.float64))
    grid = proteina_time_grid(400)
    assert grid[0] == 0 and grid[-1] == 1 and (grid.diff() > 0).all()
    assert torch.allclose(grid[200], torch.tensor((1 - 0.1) / 0.99, dtype=grid.dtype))  # 1 - 10^(-2·1/2), normalized
    assert grid.diff()[-1] < grid.diff()[0] / 50  # steps refine geometrically towards the data
    with pytest.raises(ValueError):
        proteina_time_grid(0)


def test_sde_with_zero_noise_level_is_the_ode_and_needs_no_score():
    it = make_interpolant("linear")
    x0 = center(random_clouds(3, 5, 0))
    velocity_only = fields_from_velocity(lambda x, t, m: -x)
    zero = lambda t: torch.zeros_like(t)  # noqa: E731
    grid = proteina_time_grid(10)
    sde = sample_sde(velocity_only, x0, steps=10, eta=zero, grid=grid, generator=torch.Generator().manual_seed(0))
    expected = x0.clone()
    for a, b in zip(grid[:-1], grid[1:]):
        expected = expected - (b - a) * expected
    assert torch.allclose(sde.x, expected, atol=1e-12)
    with pytest.raises(ValueError, match="noise scale"):
        sample_sde(fields_from_denoiser(gaussian_denoiser(1.0, it), it), x0, steps=3, eta=zero, noise_scale=-0.1)
    with pytest.raises(ValueError, match="grid"):
        sample_sde(velocity_only, x0, steps=3, eta=zero, grid=grid)


# ---------------------------------------------------------------- SDE sampling of velocity models
@pytest.mark.parametrize("name", sorted(INTERPOLANTS))
def test_velocity_to_score_is_eq4_for_the_isotropic_prior(name):
    it = make_interpolant(name)
    x, v = random_clouds(3, 6, 0), random_clouds(3, 6, 1)
    t = torch.tensor([0.05, 0.5, 0.9], dtype=x.dtype)
    D, s = denoiser_and_score_from_velocity(x, v, t, it)
    assert torch.allclose(D, it.denoiser_from_velocity(x, v, t), atol=1e-9)
    assert torch.allclose(s, it.score_from_denoiser(x, D, t), atol=1e-9)


@pytest.mark.parametrize("name", ["linear", "etflow"])
def test_velocity_to_score_for_the_harmonic_prior_matches_the_dense_formulas(name):
    """With C = α²Σ + γ²I: v = (α'αΣ + γ'γI) C⁻¹ (x - βD) + β'D and s = -C⁻¹ (x - βD), in dense
    N x N matrices (Σ = the harmonic prior's covariance); the mode-wise inversion recovers D and s."""
    it = make_interpolant(name)
    n = 6
    A = chain_adjacency(n, 1)
    A[0, 0, 3] = A[0, 3, 0] = 1  # a ring closure
    spectrum = harmonic_spectrum(A, stiffness=1.5)
    U, var = spectrum.basis[0], spectrum.variance[0]
    Sigma = U @ torch.diag(var) @ U.T
    I = torch.eye(n, dtype=torch.float64)
    x, D = random_clouds(1, n, 0), random_clouds(1, n, 1)
    for tv in [0.02, 0.3, 0.8, 0.97]:
        t = torch.tensor([tv], dtype=torch.float64)
        a, ad, b, bd = it.alpha(t), it.alpha_dot(t), it.beta(t), it.beta_dot(t)
        g, gd = it.gamma(t), it.gamma_dot(t)
        C = a**2 * Sigma + g**2 * I
        Cinv = torch.linalg.inv(C)
        v = ((ad * a * Sigma + gd * g * I) @ Cinv @ (x[0] - b * D[0]) + bd * D[0])[None]
        D_back, s = denoiser_and_score_from_velocity(x, v, t, it, spectrum)
        assert torch.allclose(D_back, D, atol=1e-8)
        assert torch.allclose(s[0], -Cinv @ (x[0] - b * D[0]), atol=1e-8)


def gaussian_target_velocity(sigma, interpolant, spectrum):
    """The exact velocity E[dx_t/dt | x_t] for x1 ~ N(0, σ² I) (centered) and x0 ~ N(0, Σ): per
    mode k, x_t has variance V_k = α²σ²_k + γ² + β²σ², and E[dx_t/dt | x_t]_k = (V_k'/2V_k) x_k."""

    def velocity(x, t, mask):
        tt = t.reshape(-1, 1, 1).to(x.dtype)
        a, ad, b, bd = interpolant.alpha(tt), interpolant.alpha_dot(tt), interpolant.beta(tt), interpolant.beta_dot(tt)
        var = spectrum.mode_variance(x)
        V = a**2 * var + interpolant.gamma(tt) ** 2 + b**2 * sigma**2
        half_dV = a * ad * var + interpolant._gamma_gamma_dot(tt) + b * bd * sigma**2
        return spectrum.from_modes(half_dV / V * spectrum.to_modes(x))

    return velocity


def _second_moments(x):
    """Per cloud: |x|² and the squared distance between atoms 0 and 1."""
    return (x**2).sum((-2, -1)), ((x[:, 0] - x[:, 1]) ** 2).sum(-1)


@pytest.mark.parametrize("prior_name,interpolant_name,geometry,n_samples,steps", [
    ("gaussian", "etflow", "center", 1500, 60),
    ("harmonic", "linear", "center", 1500, 60),
    ("harmonic", "etflow", "center", 1500, 60),
    ("harmonic", "etflow", "horizontal", 1000, 60),
])
def test_sde_sampling_of_a_velocity_model_recovers_the_target(prior_name, interpolant_name, geometry, n_samples, steps):
    """A velocity oracle (exact, closed form) sampled with the SDE through the velocity-to-score
    identity recovers x1 ~ N(0, σ²I): E|x|² = 3(N-1)σ², E|x_0 - x_1|² = 6σ². With the harmonic
    prior, the same run with the isotropic identity (the prior ignored) is visibly biased."""
    sigma, n = 1.3, 5
    it = make_interpolant(interpolant_name)
    gen = torch.Generator().manual_seed(0)
    if prior_name == "harmonic":
        A = chain_adjacency(n, n_samples).double()
        spectrum = harmonic_spectrum(A)
        x0 = harmonic_prior(A, generator=gen, dtype=torch.float64)
    else:
        spectrum = PriorSpectrum()
        x0 = gaussian_prior((n_samples, n, 3), generator=gen, dtype=torch.float64)
    velocity = gaussian_target_velocity(sigma, it, spectrum)

    def run(prior):
        fields = fields_from_velocity(velocity, it, prior)
        out = sample_sde(fields, x0, steps=steps, eta=denoiser_noise_schedule(it, 1.0), geometry=geometry,
                         generator=torch.Generator().manual_seed(1), rho=2.0)
        return _second_moments(out.x)

    expected = (3 * (n - 1) * sigma**2, 6 * sigma**2)
    # |x|²/σ² ~ χ²(3(N-1)), |x_0 - x_1|²·(N/(2(N-1)))/σ² ~ χ²(3): standard errors from the exact variances
    se = (sigma**2 * math.sqrt(2 * 3 * (n - 1) / n_samples), 6 * sigma**2 * math.sqrt(2 / 3 / n_samples))
    for stat, mu, err in zip(run(spectrum), expected, se):
        assert abs(stat.mean().item() - mu) < 4 * err, (stat.mean().item(), mu, err)
    if prior_name == "harmonic":
        wrong = run(None)
        z_wrong = max(abs(w.mean().item() - mu) / e for w, mu, e in zip(wrong, expected, se))
        assert z_wrong > 6
