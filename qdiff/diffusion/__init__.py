"""Interpolants, priors, the four symmetry treatments, and ODE/SDE samplers (pure tensor code)."""
from .interpolants import (
    INTERPOLANTS,
    ETFlowInterpolant,
    Interpolant,
    LinearInterpolant,
    TrigonometricInterpolant,
    interpolant_from_spec,
    make_interpolant,
)
from .priors import gaussian_prior, graph_laplacian, harmonic_prior
from .samplers import (
    CURVATURE_SIGNS,
    GEOMETRIES,
    Fields,
    SampleResult,
    denoiser_noise_schedule,
    fields_from_denoiser,
    fields_from_velocity,
    project,
    sample_ode,
    sample_sde,
    time_grid,
)
from .treatments import (
    PARAMETERIZATIONS,
    TREATMENTS,
    check_treatment,
    regression_residual,
    sampler_geometry,
    treatment_loss,
)

__all__ = [name for name in dir() if not name.startswith("_")]
