"""The metrics log of a run: one JSON object per line (step lines and epoch lines), appended as training goes.

A resumed run first drops the lines written after its checkpoint, so the log reads as if the run had never
stopped; a run resumed into another directory starts from the log beside its checkpoint. Every line is
standard JSON (a number that is not finite is written as null)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text
from .json_safe import dumps


class MetricsLog:
    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def start(self, resume_step: int | None, source: str | Path | None = None) -> None:
        """A fresh log, or (resuming) the log at `source` (default: this one) cut back to the lines of steps
        <= resume_step."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None:
            kept = [r for r in _read(Path(source or self.path)) if r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(dumps(record) + "\n" for record in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a line cut by a crash is skipped)."""
        return _read(self.path)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
