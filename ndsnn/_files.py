"""Small file-system checks shared by the places that need a writable directory (the output directory of a
run, the compiled-kernel cache), so that each can say in one line why it cannot use one."""

from __future__ import annotations

import os
from pathlib import Path


def directory_problem(directory: Path) -> str | None:
    """Creates `directory` if needed; returns why it cannot be written in (a phrase that follows its name),
    or None when it is ready."""
    if directory.exists() and not directory.is_dir():
        return "is a file, not a directory"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot be created ({error.strerror or error})"
    if not os.access(directory, os.W_OK | os.X_OK):
        return "is not writable by this user"
    return None
