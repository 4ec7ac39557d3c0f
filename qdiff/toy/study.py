"""The exact toy study: oracle denoisers of each treatment plugged into each sampler, and the
distance of the sampled shape distribution from the target, with Monte Carlo standard errors."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from ..diffusion import (
    PARAMETERIZATIONS,
    denoiser_noise_schedule,
    fields_from_denoiser,
    fields_from_velocity,
    gaussian_prior,
    make_interpolant,
    proteina_noise_schedule,
    proteina_time_grid,
    sample_ode,
    sample_sde,
    sampler_geometry,
)
from ..geometry import inertia_tensor
from .oracles import OracleDenoiser, OracleVelocity
from .targets import RigidMixtureTarget, make_target

SAMPLERS = ("ode", "sde")
# SDE schedules: `eta` (η_t = noise_scale · α̂_t², temperature 1) or `proteina` (Proteína's
# g(t) and log time grid, noise_scale = its γ: the noise alone is scaled, γ < 1 is low temperature).
SDE_SCHEDULES = ("eta", "proteina")


@dataclass
class ToyConfig:
    target: str = "gaussian"
    treatment: str = "quotient"
    sampler: str = "ode"
    steps: int = 50
    samples: int = 1000
    seed: int = 0
    ode_method: str = "euler"
    noise_scale: float = 1.0
    curvature: str = "minus"
    interpolant: str = "linear"
    jitter: float = 0.1
    mc_draws: int = 32
    boltz_realign: bool = False
    rho: float = 2.0
    vertical_drift: float = 0.0
    parameterization: str = "denoiser"
    sde_schedule: str = "eta"


@dataclass
class Metric:
    """value ± stderr against expected (± its own stderr when estimated from exact draws)."""

    metric: str
    value: float
    expected: float
    stderr: float

    @property
    def z(self) -> float:
        return (self.value - self.expected) / self.stderr if self.stderr > 0 else math.inf * (self.value != self.expected)


@dataclass
class ToyResult:
    config: ToyConfig
    metrics: list[Metric]
    path_length: float
    path_length_stderr: float
    nfe: int
    seconds: float
    path_lengths: torch.Tensor | None = field(default=None, repr=False)
    samples: torch.Tensor | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        primary = self.metrics[0]
        return {
            "target": self.config.target,
            "treatment": self.config.treatment,
            "parameterization": self.config.parameterization,
            "sampler": self.config.sampler,
            "sde_schedule": self.config.sde_schedule,
            "n_samples": self.config.samples,
            "steps": self.config.steps,
            "seed": self.config.seed,
            "metric": primary.metric,
            "value": primary.value,
            "expected": primary.expected,
            "stderr": primary.stderr,
            "z": primary.z,
            "path_length": self.path_length,
            "path_length_stderr": self.path_length_stderr,
            "nfe": self.nfe,
            "seconds": self.seconds,
            "metrics": [dict(asdict(m), z=m.z) for m in self.metrics],
            "config": asdict(self.config),
        }


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std(unbiased=True) / math.sqrt(x.numel()))


def _two_sample(name: str, sample: torch.Tensor, reference: torch.Tensor) -> Metric:
    (m, se), (mr, ser) = _mean_se(sample), _mean_se(reference)
    return Metric(name, m, mr, math.sqrt(se**2 + ser**2))


def evaluate_samples(target, x: torch.Tensor, generator: torch.Generator) -> list[Metric]:
    """E|x|² against its exact value; log det K(x) (a shape statistic) and, for rigid targets,
    the RMSD to the nearest shape and the component weights, each against an equally large
    independent exact draw from the target (two-sample standard errors)."""
    n = x.shape[0]
    ref = target.sample(n, generator)
    sq = (x**2).sum(dim=(-2, -1))
    m, se = _mean_se(sq)
    ref_sq_se = float((ref**2).sum(dim=(-2, -1)).std() / math.sqrt(n))
    metrics = [Metric("mean_sq_norm", m, target.expected_sq_norm(), math.sqrt(se**2 + ref_sq_se**2))]
    logdet = lambda c: torch.logdet(inertia_tensor(c))  # noqa: E731
    metrics.append(_two_sample("mean_logdet_inertia", logdet(x), logdet(ref)))
    if isinstance(target, RigidMixtureTarget):
        k, d = target.assign(x)
        k_ref, d_ref = target.assign(ref)
        metrics.append(_two_sample("mean_rmsd_to_shape", d, d_ref))
        if target.shapes.shape[0] > 1:
            for j in range(target.shapes.shape[0]):
                p, p_ref = float((k == j).double().mean()), float((k_ref == j).double().mean())
                se = math.sqrt(max(p * (1 - p), p_ref * (1 - p_ref), 1.0 / n) * 2 / n)
                metrics.append(Metric(f"weight_{j}", p, p_ref, se))
    if target.name == "mixture":  # the mixture's headline metric is its first weight
        metrics.insert(0, metrics.pop(3))
    return metrics


def run_toy(config: ToyConfig, keep_samples: bool = False) -> ToyResult:
    """Sample `config.samples` clouds with the oracle of `config.treatment` and score them."""
    if config.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {config.sampler!r}; choose ode or sde")
    if config.parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {config.parameterization!r}; choose one of {PARAMETERIZATIONS}")
    if config.sde_schedule not in SDE_SCHEDULES:
        raise ValueError(f"unknown SDE schedule {config.sde_schedule!r}; choose one of {SDE_SCHEDULES}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    target = make_target(config.target, jitter=config.jitter)
    interpolant = make_interpolant(config.interpolant)
    oracle = OracleDenoiser(
        target, config.treatment, interpolant, gen, config.mc_draws,
        boltz_realign=config.boltz_realign, vertical_drift=config.vertical_drift,
    )
    if config.parameterization == "velocity":  # the score from the velocity (Gaussian prior)
        fields = fields_from_velocity(OracleVelocity(oracle), interpolant)
    else:
        fields = fields_from_denoiser(oracle, interpolant)
    x0 = gaussian_prior((config.samples, target.n_atoms, 3), generator=gen, dtype=torch.float64)
    geometry = sampler_geometry(config.treatment)
    if config.sampler == "ode":
        out = sample_ode(
            fields, x0, steps=config.steps, geometry=geometry, method=config.ode_method, rho=config.rho
        )
    elif config.sde_schedule == "proteina":
        out = sample_sde(
            fields, x0, steps=config.steps, eta=proteina_noise_schedule(), geometry=geometry,
            curvature=config.curvature, generator=gen, noise_scale=config.noise_scale,
            grid=proteina_time_grid(config.steps),
        )
    else:
        eta = denoiser_noise_schedule(interpolant, config.noise_scale)
        out = sample_sde(
            fields, x0, steps=config.steps, eta=eta, geometry=geometry,
            curvature=config.curvature, generator=gen, rho=config.rho,
        )
    eval_gen = torch.Generator().manual_seed(config.seed + 1_000_003)
    metrics = evaluate_samples(target, out.x, eval_gen)
    pl, pl_se = _mean_se(out.path_length)
    return ToyResult(
        config, metrics, pl, pl_se, out.nfe, time.perf_counter() - start,
        path_lengths=out.path_length, samples=out.x if keep_samples else None,
    )


def format_table(results: list[ToyResult]) -> str:
    """A plain-text table: one row per (configuration, metric)."""
    header = f"{'target':9} {'treatment':14} {'form':8} {'sampler':7} {'metric':20} {'value':>10} {'expected':>10} {'stderr':>8} {'z':>7} {'path':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        c = r.config
        sampler = c.sampler if c.sampler == "ode" or c.curvature == "minus" else f"sde{c.curvature[0]}"
        if c.sampler == "sde" and c.sde_schedule == "proteina":
            sampler = f"sdeP{c.noise_scale:g}"
        for m in r.metrics:
            lines.append(
                f"{c.target:9} {c.treatment:14} {c.parameterization:8} {sampler:7} {m.metric:20} {m.value:10.4f} "
                f"{m.expected:10.4f} {m.stderr:8.4f} {m.z:7.2f} {r.path_length:8.3f}"
            )
    return "\n".join(lines)
