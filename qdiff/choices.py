"""The CLI's fixed choices, importable without torch, so that `qdiff evaluate`, `etkdg`, `report`,
`data info` and `headline` start in ~0.4 s instead of ~1.7 s (the names live with their
implementations too; tests/test_cli_choices.py keeps the two equal)."""
TREATMENTS = ("conventional", "align-geodiff", "align-af3", "quotient")  # qdiff.diffusion.treatments
PARAMETERIZATIONS = ("denoiser", "velocity")  # qdiff.diffusion.treatments
CURVATURE_SIGNS = ("minus", "plus", "none")  # the keys of qdiff.diffusion.samplers.CURVATURE_SIGNS
TOY_TARGETS = ("gaussian", "shape", "mixture")  # qdiff.toy.targets.TARGETS
TOY_SAMPLERS = ("ode", "sde")  # qdiff.toy.study.SAMPLERS
SDE_SCHEDULES = ("eta", "proteina")  # qdiff.toy.study / qdiff.sample
