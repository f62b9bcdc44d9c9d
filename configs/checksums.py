"""Checksums of model folders, so that a damaged file is named instead of loaded.

Where rtchat makes a model folder — a conversion or a merge into the model cache, the adapter the
repository ships — it writes ``SHA256SUMS`` beside the files, in ``sha256sum``'s format
(``sha256sum -c SHA256SUMS`` checks it by hand). Loading a folder that has one hashes what it
lists, once per load: ~0.3 s for the 540 MB embedded agent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rtchat.common.files import write_atomic

SUMS = "SHA256SUMS"


class ChecksumError(ValueError):
    """A file of a model folder is damaged or missing; the message names it and what to do."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_sums(folder: Path) -> None:
    """Record the sha256 of every file below ``folder`` in ``folder/SHA256SUMS``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUMS)
    write_atomic(folder / SUMS, "".join(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in files))


def verify_sums(folder: Path, fix: str) -> bool:
    """Check every file ``folder/SHA256SUMS`` lists: False when there is none (nothing was
    recorded), True when all match; else ``ChecksumError`` naming the file and ending with ``fix``."""
    sums = folder / SUMS
    if not sums.is_file():
        return False
    for line in sums.read_text(encoding="utf-8").splitlines():
        expected, sep, name = line.partition("  ")
        if not sep:
            raise ChecksumError(f"{sums}: not a sha256sum line: {line[:80]!r}. {fix}")
        path = folder / name
        if not path.is_file():
            raise ChecksumError(f"{path}: missing ({sums} lists it). {fix}")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"{path}: the checksum does not match (sha256 {actual[:16]}…, {SUMS} says {expected[:16]}…): "
                f"the file is damaged. {fix}"
            )
    return True
