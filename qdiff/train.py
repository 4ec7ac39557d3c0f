"""`qdiff train`: config-driven, resumable training of a quotient or baseline model.

Re-running the same command resumes from `<run>/checkpoints/last.pt` with model, optimizer, EMA,
scheduler, RNG and data-order state, so an interrupted-and-resumed run reproduces the
uninterrupted one. Checkpoints are written atomically every `checkpoint_every` steps, every
`checkpoint_minutes`, and on SIGTERM / SIGUSR1 (Slurm's pre-emption warning) before exiting with
status 143. The finished run leaves `<run>/model.pt` (EMA weights + config) and `<run>/log.csv` (one row per
step; `wall_s` is the training clock, continued across resumes).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path, atomic_write_text
from .data.dataset import CONFORMER_CHOICES
from .data.identity import describe, short, store_identity
from .errors import CorruptArtifactError, InputFileError, is_out_of_memory
from .diffusion import check_treatment, interpolant_from_spec, treatment_loss
from .eval.chirality import resolve_parity_switch
from .geometry import apply_rotation, center, random_rotation
from .models import compile_network, count_parameters, model_from_spec
from .progress import progress_bar
from .settings import check as check_settings
from .tasks import check_pairing, task_for

DEFAULTS = {
    "model": {"name": "egnn"},
    "treatment": "quotient",
    "parameterization": "velocity",
    "interpolant": {"name": "etflow", "sigma": 0.1},
    "prior": "gaussian",
    "align_prior": True,
    # ET-Flow's post-hoc parity switch after sampling (qdiff.eval.chirality): "post_hoc", "none", or
    # "auto" = post_hoc for the reflection-equivariant molecule networks (EGNN, e3nn symmetry o3),
    # none for the chirality-aware e3nn (symmetry so3). Resolved below, so the run records which.
    "parity_switch": "auto",
    "split": None,
    # Which conformer of a molecule a training item draws each epoch: ET-Flow's is uniform at
    # random over the stored ones (etflow/data/dataset.py, EuclideanDataset.get); "weighted"
    # draws by Boltzmann weight, "first" takes the highest-weight one. Molecule stores only.
    "conformer": "uniform",
    # Per-sample reduction of the per-atom residual r_n (after the treatment's projection or
    # alignment): "mse" = mean_n |r_n|², "atom_l2" = mean_n |r_n| (ET-Flow's batchwise_l2_loss in
    # etflow/models/loss.py: unsquared per-atom norm, averaged per molecule, then over the batch).
    "loss_reduction": "mse",
    "batch_size": 32,
    "steps": 1000,
    "lr": 5e-4,
    "weight_decay": 1e-8,
    "betas": [0.9, 0.999],
    "adam_eps": 1e-8,
    "warmup_steps": 50,
    "ema": 0.999,
    "grad_clip": {"mode": "adaptive", "max_norm": 1.0},
    "val_every": 200,
    "val_batches": 4,
    "checkpoint_every": 200,
    "checkpoint_minutes": 30.0,
    "t_min": 1e-4,
    # Training times: `uniform` on [t_min, 1 - t_min] (ET-Flow), or `proteina`: Proteína's
    # mixture, 0.98 Beta(1.9, 1.0) + 0.02 Uniform(0, 1) (its `mix_up02_beta`), clamped likewise.
    "t_distribution": "uniform",
    # Denoiser-form loss weight 1 / ((1 - t)² + floor); Proteína uses 1e-5.
    "denoiser_weight_floor": 1e-2,
    "max_length": 256,
    "coord_scale": 1.0,
    "self_condition": 0.5,
    "rotation_augmentation": True,
    "precision": "fp32",
    "device": "auto",
    "compile": False,
    # Who computes the e3nn network's per-edge tensor products: auto | e3nn | cueq (cuEquivariance;
    # qdiff.models.cueq). A runtime choice: same weights and checkpoints, outputs equal to rounding.
    "backend": "auto",
    "tensorboard": False,
    "seed": 0,
}
# Settings that change how a run executes, not what it computes: a run may resume with others.
RUNTIME_KEYS = ("device", "compile", "backend", "tensorboard", "checkpoint_every", "checkpoint_minutes", "val_every")
PRECISIONS = ("fp32", "bf16")
LOSS_REDUCTIONS = ("mse", "atom_l2")
T_DISTRIBUTIONS = ("uniform", "proteina")
# Proteína's t distribution, proteinfoundation/proteinflow/model_trainer_base.py (`sample_t`,
# name "mix_up02_beta": Uniform(0, 1) with probability 0.02, else Beta(p1, p2)) with
# configs/experiment_config/training_ca.yaml (loss.t_distribution: p1 1.9, p2 1.0).
PROTEINA_T_UNIFORM_WEIGHT = 0.02
PROTEINA_T_BETA = (1.9, 1.0)
# Settings added after runs were first written, with the value that reproduces what such a run
# computed: an older checkpoint resumes when the run's settings give the same (e.g. it drew
# conformers by Boltzmann weight, so it resumes only with `conformer: weighted`).
LATER_DEFAULTS = {"t_distribution": "uniform", "denoiser_weight_floor": 1e-2, "loss_reduction": "mse",
                  "conformer": "weighted", "parity_switch": "none"}
# Settings that act only at sampling time (recorded in model.pt): a run may resume with others.
SAMPLING_KEYS = ("parity_switch",)
EXIT_PREEMPTED = 143


def resolve_config(overrides: dict) -> dict:
    """DEFAULTS updated by `overrides`; ValueError naming any unknown key."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    config = copy.deepcopy(DEFAULTS)
    for key, value in overrides.items():
        if isinstance(config[key], dict) and isinstance(value, dict):
            same = value.get("name", config[key].get("name")) == config[key].get("name")
            config[key] = {**config[key], **value} if same else dict(value)  # a new model/interpolant: its own settings
        else:
            config[key] = value
    check_treatment(config["treatment"])
    check_settings(config, "train")  # types, ranges, allowed values (qdiff/schemas/train.schema.yaml)
    config["parity_switch"] = resolve_parity_switch(config["model"], config["parity_switch"])
    if config["backend"] != "auto" and config["model"].get("name") != "e3nn":
        raise ValueError(f"backend {config['backend']!r}: a choice for the e3nn network only, not {config['model'].get('name')!r}; use auto")
    if config["precision"] not in PRECISIONS:
        raise ValueError(f"precision {config['precision']!r}: choose one of {PRECISIONS}")
    if not (isinstance(config["compile"], bool) or (isinstance(config["compile"], str) and config["compile"])):
        raise ValueError(f"compile {config['compile']!r}: true, false or a torch.compile backend name (e.g. inductor)")
    if config["conformer"] not in CONFORMER_CHOICES:
        raise ValueError(f"conformer {config['conformer']!r}: choose one of {CONFORMER_CHOICES}")
    if config["loss_reduction"] not in LOSS_REDUCTIONS:
        raise ValueError(f"loss_reduction {config['loss_reduction']!r}: choose one of {LOSS_REDUCTIONS}")
    if not 0.0 <= float(config["self_condition"]) <= 1.0:
        raise ValueError(f"self_condition {config['self_condition']!r}: a probability in [0, 1]")
    if config["t_distribution"] not in T_DISTRIBUTIONS:
        raise ValueError(f"t_distribution {config['t_distribution']!r}: choose one of {T_DISTRIBUTIONS}")
    if not float(config["denoiser_weight_floor"]) > 0:
        raise ValueError(f"denoiser_weight_floor {config['denoiser_weight_floor']!r}: must be > 0")
    return config


PREVIOUS = "previous.pt"  # the checkpoint before last.pt
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "scheduler", "step", "epoch", "position", "order", "rng", "rank_rng",
                   "grad_history", "best_val", "config")


def read_artifact(path: Path, what: str, remedy: str, keys: tuple[str, ...], device="cpu") -> dict:
    """torch.load(path) of a file qdiff wrote, with `keys` checked; a truncated or garbage file is a
    CorruptArtifactError naming it and the way out (`remedy`), not a torch traceback."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as err:  # zip/pickle/EOF errors of a damaged file
        if is_out_of_memory(err):
            raise
        raise CorruptArtifactError(path, what, err, remedy) from err
    if not isinstance(state, dict) or any(k not in state for k in keys):
        missing = [k for k in keys if not isinstance(state, dict) or k not in state]
        raise CorruptArtifactError(path, what, f"not a qdiff {what}: missing {missing}", remedy)
    return state


def read_checkpoint(path: Path, device="cpu") -> dict:
    return read_artifact(path, "training checkpoint", f"delete {path} (training then resumes from an earlier checkpoint "
                         "or starts over) or use a new run folder", CHECKPOINT_KEYS, device)


def latest_checkpoint(folder: Path, device="cpu") -> tuple[Path, dict] | None:
    """(path, state) of the newest readable checkpoint: last.pt, else the previous one kept beside
    it (a warning says so); None for a fresh run. A damaged last.pt without a good previous one is
    a CorruptArtifactError."""
    import sys

    last, previous = folder / "last.pt", folder / PREVIOUS
    if not last.is_file():
        return (previous, read_checkpoint(previous, device)) if previous.is_file() else None
    try:
        return last, read_checkpoint(last, device)
    except CorruptArtifactError as err:
        if not previous.is_file():
            raise
        try:
            state = read_checkpoint(previous, device)
        except CorruptArtifactError:
            raise err from None
        print(f"warning: {err}; resuming from the previous checkpoint {previous} (step {state['step']})", file=sys.stderr)
        return previous, state


def sample_times(distribution: str, n: int, t_min: float, generator: torch.Generator) -> torch.Tensor:
    """n training times [n] on [t_min, 1 - t_min]: `uniform` (ET-Flow), or `proteina`, Proteína's
    0.98 Beta(1.9, 1.0) + 0.02 Uniform(0, 1) mixture (more weight near the data end t = 1),
    clamped to the same interval (the ET-Flow interpolant's γ' is infinite at 0 and 1).
    Draws come from `generator` only (Beta via the ratio of Gamma draws, so resuming and DDP
    replay the same times)."""
    u = torch.rand(n, generator=generator)
    if distribution == "uniform":
        return t_min + (1 - 2 * t_min) * u
    if distribution != "proteina":
        raise ValueError(f"t_distribution {distribution!r}: choose one of {T_DISTRIBUTIONS}")
    a, b = PROTEINA_T_BETA
    pick = torch.rand(n, generator=generator)
    beta = _beta_draws(a, b, n, generator)
    t = torch.where(pick < PROTEINA_T_UNIFORM_WEIGHT, u, beta)
    return t.clamp(t_min, 1 - t_min)


def _beta_draws(a: float, b: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Beta(a, b) as X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b), each by Marsaglia-Tsang
    (shape >= 1; shape < 1 through the boost U^(1/shape)), from `generator` alone."""

    def gamma(shape: float) -> torch.Tensor:
        boost = None
        if shape < 1:
            boost = torch.rand(n, generator=generator, dtype=torch.float64) ** (1 / shape)
            shape += 1
        d = shape - 1 / 3
        c = 1 / math.sqrt(9 * d)
        out = torch.empty(n, dtype=torch.float64)
        todo = torch.arange(n)
        while todo.numel():
            z = torch.randn(todo.numel(), generator=generator, dtype=torch.float64)
            u = torch.rand(todo.numel(), generator=generator, dtype=torch.float64)
            v = (1 + c * z) ** 3
            ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
            out[todo[ok]] = d * v[ok]
            todo = todo[~ok]
        return out if boost is None else out * boost

    x, y = gamma(a), gamma(b)
    return (x / (x + y)).float()


def science_settings(config: dict) -> dict:
    """The configuration without RUNTIME_KEYS: what a checkpoint must agree with to resume."""
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def network_autocast(precision: str, device_type: str):
    """The context for a network call: bf16 autocast, or nothing for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
    return torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; under torchrun each rank takes cuda:LOCAL_RANK."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initializes torch.distributed when launched by torchrun (WORLD_SIZE > 1),
    with NCCL on GPUs and gloo on CPUs."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


LOG_COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "val_loss", "wall_s"]


def trim_log(path: Path, step: int) -> float:
    """Keep the rows of `log.csv` up to `step` (the checkpoint a run resumes from): the rows a killed
    run logged after its last checkpoint are logged again on resume, and a half-written last line
    goes. A log from before a column existed gets today's header, the old rows padded with blanks.
    Rewritten atomically. Returns the last kept row's `wall_s` (0.0 if none), where the resumed
    run's training clock continues."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0] if rows else LOG_COLUMNS
    kept = []
    for row in rows[1:]:
        try:
            complete = len(row) == len(header) and int(row[0]) <= step
        except ValueError:
            complete = False
        if complete:
            record = dict(zip(header, row))
            kept.append([record.get(column, "") for column in LOG_COLUMNS])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows([LOG_COLUMNS, *kept])
    wall = kept[-1][LOG_COLUMNS.index("wall_s")] if kept else ""
    return float(wall) if wall else 0.0


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise RuntimeError("tensorboard: true needs the `tensorboard` package (pip install tensorboard)") from err
    return SummaryWriter(str(path))


class _Preemption:
    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, store: str | Path, run_dir: str | Path, config: dict, progress: bool = True):
        self.store, self.run_dir, self.config, self.progress = Path(store), Path(run_dir), config, progress
        c = config
        self.device = resolve_device(c["device"])
        self.rank, self.world = _distributed(self.device)
        torch.manual_seed(c["seed"])
        self.task = task_for(self.store, c["prior"], c["max_length"], conformer=c["conformer"])
        # which version of the store this run trains on (qdiff.data.identity): checkpoints and
        # model.pt record it, and a checkpoint of another version is never resumed
        self.store_identity = store_identity(self.store)
        check_pairing(c["model"], self.task, self.store, c["prior"])
        self.dataset = self.task.dataset(self.store, c["split"], "train", c["seed"])
        self.val_dataset = self.task.dataset(self.store, c["split"], "val", c["seed"]) if c["split"] else None
        if len(self.dataset) == 0:
            raise InputFileError(f"{self.store}: no training {self.task.kind} "
                                 + (f"in split {c['split']!r} (its train part is empty)" if c["split"] else "(an empty store)")
                                 + "; re-run `qdiff featurize` or choose another split")
        self.model = model_from_spec(c["model"]).to(self.device)
        if hasattr(self.model, "set_backend"):
            self.model.set_backend(c["backend"])
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.self_conditioning = bool(getattr(self.model, "self_conditioning", False))
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # find_unused_parameters: e.g. the last EGNN node update does not reach the vector output
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        else:
            self.net = self.model
        if c["compile"]:
            self.net = compile_network(self.net, c["compile"])
        self.interpolant = interpolant_from_spec(c["interpolant"])
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c["lr"], betas=tuple(c["betas"]), eps=c["adam_eps"], weight_decay=c["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _lr_factor(s, c["warmup_steps"], c["steps"]))
        # One stream on every rank: each draws the global batch's noise and keeps its own rows,
        # so N ranks compute what one process computes on the same global batch.
        self.gen = torch.Generator().manual_seed(c["seed"])
        self.order_rng = np.random.default_rng(c["seed"])
        self.step, self.epoch, self.position = 0, 0, 0
        self.order = self.order_rng.permutation(len(self.dataset))
        self.grad_history: list[float] = []
        self.best_val = float("inf")
        self._consumed: tuple | None = None

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": self.step, **self._data_order(),
            "rank_rng": self._gather_rng(),
            "grad_history": [float(g) for g in self.grad_history], "best_val": float(self.best_val), "config": json.dumps(self.config),
            "store": json.dumps(self.store_identity, sort_keys=True),
        }

    def stale_reason(self, state: dict) -> str | None:
        """Why a checkpoint cannot be resumed on this run's store (None when it can): it was trained
        on another version of the store (other content digest), or it does not record one."""
        if "store" not in state:
            return "the checkpoint does not record which store it was trained on (written by an older qdiff)"
        saved = json.loads(state["store"])
        if saved.get("content_sha256") != self.store_identity["content_sha256"]:
            return f"the checkpoint was trained on {describe(saved)}, but the store is now {describe(self.store_identity)}"
        return None

    def supersede(self, state: dict) -> Path:
        """Move the earlier run's checkpoints, log, config, model and TensorBoard files out of the
        way, into `<run>/superseded/store-<sha12>[-N]/` (kept, not deleted); returns that folder."""
        old = json.loads(state["store"]) if "store" in state else None
        base = self.run_dir / "superseded" / f"store-{short(old)}"
        dest, n = base, 1
        while dest.exists():
            n += 1
            dest = base.with_name(f"{base.name}-{n}")
        dest.mkdir(parents=True)
        for name in ("checkpoints", "log.csv", "config.json", "model.pt", "tensorboard"):
            if (self.run_dir / name).exists():
                os.replace(self.run_dir / name, dest / name)
        return dest

    def _data_order(self) -> dict:
        """Where the data order stands after the last consumed batch (a prefetched one not counted)."""
        epoch, position, order, order_rng = self._consumed or (self.epoch, self.position, self.order, self.order_rng.bit_generator.state)
        return {"epoch": epoch, "position": position, "order": torch.from_numpy(order.copy()),
                "rng": {"torch": self.gen.get_state(), "order": order_rng}}

    def load(self, path: Path, state: dict | None = None) -> None:
        if state is None:
            state = read_checkpoint(path, self.device)
        stale = self.stale_reason(state)
        if stale:
            raise InputFileError(f"{path}: not resumable on {self.store}: {stale}; use a new run folder "
                                 "(`qdiff train` with the same --out starts over by itself)")
        saved = json.loads(state["config"])
        saved = {**LATER_DEFAULTS, **saved}
        old, new = (science_settings({k: v for k, v in c.items() if k not in SAMPLING_KEYS}) for c in (saved, self.config))
        if old != new:
            diff = ", ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                             if old.get(k) != new.get(k))
            raise ValueError(f"{path}: the checkpoint was written with a different configuration ({diff}); "
                             "resume with the checkpoint's settings or use a new run folder")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.order = state["order"].cpu().numpy()
        self.dataset.set_epoch(self.epoch)  # the epoch's conformer choices
        rng = state["rank_rng"][self.rank] if len(state["rank_rng"]) == self.world else state["rng"]["torch"]
        self.gen.set_state(rng.cpu())
        self.order_rng.bit_generator.state = state["rng"]["order"]
        self.grad_history, self.best_val = list(state["grad_history"]), state["best_val"]

    def _agree(self, flag: bool) -> bool:
        """True on every rank if it is true on any (collective decisions cannot diverge)."""
        if self.world == 1:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _gather_rng(self) -> list:
        if self.world == 1:
            return [self.gen.get_state()]
        import torch.distributed as dist

        states = [None] * self.world
        dist.all_gather_object(states, self.gen.get_state())
        return states

    def save(self, name: str = "last.pt") -> None:
        """Every rank takes part (the RNG states are gathered); rank 0 writes."""
        state = self.state()
        if self.rank == 0:
            path = self.run_dir / "checkpoints" / name
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
                if name == "last.pt" and path.is_file():  # keep the previous good one (a fallback if last.pt is damaged)
                    os.replace(path, path.with_name(PREVIOUS))

    # ------------------------------------------------------------------ one step
    def _prefetch(self, pool: ThreadPoolExecutor) -> Future:
        """Draw the next batch's indices now and load it in the background (store reads, collate,
        host-to-device copy overlap the running step); checkpoints keep the order state from
        before this draw, so a resumed run loads the same batch again."""
        self._consumed = (self.epoch, self.position, self.order, self.order_rng.bit_generator.state)  # a fresh dict
        return pool.submit(self.batch, self._next_indices())

    def _next_indices(self) -> list[int]:
        bs = self.config["batch_size"]
        if self.position + bs > len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = self.order_rng.permutation(len(self.dataset))
            self.dataset.set_epoch(self.epoch)
        idx = self.order[self.position : self.position + bs]
        self.position += bs
        return [int(i) for i in idx[self.rank :: self.world]]  # each rank its share of the global batch

    def autocast(self):
        """bf16 autocast around the network only; the quotient operators and losses stay in fp32."""
        return network_autocast(self.config["precision"], self.device.type)

    def implied_clean(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The clean structure a prediction implies: x̂1 = x_t + (1 - t) v (velocity) or x̂1 (denoiser)."""
        if self.config["parameterization"] == "velocity":
            return x_t + (1 - t.view(-1, 1, 1)) * prediction
        return prediction

    def predict(self, model, batch, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output in fp32. With self-conditioning (models that take it), with
        probability `self_condition` a first no-grad pass gives x̂1, fed to the second pass."""
        self_cond = None
        if self.self_conditioning and float(torch.rand((), generator=self.gen)) < self.config["self_condition"]:
            with torch.no_grad(), self.autocast():
                first = self.task.predict(model, batch, x_t, t).float()
            self_cond = self.implied_clean(x_t, t, first).detach()
        with self.autocast():
            return self.task.predict(model, batch, x_t, t, self_cond).float()

    def _global_layout(self, rows: int, atoms: int) -> tuple[int, int, slice]:
        """(global batch size, largest padded size over the ranks, this rank's rows of the global
        batch): local row k is global row rank + k * world (`_next_indices`)."""
        if self.world == 1:
            return rows, atoms, slice(None)
        import torch.distributed as dist

        largest = torch.tensor([atoms], device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return self.config["batch_size"], int(largest.item()), slice(self.rank, None, self.world)

    def loss(self, model, batch, split: bool = True) -> torch.Tensor:
        """Mean treatment loss of `batch`. With `split` (training under DDP) the random draws are
        those of the whole global batch, of which this rank keeps its rows: the gradient averaged
        over ranks is the single-process gradient of the same global batch (equal shares)."""
        c = self.config
        x1, mask = self.task.clean(batch)
        x1 = x1 * c["coord_scale"]  # e.g. 0.1 trains backbones in nm (Proteina)
        B, N = mask.shape
        device = x1.device
        G, Ng, rows = self._global_layout(B, N) if split else (B, N, slice(None))

        def standard_normal() -> torch.Tensor:
            return torch.randn(G, Ng, 3, generator=self.gen)[rows, :N].to(device)

        if not self.task.equivariant and c["rotation_augmentation"]:
            x1 = apply_rotation(random_rotation(G, self.gen)[rows].to(device), x1) * mask[..., None]
        x0 = self.task.sample_prior(batch, x1, self.gen, c["align_prior"], z=standard_normal())
        noise = center(standard_normal(), mask)
        t = sample_times(c["t_distribution"], G, c["t_min"], self.gen)[rows].to(device)
        x_t = self.interpolant.sample(x0, x1, noise, t) * mask[..., None]
        prediction = self.predict(model, batch, x_t, t)
        if c["parameterization"] == "velocity":
            target = self.interpolant.velocity_target(x0, x1, noise, t) * mask[..., None]
        else:
            target = x1
        implied = self.implied_clean(x_t, t, prediction)  # AF3's "implied x̂1" for a velocity model
        # Denoiser form: Proteína's weight 1/((1 - t)² + floor) (proteinfoundation/proteinflow/proteina.py
        # `compute_fm_loss`: floor 1e-5); qdiff's default floor is 1e-2.
        weight = None if c["parameterization"] == "velocity" else 1.0 / ((1 - t) ** 2 + c["denoiser_weight_floor"])
        losses = treatment_loss(c["treatment"], x_t=x_t, prediction=prediction, target=target, mask=mask, weight=weight,
                                parameterization=c["parameterization"], clean_target=x1, clean_prediction=implied, t=t,
                                reduction=c["loss_reduction"])
        return losses.mean()

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The collated batch on the device; on CUDA from pinned memory, so that the prefetch
        thread's copies are asynchronous (non_blocking from pageable memory is a synchronous copy)."""
        batch = self.task.collate([self.dataset[i] for i in indices])
        pin = self.device.type == "cuda"
        return {k: (v.pin_memory() if pin else v).to(self.device, non_blocking=True) for k, v in batch.items()}

    def _clip(self) -> float:
        clip = self.config["grad_clip"]
        params = [p for p in self.model.parameters() if p.grad is not None]
        if clip["mode"] == "none":
            return float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
        if clip["mode"] == "norm":
            return float(torch.nn.utils.clip_grad_norm_(params, clip["max_norm"]))
        # EDM / ET-Flow adaptive clipping: 1.5 x mean + 2 x std of the recent gradient norms.
        if len(self.grad_history) >= 10:
            h = np.asarray(self.grad_history[-50:])
            limit = float(1.5 * h.mean() + 2 * h.std())
        else:
            limit = float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
        self.grad_history = (self.grad_history + [float(min(norm, limit))])[-50:]
        return norm

    @torch.no_grad()
    def _ema_update(self) -> None:
        """EMA with the usual warm-up, decay = min(ema, (1 + step) / (10 + step)), so short runs
        do not sample from weights still dominated by the initialization."""
        decay = min(self.config["ema"], (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @torch.no_grad()
    def validate(self) -> float:
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return float("nan")
        state = self.gen.get_state()
        self.gen.manual_seed(self.config["seed"] + 1)
        bs = self.config["batch_size"]
        losses = []
        for k in range(min(self.config["val_batches"], math.ceil(len(self.val_dataset) / bs))):
            batch = self.task.collate([self.val_dataset[i] for i in range(k * bs, min((k + 1) * bs, len(self.val_dataset)))])
            batch = {key: v.to(self.device) for key, v in batch.items()}
            losses.append(float(self.loss(self.ema, batch, split=False)))
        self.gen.set_state(state)
        return float(np.mean(losses))

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """One optimizer step on `batch` (loss, backward, clipping, AdamW, LR schedule, EMA);
        returns (loss, gradient norm before clipping)."""
        self.model.train()
        loss = self.loss(self.net, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self._clip()
        self.optimizer.step()
        self.scheduler.step()
        self._ema_update()
        self.step += 1
        return float(loss.detach()), grad_norm

    # ------------------------------------------------------------------ loop
    def run(self, stop_at: int | None = None) -> Path | None:
        """Train to `steps` (resuming if a checkpoint exists). `stop_at` ends early after saving a
        checkpoint, as an interruption would (returns None then)."""
        c = self.config
        last = self.run_dir / "checkpoints" / "last.pt"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lead = self.rank == 0
        resume = latest_checkpoint(last.parent, self.device)
        if resume is not None and (stale := self.stale_reason(resume[1])) is not None:
            # A dataset update rewrote the store: never continue (or re-emit) the old weights.
            # Every rank read the same checkpoint and store; all have read before rank 0 moves it.
            self._agree(True)
            if lead:
                moved = self.supersede(resume[1])
                print(f"{resume[0]}: not resumed: {stale}. Starting a fresh run on this store; the earlier run's "
                      f"checkpoints, log and model were moved to {moved}", flush=True)
            self._agree(True)
            resume = None
        if resume is not None:
            self.load(*resume)
        elif lead:
            atomic_write_text(self.run_dir / "config.json", json.dumps(c, indent=2, sort_keys=True) + "\n")
        if lead:
            print(f"model {c['model']['name']}: {count_parameters(self.model):,} parameters; treatment {c['treatment']}; "
                  f"{len(self.dataset)} training items of {describe(self.store_identity)}; {self.world} process(es); "
                  f"starting at step {self.step}", flush=True)
        handler = _Preemption()
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGUSR1)}
        board = _tensorboard(self.run_dir / "tensorboard") if c["tensorboard"] and lead else None
        pool = None
        log_path = self.run_dir / "log.csv"
        new_log = not log_path.is_file() or self.step == 0
        wall_before = 0.0  # training seconds of earlier attempts (the log's wall_s continues across resumes)
        if lead and not new_log:
            wall_before = trim_log(log_path, self.step)  # a resumed run starts from a clean log: no rows past its checkpoint
        try:
            with open(log_path if lead else os.devnull, "w" if new_log else "a", newline="") as fh:
                writer = csv.writer(fh)
                if new_log:
                    writer.writerow(LOG_COLUMNS)
                last_save = clock_start = time.monotonic()
                bar = progress_bar(total=c["steps"], initial=self.step, desc="train", unit="step", enabled=self.progress and lead)
                pool = ThreadPoolExecutor(1, thread_name_prefix="qdiff-prefetch")
                pending = None
                while self.step < c["steps"]:
                    if stop_at is not None and self.step >= stop_at:
                        self.save()
                        return None
                    start = time.perf_counter()
                    batch = pending.result() if pending is not None else self.batch(self._next_indices())
                    self._consumed = None
                    pending = self._prefetch(pool) if self.step + 1 < c["steps"] else None
                    loss, grad_norm = self.train_step(batch)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss at step {self.step}; last checkpoint kept in {last.parent}")
                    rate = batch["mask"].shape[0] / (time.perf_counter() - start)
                    val = ""
                    if c["val_every"] and self.step % c["val_every"] == 0:
                        val = self.validate()
                        if val < self.best_val:
                            self.best_val = val
                            self.save("best.pt")
                    writer.writerow([self.step, self.epoch, f"{loss:.6g}", f"{self.scheduler.get_last_lr()[0]:.6g}",
                                     f"{grad_norm:.6g}", f"{rate:.1f}", val if val == "" else f"{val:.6g}",
                                     f"{wall_before + time.monotonic() - clock_start:.2f}"])
                    if board is not None:
                        for name, value in (("loss", loss), ("lr", self.scheduler.get_last_lr()[0]), ("grad_norm", grad_norm),
                                            ("samples_per_s", rate), ("val_loss", val)):
                            if value != "":
                                board.add_scalar(f"train/{name}", value, self.step)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}")
                    due = self.step % c["checkpoint_every"] == 0 or time.monotonic() - last_save > 60 * c["checkpoint_minutes"]
                    preempted = self._agree(handler.requested)  # every rank stops at the same step
                    if self._agree(due) or preempted:
                        fh.flush()
                        self.save()
                        last_save = time.monotonic()
                    if preempted:
                        print(f"pre-empted at step {self.step}: checkpoint saved, exiting", flush=True)
                        raise SystemExit(EXIT_PREEMPTED)
                bar.close()
            self.save()
            if lead:
                with atomic_path(self.run_dir / "model.pt") as tmp:
                    torch.save({"ema": self.ema.state_dict(), "config": json.dumps(c), "store": str(self.store.resolve()),
                                "store_identity": json.dumps(self.store_identity, sort_keys=True), "step": self.step}, tmp)
            if self.world > 1:
                import torch.distributed as dist

                dist.barrier()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if board is not None:
                board.close()
            for s, h in previous.items():
                signal.signal(s, h)
        return self.run_dir / "model.pt"


def train(store, run_dir, overrides: dict | None = None, progress: bool = True) -> Path:
    return Trainer(store, run_dir, resolve_config(overrides or {}), progress).run()
