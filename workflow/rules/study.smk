# Study selection: `--config study=NAME` (other than demo) swaps in studies/NAME.yaml. No rules here.
from pathlib import Path

import yaml


def load_study(config):
    """Replace the data/models/toy sections by those of studies/<study>.yaml (a whole study, not
    a deep merge, so no demo setting leaks into it)."""
    study = config.get("study", "demo")
    if study == "demo":
        return
    path = Path(workflow.basedir) / "studies" / f"{study}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(
            f"study {study!r}: no {path}; known studies: demo, {', '.join(known)}"
        )
    loaded = yaml.safe_load(path.read_text())
    for section in ("data", "models", "toy"):
        config.pop(section, None)
        if section in loaded:
            config[section] = loaded[section]
