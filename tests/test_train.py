"""Training: a resumed run reproduces the uninterrupted one; pre-emption saves and exits;
checkpoints load with weights_only=True; bad settings fail early."""
import csv
import os
import signal
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest
import torch

from qdiff.data.featurize import featurize
from qdiff.train import EXIT_PREEMPTED, Trainer, resolve_config, sample_times, train

SMALL = {"batch_size": 8, "split": "random", "val_every": 5, "checkpoint_every": 1000, "model": {"name": "egnn", "hidden": 16, "layers": 2}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "demo.h5"
    featurize("demo-qm9", None, path, {"n_molecules": 80}, progress=False)
    return path


def params(run):
    return torch.load(run / "model.pt", weights_only=True)["ema"]


def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path, store):
    full = tmp_path / "full"
    train(store, full, {**SMALL, "steps": 24}, progress=False)
    # Interrupted after 7 steps (mid-epoch, after a validation), then the same command resumes.
    cut = tmp_path / "cut"
    assert Trainer(store, cut, resolve_config({**SMALL, "steps": 24}), progress=False).run(stop_at=15) is None
    assert not (cut / "model.pt").exists()  # past 10 steps: the adaptive clipping history is in the state
    train(store, cut, {**SMALL, "steps": 24}, progress=False)
    a, b = params(full), params(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 24
    rows = (cut / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and rows[-1].startswith("24,")
    wall = [float(r["wall_s"]) for r in csv.DictReader((cut / "log.csv").open())]
    assert len(wall) == 24 and wall[0] > 0 and all(b >= a for a, b in zip(wall, wall[1:]))  # the clock continues across the resume


def test_resume_keeps_the_conformer_choices_of_a_multi_conformer_store(tmp_path):
    """GEOM-like stores pick a conformer per molecule and epoch; a run resumed mid-training (with
    the next batch already prefetched) must continue with the same choices and batches."""
    store = tmp_path / "drugs.h5"
    featurize("demo-drugs", None, store, {"max_molecules": 24, "n_conformers": 3}, progress=False)
    config = {**SMALL, "split": None, "steps": 14, "batch_size": 6, "val_every": 0}
    train(store, tmp_path / "full", config, progress=False)
    Trainer(store, tmp_path / "cut", resolve_config(config), progress=False).run(stop_at=9)  # epoch 2 of 4-step epochs
    train(store, tmp_path / "cut", config, progress=False)
    a, b = params(tmp_path / "full"), params(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, store):
    run = tmp_path / "run"
    code = (
        "import sys, threading, os, signal, time\n"
        "from qdiff.train import train\n"
        # the signal goes 0.5 s after the trainer installs its handler (not after a fixed delay from
        # start-up, which a loaded machine's slow imports can outlast: then the process just dies)
        "install = signal.signal\n"
        "def hook(sig, handler):\n"
        "    previous = install(sig, handler)\n"
        "    if sig == signal.SIGTERM and callable(handler) and not getattr(hook, 'armed', False):\n"
        "        hook.armed = True\n"
        "        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()\n"
        "    return previous\n"
        "signal.signal = hook\n"
        f"train({str(store)!r}, {str(run)!r}, {dict(SMALL, steps=100000)!r}, progress=False)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == EXIT_PREEMPTED, out.stderr
    assert "pre-empted" in out.stdout
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] > 0 and not (run / "model.pt").exists()


def test_bad_settings_fail_early(tmp_path, store):
    with pytest.raises(ValueError, match="unknown training settings"):
        train(store, tmp_path / "x", {"stepz": 3})
    with pytest.raises(ValueError, match="unknown treatment"):
        train(store, tmp_path / "x", {"treatment": "kabsch"})
    with pytest.raises(ValueError, match="bad settings"):
        train(store, tmp_path / "x", {"model": {"name": "egnn", "width": 3}})
    train(store, tmp_path / "y", {**SMALL, "steps": 2}, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(store, tmp_path / "y", {**SMALL, "steps": 2, "lr": 1e-3}, progress=False)


def test_proteina_time_distribution_and_weight_floor(tmp_path, store):
    """Proteína's t: 0.98 Beta(1.9, 1) + 0.02 Uniform(0, 1); mean 0.98·1.9/2.9 + 0.01, and
    P(t < 0.1) = 0.98·0.1^1.9 + 0.002. Uniform stays the default (ET-Flow); both are reproducible."""
    n = 200_000
    t = sample_times("proteina", n, 1e-4, torch.Generator().manual_seed(0)).double()
    mean = 0.98 * 1.9 / 2.9 + 0.01
    assert abs(t.mean().item() - mean) < 4 * t.std().item() / n**0.5
    p_low = 0.98 * 0.1**1.9 + 0.002
    assert abs((t < 0.1).double().mean().item() - p_low) < 4 * (p_low / n) ** 0.5
    assert t.min() >= 1e-4 and t.max() <= 1 - 1e-4
    again = sample_times("proteina", n, 1e-4, torch.Generator().manual_seed(0)).double()
    assert torch.equal(t, again)
    u = sample_times("uniform", 1000, 1e-4, torch.Generator().manual_seed(0))
    assert torch.equal(u, 1e-4 + (1 - 2e-4) * torch.rand(1000, generator=torch.Generator().manual_seed(0)))
    config = resolve_config({})
    assert config["t_distribution"] == "uniform" and config["denoiser_weight_floor"] == 1e-2
    with pytest.raises(ValueError, match="t_distribution"):
        resolve_config({"t_distribution": "beta"})
    with pytest.raises(ValueError, match="denoiser_weight_floor"):
        resolve_config({"denoiser_weight_floor": 0})
    train(store, tmp_path / "p", {**SMALL, "steps": 2, "t_distribution": "proteina", "denoiser_weight_floor": 1e-5,
                                  "parameterization": "denoiser"}, progress=False)
    assert (tmp_path / "p" / "model.pt").is_file()


@pytest.mark.parametrize("treatment", ["conventional", "align-geodiff", "align-af3", "quotient"])
def test_every_treatment_trains(tmp_path, store, treatment):
    train(store, tmp_path / treatment, {**SMALL, "steps": 3, "treatment": treatment}, progress=False)
    assert (tmp_path / treatment / "model.pt").is_file()
    _ = (os, signal, threading)


@pytest.mark.slow
def test_two_process_ddp_with_gloo_under_torchrun(tmp_path, store):
    """torchrun --standalone --nproc_per_node 2 qdiff train: gloo on CPU, one global batch split
    across ranks, equal to one process on the same global batches, rank 0 writes, torch.compile
    over DDP; the same command resumes."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "qdiff", "train", "--store", str(store), "--out", str(run),
           "--steps", "6", "--set", "batch_size=8", "--set", "split=random", "--set", "val_every=3",
           "--set", "model={name: egnn, hidden: 16, layers: 2}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The first run compiles the DDP-wrapped network (aot_eager); compile is a runtime setting, so
    # the resume below runs eagerly.
    out = subprocess.run(cmd + ["--set", "compile=aot_eager"], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es)" in out.stdout
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 6 and len(state["rank_rng"]) == 2
    assert (run / "log.csv").read_text().splitlines()[-1].startswith("6,")
    # One process on the same global batches computes the same weights (up to the order of the
    # gradient all-reduce's floating-point sums).
    train(store, tmp_path / "single", {"steps": 6, "batch_size": 8, "split": "random", "val_every": 3,
                                       "model": {"name": "egnn", "hidden": 16, "layers": 2}}, progress=False)
    single, ddp = params(tmp_path / "single"), params(run)
    assert all(torch.allclose(single[k], ddp[k], atol=1e-5) for k in single)
    (run / "model.pt").unlink()  # as if killed after the last checkpoint: the same command resumes
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0 and "starting at step 6" in out.stdout, out.stderr[-3000:]
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 6


def test_compiled_training_and_sampling_match_eager(tmp_path, store):
    """`compile` is a runtime setting: the compiled network (aot_eager: dynamo + AOTAutograd
    without the C++ code generation, which is slow on CPU) trains and samples like the eager one."""
    from qdiff.sample import sample

    e3 = {**SMALL, "steps": 4, "model": {"name": "e3nn", "scalars": 8, "vectors": 4, "layers": 2}}
    train(store, tmp_path / "eager", e3, progress=False)
    torch._dynamo.reset()
    train(store, tmp_path / "compiled", {**e3, "compile": "aot_eager"}, progress=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    a, b = params(tmp_path / "eager"), params(tmp_path / "compiled")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    xs = []
    for name, compile in (("eager", False), ("compiled", "aot_eager")):
        sample(tmp_path / "eager", tmp_path / f"{name}.h5", steps=3, max_molecules=3, multiplier=1, compile=compile, progress=False)
        with h5py.File(tmp_path / f"{name}.h5") as f:
            xs.append(f["positions"][:])
    assert np.allclose(xs[0], xs[1], atol=1e-4)
    with pytest.raises(ValueError, match="compile"):
        train(store, tmp_path / "bad", {**e3, "compile": 3})


def test_conformer_draw_and_loss_reduction_are_training_settings(tmp_path, store, monkeypatch):
    """ET-Flow draws a training conformer uniformly (etflow/data/dataset.py) and reduces the loss
    by the unsquared per-atom norm (etflow/models/loss.py batchwise_l2_loss): both are settings,
    recorded in the run's config."""
    import json

    import qdiff.train as train_module

    with pytest.raises(ValueError, match="conformer 'boltzmann'"):
        resolve_config({"conformer": "boltzmann"})
    with pytest.raises(ValueError, match="loss_reduction 'l1'"):
        resolve_config({"loss_reduction": "l1"})
    assert resolve_config({})["conformer"] == "uniform" and resolve_config({})["loss_reduction"] == "mse"
    seen = []
    real = train_module.treatment_loss
    monkeypatch.setattr(train_module, "treatment_loss", lambda *a, **kw: seen.append(kw["reduction"]) or real(*a, **kw))
    run = tmp_path / "run"
    train(store, run, {**SMALL, "steps": 2, "val_every": 0, "conformer": "weighted", "loss_reduction": "atom_l2"}, progress=False)
    assert seen and set(seen) == {"atom_l2"}
    config = json.loads(torch.load(run / "model.pt", weights_only=True)["config"])
    assert config["conformer"] == "weighted" and config["loss_reduction"] == "atom_l2"
    trainer = Trainer(store, tmp_path / "other", resolve_config({**SMALL, "conformer": "first"}), progress=False)
    assert trainer.dataset.conformer == "first" and trainer.val_dataset.conformer == "first"
