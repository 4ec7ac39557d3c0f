"""The expected failures of qdiff, each with its exit status (`qdiff` prints one line for them;
anything else is a bug and keeps its traceback). README "Exit statuses" lists them.

Every class is also a ValueError, so library callers that caught ValueError still do."""
from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1  # an unexpected exception: Python's traceback, please report it
EXIT_SETTINGS = 2  # bad arguments or settings (argparse's own status for usage errors)
EXIT_INPUT = 3  # a missing, unreadable, corrupt or mismatched input file
EXIT_IO = 4  # the operating system refused a read or write (permissions, read-only, disk full)
EXIT_DOWNLOAD = 5  # a download or every entry of a fetch failed
EXIT_RESOURCES = 6  # out of memory (CPU or GPU)
EXIT_EMPTY = 7  # an empty or degenerate result or input set (0 molecules, duplicate inputs)
EXIT_PREEMPTED = 143  # training stopped by SIGTERM / SIGUSR1 after saving a checkpoint

EXIT_STATUSES = {
    EXIT_OK: "success",
    EXIT_BUG: "unexpected error (a bug in qdiff: the traceback is shown; please report it)",
    EXIT_SETTINGS: "bad command-line arguments or settings (unknown key, wrong type, out of range, not an allowed value)",
    EXIT_INPUT: "a missing, unreadable, corrupt or mismatched input file (store, checkpoint, model.pt, metrics)",
    EXIT_IO: "the operating system refused a read or write (permission, read-only file system, disk full)",
    EXIT_DOWNLOAD: "a download failed, or every entry of a fetch failed",
    EXIT_RESOURCES: "out of memory",
    EXIT_EMPTY: "an empty or degenerate result or input (a store with 0 entries, the same metrics twice)",
    EXIT_PREEMPTED: "training pre-empted (SIGTERM/SIGUSR1): a checkpoint was saved; re-run to resume",
}


class QdiffError(ValueError):
    """An expected failure: one line for the user, and an exit status."""

    exit_status = EXIT_SETTINGS


class SettingsError(QdiffError):
    """A setting or argument that is unknown, of the wrong type, out of range or not allowed."""

    exit_status = EXIT_SETTINGS


class InputFileError(QdiffError):
    """An input file that is missing, unreadable, corrupt, or of the wrong kind for this command."""

    exit_status = EXIT_INPUT


class CorruptArtifactError(InputFileError):
    """A file qdiff wrote earlier (checkpoint, model.pt, partial results) that cannot be read back."""

    def __init__(self, path, what: str, cause: BaseException | str, remedy: str):
        self.path = str(path)
        detail = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause)
        super().__init__(f"{path}: corrupt or truncated {what} ({_short(detail)}); {remedy}")


class EmptyResultError(QdiffError):
    """A result or input set with nothing in it (or the same thing twice) where that is never meant."""

    exit_status = EXIT_EMPTY


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or an allocator failure reported as RuntimeError."""
    if isinstance(err, MemoryError):
        return True
    if type(err).__name__ == "OutOfMemoryError":
        return True
    if isinstance(err, RuntimeError):
        text = str(err)
        return any(s in text for s in ("out of memory", "can't allocate memory", "DefaultCPUAllocator", "not enough memory"))
    return False


def classify(err: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an expected failure, None for a bug."""
    import yaml

    if isinstance(err, QdiffError):
        return err.exit_status, str(err)
    declared = getattr(type(err), "exit_status", None)  # e.g. qdiff.data.download.DownloadError
    if isinstance(declared, int):
        return declared, str(err)
    if is_out_of_memory(err):
        return EXIT_RESOURCES, (f"out of memory ({_short(err)}); reduce the size of the job (batch_size, the model's size, "
                                "--max-molecules / --lengths / --per-length) or use a machine with more memory")
    if isinstance(err, yaml.YAMLError):
        return EXIT_SETTINGS, f"not valid YAML: {_short(err)}"
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        if err.filename is None:
            return EXIT_INPUT, str(err)
        what = ("is a folder, expected a file" if isinstance(err, IsADirectoryError) else
                "a part of the path is a file, not a folder" if isinstance(err, NotADirectoryError) else "no such file or folder")
        return EXIT_INPUT, f"{err.filename}: {what}; check the path"
    if isinstance(err, OSError):
        if err.filename is None:
            return EXIT_IO, f"{_short(err)}; check the paths, their permissions and the free space"
        return EXIT_IO, f"{err.filename}: {err.strerror or err}; check its permissions and the free space"
    if isinstance(err, KeyError):
        return EXIT_SETTINGS, str(err.args[0]) if err.args else repr(err)
    if isinstance(err, ValueError):
        return EXIT_SETTINGS, str(err)
    return None
