"""A run's output directory: one writer at a time, and no leftovers from a writer that was killed.

RunDirectoryLock holds an exclusive lock (flock) on `<out>/.ndsnn.lock` for as long as a run writes there: a
second run into the same directory is refused with the first one's process id, instead of interleaving its
metrics and overwriting its checkpoint. The kernel drops the lock when its process ends, however it ends
(SIGKILL included), so a lock is never left stale. Temporary files of atomic writes (`.<name>.*.tmp`) that
a killed run left behind are removed once the lock is held.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .._files import directory_problem
from .config import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, runs are not protected from each other
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".ndsnn.lock"


def prepare_directory(directory: Path) -> None:
    """Creates `directory` (and its parents), or says in one line why it cannot be the output directory."""
    problem = directory_problem(directory)
    if problem is not None:
        raise ConfigError(f"--out {directory} {problem}")


class RunDirectoryLock:
    """Exclusive use of a run directory by this process; a context manager."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.descriptor: int | None = None

    def acquire(self) -> None:
        prepare_directory(self.directory)
        path = self.directory / LOCK_NAME
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(f"--out {self.directory}: cannot write in it ({error.strerror or error})") from None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
                os.close(descriptor)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise ConfigError(f"--out {self.directory}: cannot lock it ({error.strerror})") from None
                raise ConfigError(f"--out {self.directory} is in use by another run (process {holder}); wait for "
                                  "it to end or choose another --out") from None  # fmt: skip
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self.descriptor = descriptor
        remove_stale_temporaries(self.directory)

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing the descriptor releases the lock
            self.descriptor = None

    def __enter__(self) -> RunDirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Deletes the temporary files (`.<name>.tmp`, `.<name>.<random>.tmp`) of atomic writes that never finished;
    only safe while the directory's lock is held. Returns what was removed."""
    removed = []
    for path in directory.glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
