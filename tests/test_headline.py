"""`qdiff headline`: the lines `make demo` ends with, from the report's summary.json and the toy summary."""
import json
import subprocess
import sys

from qdiff.headline import headline


def test_one_line_per_dataset_and_the_toy(tmp_path):
    report, toy = tmp_path / "report", tmp_path / "toy"
    report.mkdir(), toy.mkdir()
    mol = {"dataset": "demo-qm9", "kind": "molecules", "threshold": 0.5}
    summary = [
        {**mol, "treatment": "quotient", "sampler": "ode", "cov_r_mean": 0.125},
        {**mol, "treatment": "etkdg", "sampler": "classical", "cov_r_mean": 0.75},
        {**mol, "treatment": "conventional", "sampler": "ode", "cov_r_mean": 0.0},
        {"dataset": "demo-backbones", "kind": "backbones", "treatment": "align-af3", "sampler": "sde", "threshold": None,
         "pair_distance_jsd": 0.42, "valid_ca_geometry": 0.1},
    ]
    (report / "summary.json").write_text(json.dumps({"summary": summary}))
    (report / "report.html").write_text("<html></html>")
    (toy / "summary.csv").write_text(
        "target,treatment,form,sampler,curvature,seed,n_samples,steps,metric,value,expected,stderr,z,path_length,nfe\n"
        "gaussian,quotient,denoiser,sde,minus,0,1000,100,m,1,1,0.1,-1.5,1,100\n"
        "shape,quotient,denoiser,sde,minus,0,1000,100,m,1,1,0.1,2.5,1,100\n"
        "shape,quotient,denoiser,sde,plus,0,1000,100,m,1,1,0.1,-20.0,1,100\n"
        "shape,quotient,denoiser,ode,,0,1000,100,m,1,1,0.1,99.0,1,100\n")
    lines = headline(report, toy)
    assert lines[0].startswith("Report: ") and str((report / "report.html").resolve()) in lines[0]
    qm9 = next(line for line in lines if "demo-qm9" in line)
    assert "conventional 0.0, quotient 12.5, RDKit etkdg 75.0" in qm9 and "0.5 Å" in qm9
    assert "align-af3 0.42 (10% valid)" in next(line for line in lines if "demo-backbones" in line)
    assert "quotient 2.5, quotient (plus sign) 20.0" in lines[-1]  # the SDE rows only; ODE rows are not in this line


def test_cli_without_results_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "qdiff", "headline", "--report", str(tmp_path / "r"), "--toy", str(tmp_path / "t")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "no report" in out.stdout
