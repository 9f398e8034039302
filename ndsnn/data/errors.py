"""The one error every data loader raises for a missing or unreadable file, so that a command line can catch it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DataFileError(RuntimeError):
    """A data set file is missing or corrupt; the message says which file, where it was looked for and how to get it.

    It takes a single message argument, so that a DataLoader worker can re-raise it in the main process.
    """


def format_dirs(dirs: Sequence[Path]) -> str:
    """Directories as a readable, ordered list for an error message."""
    if not dirs:
        return "(nowhere: no --data-dir given and $NDSNN_DATA is not set)"
    return ", ".join(str(d) for d in dirs)


def corrupt_file(dataset: str, path: Path, problem: str, how_to_get: str) -> DataFileError:
    """Error for a file that exists but cannot be used: names the file, its directory, the problem and a remedy."""
    return DataFileError(f"{dataset}: cannot use {path.name} in {path.parent}: {problem}. {how_to_get}")
