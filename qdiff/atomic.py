"""Atomic file writes: write `<name>.tmp` beside the target, fsync, then rename over it, so a
killed job never leaves a half-written file where a later step would take it for complete."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on error removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def clear_outputs(*paths: str | os.PathLike) -> None:
    """Remove the outputs of an earlier run (files or folders, and their `.tmp` leftovers) before a
    command writes a new set of them, so a rerun starts clean: a store and the SDF or PDB folder
    beside it, or a report's files, never mix an old run's with a new one's."""
    import shutil

    for path in map(Path, paths):
        for p in (path, path.with_name(path.name + ".tmp")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


def check_not_an_input(out: str | os.PathLike, *inputs: str | os.PathLike | None, flag: str = "--out") -> None:
    """SettingsError when the output path is one of the command's inputs (it would be replaced)."""
    from .errors import SettingsError

    target = Path(out).resolve()
    for given in inputs:
        if given is not None and Path(given).resolve() == target:
            raise SettingsError(f"{flag} {out}: the same file as an input ({given}); write the output elsewhere")
