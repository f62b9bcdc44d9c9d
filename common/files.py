"""The one atomic write: a reader sees a file's old content or its new one, never a mix, and a
crash right after the write leaves the new content on disk.

``replacing(path)`` hands out a temporary path beside ``path`` for any writer (text, soundfile,
torch.save, savefig, a copy); on leaving the block the file is fsynced and renamed over ``path``,
with the mode a newly created file gets (0666 less the umask: ``mkstemp`` alone makes 0600).
On an error the temporary file is removed and ``path`` is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content into; see the module doc."""
    with replacing_all([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def replacing_all(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """``replacing`` for files that change together (a dataset's three splits): every one is
    written and fsynced before the first is renamed, so a failed write leaves all the old ones."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(Path(name))
            try:
                os.fchmod(fd, 0o666 & ~_umask())
            finally:
                os.close(fd)
        yield list(temps)
        for tmp in temps:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, path in zip(temps, targets, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temps:  # those renamed are gone already
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
