"""Where data set files are searched for: --data-dir if given, else $NDSNN_DATA if set, else system-wide folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFileError, format_dirs

ENV_VAR = "NDSNN_DATA"

# Each required file is given as its alternative relative paths, most preferred first (e.g. "x.gz", then "x").
Alternatives = Sequence[str]


@dataclass(frozen=True)
class Located:
    """The first directory holding every required file, the file chosen for each requirement, and all dirs tried."""

    directory: Path
    files: tuple[Path, ...]
    searched: tuple[Path, ...]


def candidate_dirs(
    data_dir: str | os.PathLike | None, subfolders: Sequence[str], system_dirs: Sequence[str | os.PathLike] = ()
) -> list[Path]:
    """Directories to try, in order. A place the user named is the only place looked in: data_dir (and its
    subfolders) when given, else $NDSNN_DATA (and its subfolders) when set, else the system dirs. So a data
    directory that lacks a file is reported, never completed from another copy of the data set.

    Each base is tried itself first, then each of `subfolders` inside it. Duplicates are dropped, order kept.
    """
    chosen = data_dir if data_dir is not None else (os.environ.get(ENV_VAR) or None)
    if chosen is not None:
        root = Path(chosen).expanduser()
        dirs = [root, *(root / sub for sub in subfolders)]
    else:
        dirs = [Path(d) for d in system_dirs]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _first_existing(directory: Path, alternatives: Alternatives) -> Path | None:
    for name in alternatives:
        path = directory / name
        if path.exists():
            return path
    return None


def locate(dataset: str, dirs: Sequence[Path], required: Sequence[Alternatives], how_to_get: str) -> Located:
    """The first of `dirs` that holds every required file; DataFileError naming the files and every dir otherwise."""
    partial: list[str] = []
    for directory in dirs:
        found = [_first_existing(directory, alternatives) for alternatives in required]
        if all(path is not None for path in found):
            return Located(directory, tuple(found), tuple(dirs))  # type: ignore[arg-type]
        if any(path is not None for path in found):
            missing = [alternatives[0] for alternatives, path in zip(required, found, strict=True) if path is None]
            partial.append(f"{directory} lacks {', '.join(missing)}")
    wanted = ", ".join(" or ".join(alternatives) for alternatives in required)
    incomplete = f" Incomplete: {'; '.join(partial)}." if partial else ""
    raise DataFileError(
        f"{dataset}: data files not found. Needed in one directory: {wanted}. "
        f"Looked in, in order: {format_dirs(dirs)}.{incomplete} {how_to_get}"
    )
