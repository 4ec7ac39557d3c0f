"""The matrix Fisher moments (quadrature) against scipy, an exact sampler, and known limits."""
import math

import pytest
import torch
from scipy.integrate import quad
from scipy.special import i0

from qdiff.geometry.matrix_fisher import (
    diagonal_moments,
    matrix_fisher_mean,
    matrix_fisher_mode,
    proper_svd,
    sample_matrix_fisher,
)


@pytest.mark.parametrize("s", [(0.5, 0.2, 0.1), (3.0, 2.0, -1.5), (40.0, 39.0, -38.5), (20.0, 1.0, 0.0), (5.0, 5.0, 5.0)])
def test_log_normalizer_matches_scipy_and_gradient_matches_finite_differences(s):
    s1, s2, s3 = s
    val = quad(lambda u: 0.5 * math.exp(s1 * u) * i0((1 + u) * (s2 + s3) / 2) * i0((1 - u) * (s2 - s3) / 2), -1, 1, limit=200)[0]
    st = torch.tensor([s], dtype=torch.float64)
    log_c, d = diagonal_moments(st)
    assert log_c.item() == pytest.approx(math.log(val), abs=1e-9)
    h = 1e-5
    for i in range(3):
        sp, sm = st.clone(), st.clone()
        sp[0, i] += h
        sm[0, i] -= h
        if not (sp[0, 0] >= sp[0, 1] >= abs(sp[0, 2]) and sm[0, 0] >= sm[0, 1] >= abs(sm[0, 2])):
            continue  # a finite difference across the ordering boundary is not a derivative
        fd = (diagonal_moments(sp)[0] - diagonal_moments(sm)[0]).item() / (2 * h)
        assert d[0, i].item() == pytest.approx(fd, abs=1e-6)


def test_mean_agrees_with_the_exact_rejection_sampler():
    g = torch.Generator().manual_seed(0)
    draws = 100_000
    for scale in [0.3, 3.0, 300.0]:
        F = torch.randn(1, 3, 3, generator=g, dtype=torch.float64) * scale
        R = sample_matrix_fisher(F, draws, generator=g)[0]
        ER, _ = matrix_fisher_mean(F)
        se = R.std(dim=0) / math.sqrt(draws)
        assert ((R.mean(0) - ER[0]).abs() <= 5 * se + 1e-12).all()
        assert torch.allclose(torch.linalg.det(R), torch.ones(draws, dtype=R.dtype), atol=1e-9)


def test_limits_and_extreme_concentration():
    zero = torch.zeros(1, 3, 3, dtype=torch.float64)
    ER, log_c = matrix_fisher_mean(zero)
    assert torch.allclose(ER, zero) and abs(log_c.item()) < 1e-12
    g = torch.Generator().manual_seed(1)
    F = torch.randn(4, 3, 3, generator=g, dtype=torch.float64) * 1e6
    ER, log_c = matrix_fisher_mean(F)
    assert torch.isfinite(ER).all() and torch.isfinite(log_c).all()
    assert torch.allclose(ER, matrix_fisher_mode(F), atol=1e-4)
    U, s, V = proper_svd(F)
    assert (s[:, 0] >= s[:, 1]).all() and (s[:, 1] >= s[:, 2].abs()).all()
    assert torch.allclose(torch.linalg.det(U), torch.ones(4, dtype=U.dtype))
    assert torch.allclose(U @ torch.diag_embed(s) @ V.transpose(-1, -2), F)
