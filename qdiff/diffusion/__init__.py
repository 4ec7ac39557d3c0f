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
from .priors import PriorSpectrum, gaussian_prior, graph_laplacian, harmonic_prior, harmonic_spectrum
from .samplers import (
    CURVATURE_SIGNS,
    GEOMETRIES,
    Fields,
    SampleResult,
    PROTEINA_G_OFFSET,
    PROTEINA_LOG_SCHEDULE_P,
    PROTEINA_ODE_AFTER,
    denoiser_and_score_from_velocity,
    denoiser_noise_schedule,
    fields_from_denoiser,
    fields_from_velocity,
    project,
    proteina_noise_schedule,
    proteina_time_grid,
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
