"""The exact toy study: oracle denoisers on targets with a known E[x1 | x_t] (no network)."""
from .study import SAMPLERS, SDE_SCHEDULES, Metric, ToyConfig, ToyResult, format_table, run_toy
from .targets import TARGETS, GaussianTarget, RigidMixtureTarget, make_target

__all__ = [
    "SAMPLERS", "SDE_SCHEDULES", "TARGETS", "GaussianTarget", "Metric", "RigidMixtureTarget", "ToyConfig",
    "ToyResult", "format_table", "make_target", "run_toy",
]
