"""The CLI's torch-free choices (qdiff.choices) are the implementations' own names, and building the
parser imports no torch (so the commands that need none start fast)."""
import subprocess
import sys

from qdiff import choices
from qdiff.diffusion import CURVATURE_SIGNS, PARAMETERIZATIONS, TREATMENTS
from qdiff.sample import SDE_SCHEDULES
from qdiff.toy import SAMPLERS, TARGETS
from qdiff.toy import SDE_SCHEDULES as TOY_SDE_SCHEDULES


def test_choices_match_the_implementations():
    assert choices.TREATMENTS == TREATMENTS and choices.PARAMETERIZATIONS == PARAMETERIZATIONS
    assert set(choices.CURVATURE_SIGNS) == set(CURVATURE_SIGNS)
    assert choices.TOY_TARGETS == TARGETS and choices.TOY_SAMPLERS == SAMPLERS
    assert choices.SDE_SCHEDULES == SDE_SCHEDULES == TOY_SDE_SCHEDULES


def test_parser_imports_no_torch():
    code = "import sys, qdiff.cli; qdiff.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
