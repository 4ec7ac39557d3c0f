"""Chemical plausibility of generated conformers.

Intramolecular checks come from PoseBusters (`PoseBusters(config="mol")`: sanitization, bond
lengths and angles within the distance-geometry bounds, internal steric clashes, ring and double
bond flatness; the internal-energy check against an ETKDG ensemble only with `energy=True`, as it
costs about 80% of the time). Stereochemistry is ours: the tetrahedral
(CIP) and double-bond labels assigned from the 3D coordinates must equal those of the reference
conformer (RDKit `AssignStereochemistryFrom3D`). A conformer passes when every check passes.
"""
from __future__ import annotations

import numpy as np

STEREO_CHECK = "stereochemistry_preserved"


def stereo_labels(mol) -> tuple:
    """CIP labels of stereocentres and E/Z labels of double bonds perceived from the 3D geometry."""
    from rdkit import Chem

    m = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(m, replaceExistingTags=True)
    centres = tuple((a.GetIdx(), a.GetProp("_CIPCode")) for a in m.GetAtoms() if a.HasProp("_CIPCode"))
    bonds = tuple((b.GetIdx(), str(b.GetStereo())) for b in m.GetBonds() if b.GetStereo() != Chem.BondStereo.STEREONONE)
    return centres, bonds


def posebusters_checks(mols: list, energy: bool = False) -> list[dict[str, bool]]:
    """PoseBusters' intramolecular ("mol") checks of each molecule: {check: passed}."""
    import copy

    from posebusters import PoseBusters

    if not mols:
        return []
    config = copy.deepcopy(PoseBusters(config="mol").config)
    if not energy:
        config["modules"] = [m for m in config["modules"] if m["function"] != "energy_ratio"]
    table = PoseBusters(config=config).bust(list(mols), None, None, full_report=False)
    skip = {"mol_pred_loaded"}
    return [{k: bool(v) for k, v in row.items() if k not in skip} for _, row in table.iterrows()]


def plausibility(reference, generated: list, energy: bool = False) -> dict:
    """Pass fractions over `generated` (RDKit molecules with one conformer each, same atom order
    as `reference`): one entry per check plus `all`."""
    if not generated:
        return {}
    expected = stereo_labels(reference)
    rows = posebusters_checks(generated, energy)
    for row, mol in zip(rows, generated):
        row[STEREO_CHECK] = stereo_labels(mol) == expected
    keys = list(rows[0])
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["all"] = float(np.mean([all(r.values()) for r in rows]))
    out["n_checked"] = len(rows)
    return out
