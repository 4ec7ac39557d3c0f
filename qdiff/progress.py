"""Progress bars that stay readable in log files: frequent redraws on a terminal, one line
every 10 s otherwise (Snakemake logs, Slurm output)."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else 10.0)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=interactive, **kwargs)
