"""Metrics: conformer coverage/AMR (RDKit RMSD), and backbone geometry metrics."""
