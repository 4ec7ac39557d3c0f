"""The repository's own contracts: environments in sync, config validation, Snakemake lint and
format, and the workflow + DVC end to end on a tiny study."""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from workflow_fixtures import TINY, copy_workflow, snakemake, tool_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(extras=True):
    project = pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    if extras:
        for group in project["optional-dependencies"].values():
            reqs += [Requirement(r) for r in group]
    return reqs


CONDA_ENV_PIP = ["--extra-index-url ${QDIFF_TORCH_INDEX}", "-c ${QDIFF_ROOT}/envs/constraints.txt", "-e ${QDIFF_ROOT}"]
WORKFLOW_ENV = """
import os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"), workdir=Path(".")).list_rules()
print(os.environ.get("QDIFF_ROOT"), os.environ.get("QDIFF_TORCH_INDEX"), file=sys.stderr)
"""


def test_conda_env_installs_this_checkout_pinned_from_where_snakemake_copies_it(tmp_path):
    """envs/qdiff.yaml gives Python (pyproject's) and pip from conda; pip installs the checkout with
    pyproject's dependencies at envs/constraints.txt's pins, by absolute paths the Snakefile puts in
    QDIFF_ROOT, so the file works where Snakemake copies it (<conda-prefix>/<hash>_.yaml, where the
    old `..` meant .snakemake/). torch's build (CPU / CUDA) comes from QDIFF_TORCH_INDEX."""
    env = yaml.safe_load((ROOT / "envs" / "qdiff.yaml").read_text())
    assert [d for d in env["dependencies"] if isinstance(d, str)] == ["python=3.11", "pip"]
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains("3.11")
    pip = [line for d in env["dependencies"] if isinstance(d, dict) for line in d["pip"]]
    assert pip == CONDA_ENV_PIP
    # What the workflow sets (a user's QDIFF_TORCH_INDEX is kept): a parse of the copied workflow.
    work = copy_workflow(tmp_path / "repo", TINY)
    base = {k: v for k, v in tool_env().items() if not k.startswith("QDIFF_")}
    seen = {}
    for index in (None, "https://download.pytorch.org/whl/cpu"):
        run = subprocess.run([sys.executable, "-c", WORKFLOW_ENV], cwd=work, capture_output=True, text=True,
                             env={**base, **({"QDIFF_TORCH_INDEX": index} if index else {})})
        assert run.returncode == 0, run.stderr[-3000:]
        seen[index] = run.stderr.split()[-2:]
    assert seen[None] == [str(work), "https://pypi.org/simple"]
    assert seen["https://download.pytorch.org/whl/cpu"] == [str(work), "https://download.pytorch.org/whl/cpu"]
    # Copied as Snakemake does, its pip section written beside it as conda does, then resolved by pip
    # from there (offline: the dependencies must already be installed at the constraints' pins).
    copied = tmp_path / "elsewhere" / ".snakemake" / "conda" / "0123abcd_.yaml"
    copied.parent.mkdir(parents=True)
    copied.write_bytes((ROOT / "envs" / "qdiff.yaml").read_bytes())
    pip = [line for d in yaml.safe_load(copied.read_text())["dependencies"] if isinstance(d, dict) for line in d["pip"]]
    (copied.parent / "condaenv.test.requirements.txt").write_text("\n".join(pip) + "\n")
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet",
                          "--report", str(report), "-r", "condaenv.test.requirements.txt"], cwd=copied.parent, capture_output=True, text=True,
                         env={**base, "QDIFF_ROOT": seen[None][0], "QDIFF_TORCH_INDEX": seen[None][1]})
    assert out.returncode == 0, out.stderr[-3000:]
    install = json.loads(report.read_text())["install"]
    assert [(i["metadata"]["name"], i["download_info"]["url"]) for i in install] == [("qdiff", work.as_uri())], install
    assert install[0]["metadata"]["version"] == pyproject()["project"]["version"]


def test_constraints_pin_every_dependency_within_its_range():
    pins = {}
    for line in (ROOT / "envs" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    for req in requirements():
        assert req.name.lower() in pins, f"{req.name} has no pin in envs/constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()], prereleases=True), (req, pins[req.name.lower()])
    assert pins["torch"] == "2.13.0"


def test_readme_quick_start_and_ci_use_the_same_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index('"torch==2.13.0"') < makefile.index("-e \".[workflow,dev,tensorboard]\"")


_snakemake = snakemake


def test_snakemake_lint_and_format():
    out = _snakemake("--lint")
    assert "good condition" in out.stdout + out.stderr
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


def test_bad_config_fails_before_any_job_with_its_name(tmp_path):
    bad = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad["toy"]["stepz"] = 10
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = _snakemake("-n", "--configfile", str(path), check=False)
    assert out.returncode != 0 and "stepz" in out.stdout + out.stderr
    bad = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad["toy"]["treatments"] = ["kabsch"]
    path.write_text(yaml.safe_dump(bad))
    out = _snakemake("-n", "--configfile", str(path), check=False)
    assert out.returncode != 0 and "kabsch" in out.stdout + out.stderr


@pytest.mark.slow
def test_workflow_and_dvc_end_to_end(tmp_path):
    """dvc repro -> snakemake -> qdiff toy jobs -> summary; then everything is up to date."""
    work = copy_workflow(tmp_path / "repo", TINY)
    env = tool_env()
    git = lambda *a: subprocess.run(["git", *a], cwd=work, env=env, check=True, capture_output=True)  # noqa: E731
    git("init", "-q", "-b", "main")
    git("-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "add", "-A")
    git("-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-qm", "tiny study")
    dvc = lambda *a: subprocess.run([str(BIN / "dvc"), *a], cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
    out = dvc("repro")
    assert out.returncode == 0, out.stdout + out.stderr
    runs = sorted((work / "results" / "toy" / "runs").rglob("*.json"))
    assert len(runs) == 2 * 2 * 2 + 2  # targets x treatments x samplers + plus-sign ablations
    summary = (work / "results" / "toy" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("target,treatment,form,sampler")
    assert (work / "results" / "toy" / "z_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((work / "results").rglob("*.tmp"))
    info = json.loads((work / "results" / "data" / "demo-qm9.info.json").read_text())
    assert info["molecules"] == 40 and info["dataset"] == "demo-qm9"
    report_md = (work / "results" / "report" / "summary.md").read_text()
    assert "quotient" in report_md and "| RDKit ETKDGv3 |" in report_md  # the classical row, same evaluation path
    # the demo's EGNN runs use ET-Flow's parity switch, and the report shows the stereo-correct share per treatment
    run_config = json.loads((work / "results" / "runs" / "demo-qm9" / "quotient" / "seed0" / "config.json").read_text())
    assert run_config["model"]["name"] == "egnn" and run_config["parity_switch"] == "post_hoc"
    assert "| stereo % |" in report_md and re.search(r"^\| qdiff quotient \(ode\) \|.*\| \d+\.\d \| \S+ \|$", report_md, re.M), report_md
    assert (work / "results" / "runs" / "demo-qm9" / "quotient" / "seed0" / "checkpoints" / "last.pt").is_file()
    assert "up to date" in dvc("status").stdout
    assert "metrics.json" in dvc("metrics", "show").stdout
    dry = _snakemake("-n", cwd=work)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    out = _snakemake("--report", "report.html", cwd=work, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    page = (work / "report.html").read_text(errors="replace")
    assert len(page) > 100_000 and "Toy study" in page and "summary.md" in page and "coverage_curves.png" in page

    # A round trip in place: push to a remote, lose outputs, cache and Snakemake's metadata, pull:
    # nothing is recomputed (no `snakemake --touch`; tests/test_dvc_colleague.py has two clones).
    remote = tmp_path / "remote"
    assert dvc("remote", "add", "-d", "local", str(remote)).returncode == 0
    out = dvc("push")
    assert out.returncode == 0, out.stdout + out.stderr
    store = work / "results" / "data" / "demo-qm9.h5"
    digest = store.read_bytes()
    for path in (work / ".dvc" / "cache", work / ".snakemake", work / "results" / "runs", work / "results" / "toy" / "runs"):
        shutil.rmtree(path)
    store.unlink()
    out = dvc("pull")
    assert out.returncode == 0, out.stdout + out.stderr
    assert store.read_bytes() == digest and (work / "results" / "runs" / "demo-qm9" / "quotient" / "seed0" / "model.pt").is_file()
    dry = _snakemake("-n", cwd=work)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout
    assert "up to date" in dvc("status").stdout


def test_paper_study_dag_resolves_offline():
    """Every dataset x treatment x seed of the paper study, with torchrun for multi-GPU training."""
    out = _snakemake("-n", "-p", "--config", "study=paper")
    text = out.stdout + out.stderr
    paper = yaml.safe_load((ROOT / "studies" / "paper.yaml").read_text())["models"]
    runs = len(paper["datasets"]) * len(paper["treatments"]) * len(paper["seeds"])
    for rule, count in (("train_model", runs), ("sample_model", runs), ("evaluate_model", runs), ("fetch_dataset", 3), ("featurize_raw", 4)):
        assert re.search(rf"^{rule}\s+{count}$", text, re.M), (rule, text[-3000:])
    assert "torchrun --standalone --nnodes=1 --nproc-per-node=4 -m qdiff train --store results/data/geom-drugs.h5" in text
    assert "qdiff fetch pdb --dest resources/pdb --record resources/pdb/fetched.json" in text
    # GEOM-QM9 and GEOM-DRUGS come from one archive: one download, both featurized from it
    assert len(re.findall(r"qdiff fetch geom-\S+ --dest resources/geom ", text)) == 1, text[-3000:]
    assert all(f"qdiff featurize {d} --raw resources/geom " in text for d in ("geom-qm9", "geom-drugs")), text[-3000:]
    assert re.search(r"qdiff sample --run \S+geom-drugs\S+ .*--precision fp32", text), text[-3000:]
    bad = _snakemake("-n", "--config", "study=nope", check=False)
    assert bad.returncode != 0 and "nope" in bad.stdout + bad.stderr


SITE = {"slurm": {"account": "myproject", "partition": "cpu", "gpu_partition": "gpu", "max_runtime": "96h"}}


def dry_run_jobs(text: str) -> list[dict]:
    """Every job of a dry run's output: rule, threads, wildcards, resources."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \S+:\n)", text):
        head = re.match(r"(local)?rule (\S+):\n", block)
        if head:
            fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
            resources = dict(kv.split("=", 1) for kv in fields.get("resources", "").split(", ") if "=" in kv)
            jobs.append({"rule": head.group(2), "threads": int(fields.get("threads", 1)), "wildcards": fields.get("wildcards", ""),
                         **resources})
    return jobs


def test_on_a_site_every_job_names_the_account_and_every_gpu_job_the_gpu_partition(tmp_path):
    """The paper study with a site's `slurm` section, without Slurm (the real-Slurm run is
    tests/test_slurm.py): the plugin's own slurm_account on every submitted job, slurm_partition gpu
    exactly on the jobs that ask for GPUs (training, sampling and the NFE sweep: all of them, from one
    setting), threads = gpus x cpus_per_gpu on them, memory and time limits x attempt up to max_runtime."""
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(SITE))
    paper = yaml.safe_load((ROOT / "studies" / "paper.yaml").read_text())["models"]
    local = set(re.search(r"^localrules:\n((?:    \w+,\n)+)", (ROOT / "Snakefile").read_text(), re.M).group(1).replace(",", " ").split())
    assert {"all", "fetch_dataset", "report"} <= local
    for attempt in (1, 2):
        out = _snakemake("-n", "--cores", "64", "--attempt", str(attempt), "--configfile", str(site), "--config", "study=paper")
        jobs = [j for j in dry_run_jobs(out.stdout + out.stderr) if j["rule"] not in local]
        assert len(jobs) > 400, out.stdout[-2000:]
        assert {j["slurm_account"] for j in jobs} == {"myproject"}
        gpu_jobs = [j for j in jobs if int(j.get("gpu", 0)) > 0]
        assert {j["rule"] for j in gpu_jobs} == {"train_model", "sample_model", "sample_sweep"}
        assert all(j["slurm_partition"] == ("gpu" if j in gpu_jobs else "cpu") for j in jobs)
        assert all(j["threads"] == int(j["gpu"]) * int(j["cpus_per_gpu"]) == int(j["gpu"]) * 8 for j in gpu_jobs)
        drugs = next(j for j in jobs if j["rule"] == "train_model" and j["wildcards"].startswith("dataset=geom-drugs,"))
        assert (drugs["gpu"], drugs["threads"]) == ("4", 32)
        per = paper["per_dataset"]["geom-drugs"]["resources"]
        assert int(drugs["mem_mb"]) == per["mem_mb"] * attempt
        assert int(drugs["runtime"]) == min(72 * 60 * attempt, 96 * 60)  # "72h", capped at max_runtime
    # Evaluation resources from the study
    study = {**TINY, "models": {**TINY["models"], "resources": {"eval_threads": 1, "eval_runtime": "2h", "eval_mem_mb": 12000}}}
    work = copy_workflow(tmp_path / "repo", study)
    out = _snakemake("-n", "--cores", "4", "results/runs/demo-qm9/quotient/seed0/metrics.json", cwd=work)
    evaluate = [j for j in dry_run_jobs(out.stdout + out.stderr) if j["rule"] == "evaluate_model"]
    assert [(j["threads"], j["runtime"], j["mem_mb"]) for j in evaluate] == [(1, "120", "12000")], out.stdout[-2000:]
    assert "slurm_account" not in evaluate[0] and "slurm_partition" not in evaluate[0]  # no site settings: none set


def test_qm9_small_study_dag_resolves_offline():
    """The real-data study: qm9pack (offline) -> QM9 store -> every treatment x seed, the RDKit rows on
    the same 1,000 EDM test molecules, the NFE sweep, the report."""
    out = _snakemake("-n", "-p", "--config", "study=qm9-small")
    text = out.stdout + out.stderr
    study = yaml.safe_load((ROOT / "studies" / "qm9-small.yaml").read_text())["models"]
    runs = len(study["treatments"]) * len(study["seeds"])
    # the NFE sweep re-samples only the quotient and conventional runs, at every NFE but the runs' own 50
    sweep = study["sample"]
    assert sweep["nfe_sweep"] == [5, 10, 20, 50] and sweep["nfe_sweep_treatments"] == ["conventional", "quotient"]
    swept = 3 * 2 * len(study["seeds"])
    for rule, count in (("train_model", runs), ("sample_model", runs), ("classical_baseline", 2), ("evaluate_baseline", 2),
                        ("sample_sweep", swept), ("evaluate_sweep", swept)):
        assert re.search(rf"^{rule}\s+{count}$", text, re.M), (rule, text[-3000:])
    assert "results/runs/qm9/quotient/seed0/nfe5/samples.h5" in text and "results/runs/qm9/conventional/seed1/nfe20/samples.h5" in text
    assert "align-af3/seed0/nfe" not in text and "/nfe50/" not in text
    assert "qdiff fetch qm9 --dest resources/qm9 --source qm9pack" in text or "--source qm9pack" in text, text[-3000:]
    assert "qdiff etkdg --reference results/data/qm9.h5 --out results/baselines/qm9/etkdg-mmff/samples.h5 --split edm --mmff --max-molecules 1000 --multiplier 2" in text
    assert study["sample"]["max_molecules"] == 1000 and study["train"]["split"] == "edm"


def _overlay(base: dict, over: dict) -> dict:
    """`over` laid over `base`: mappings merged key by key, anything else (lists, the network spec
    `model`) replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "model":
            out[key] = _overlay(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.slow
def test_qm9_small_study_shrunk_runs_end_to_end(tmp_path):
    """studies/qm9-small.yaml with tests/configs/qm9-small-tiny.yaml laid over it, run by
    `snakemake --cores 2 --config study=qm9-small`: qm9pack -> a QM9 subset store (edm_subset) ->
    the SO(3) e3nn under all four treatments -> samples -> evaluation -> the two RDKit rows -> the NFE
    sweep (conventional, quotient) -> the report."""
    import time

    study = yaml.safe_load((ROOT / "studies" / "qm9-small.yaml").read_text())
    tiny = _overlay(study, yaml.safe_load((ROOT / "tests" / "configs" / "qm9-small-tiny.yaml").read_text()))
    work = copy_workflow(tmp_path / "repo", yaml.safe_load((ROOT / "config.yaml").read_text()))
    (work / "studies" / "qm9-small.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    env = tool_env(PYTHONPATH=str(work), OMP_NUM_THREADS="1")  # the rules' `qdiff` is this tree's
    start = time.monotonic()
    out = _snakemake("--cores", "2", "--config", "study=qm9-small", cwd=work, env=env, check=False)
    wall = time.monotonic() - start
    print(f"qm9-small (shrunk) end to end: {wall:.0f} s")
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]

    from qdiff.data.molecule_store import MoleculeStore
    from qdiff.data.sources import qm9

    # the store's split is EDM's (computed here independently on qm9pack's full index list),
    # restricted to the first molecules of each part in EDM order
    import csv

    folder = qm9.qm9pack_data_dir()
    indices = []
    for name in qm9.QM9PACK_FILES:
        with open(folder / name, newline="") as fh:
            indices += [int(row["Index"]) for row in csv.DictReader(fh)]
    edm = qm9.edm_split(indices)
    with MoleculeStore(work / "results" / "data" / "qm9.h5") as store:
        ids = store.ids()
        for part, n in (("train", 64), ("val", 16), ("test", 8)):
            assert [ids[r] for r in store.split("edm", part)] == [i for i in edm[part][:n] if i in ids], part
        assert len(store.split("edm", "test")) == 8 and len(ids) <= 64 + 16 + 8
        assert json.loads(store.split_attrs("edm")["subset"]) == {"test": 8, "train": 64, "val": 16}
    treatments = study["models"]["treatments"]
    assert set(treatments) == {"conventional", "align-geodiff", "align-af3", "quotient"}
    runs = work / "results" / "runs" / "qm9"
    metrics = {t: json.loads((runs / t / "seed0" / "metrics.json").read_text()) for t in treatments}
    for method in ("etkdg", "etkdg-mmff"):
        metrics[method] = json.loads((work / "results" / "baselines" / "qm9" / method / "metrics.json").read_text())
    for name, m in metrics.items():
        assert m["dataset"] == "qm9" and m["threshold"] == 0.5, name
        assert len(m["molecules"]) == 8, name  # the first 8 EDM test molecules, models and RDKit alike
        for key in ("cov_r_mean", "amr_r_mean", "cov_p_mean", "amr_p_mean", "cov_r_median", "amr_r_median"):
            assert isinstance(m["metrics"]["zero"][key], float), (name, key)
        assert 0.0 <= m["metrics"]["zero"]["cov_r_mean"] <= 1.0 and m["metrics"]["zero"]["amr_r_mean"] > 0, name
        assert 0.0 <= m["stereo"]["correct"] <= 1.0 and m["stereo"]["conformers"] == 16, name
        assert m["rmsd_to_reference"]["min_mean"] > 0, name
    config = json.loads((runs / "quotient" / "seed0" / "config.json").read_text())
    assert config["model"]["name"] == "e3nn" and config["model"]["symmetry"] == "so3" and config["steps"] == 10
    # the NFE sweep: NFE 2 re-sampled for conventional and quotient only (4 is the runs' own samples)
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("nfe*/metrics.json")) == [
        "conventional/seed0/nfe2/metrics.json", "quotient/seed0/nfe2/metrics.json"]
    report_dir = work / "results" / "report"
    report_md = (report_dir / "summary.md").read_text()
    for t in treatments:
        assert re.search(rf"^\| qdiff {t} \(ode\) \|", report_md, re.M), (t, report_md)
    for label in ("RDKit ETKDGv3", "RDKit ETKDGv3+MMFF94"):
        assert re.search(rf"^\| {re.escape(label)} \|", report_md, re.M), (label, report_md)
    assert "| stereo % |" in report_md and "### qm9" in report_md
    assert (report_dir / "report.html").stat().st_size > 1000
    for png in ("nfe_sweep.png", "loss_curves.png", "coverage_curves.png"):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert wall < 600, f"the shrunk study took {wall:.0f} s"
