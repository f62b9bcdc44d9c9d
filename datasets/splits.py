"""Windows, dialogue splits and split files: the rules every dataset builder shares.

windows(words, size=450, overlap=100) -> list[list[str]]
    Cut one dialogue body (``"S1: how was it (0.3) S2: great".split()``) into windows of at
    most ``size`` words, each sharing at least ``overlap`` words with the one before
    (reference spec §13.6). A window ends at a speaker tag and the next starts at one where
    that is possible; when one utterance is too long for that, the cut falls inside it and
    the window opens with the owning speaker's tag (so every window that has a speaker
    before it begins ``S<k>:``).
split_dialogues(ids, seed, fractions=(0.81, 0.09, 0.10)) -> {"train": [...], "dev": [...],
    "test": [...]}
    Split by dialogue, never by window (§13.8): sorted ids, shuffled by ``random.Random(seed)``,
    cut by the fractions. The same ids and seed give the same split whatever their order.
write_splits(out_dir, {"train": lines, "dev": lines, "test": lines}) -> {name: Path}
    Write ``dataset_{train,dev,test}.txt`` (UTF-8, one line each ending in ``\\n``). All three
    are staged as temporary files and renamed only when all are written, so an error leaves
    the old files (or none). No training lines is an error (``EmptyDatasetError``).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from rtchat.common.files import replacing_all

SPLITS = ("train", "dev", "test")
TAG_RE = re.compile(r"^S\d:$")


class EmptyDatasetError(ValueError):
    """A dataset with no training lines; the message says what was given."""


def windows(words: Sequence[str], size: int = 450, overlap: int = 100) -> list[list[str]]:
    """Windows of ≤ ``size`` words over ``words``, consecutive ones sharing ≥ ``overlap`` words."""
    if not 0 <= overlap < size - 1:
        raise ValueError(f"need 0 <= overlap < size - 1, got size={size}, overlap={overlap}")
    words = list(words)
    tags = [i for i, w in enumerate(words) if TAG_RE.match(w)]
    out: list[list[str]] = []
    start = 0
    while start < len(words):
        owner = _owner_tag(words, tags, start)  # the tag to reopen a window cut mid-utterance
        budget = size - (owner is not None)
        end = min(start + budget, len(words))
        if end < len(words):
            # end at the last tag that leaves more than `overlap` words, so the next start moves on
            cut = [t for t in tags if start + overlap < t <= end]
            end = cut[-1] if cut else end
        out.append(([owner] if owner else []) + words[start:end])
        if end == len(words):
            break
        back = [t for t in tags if start < t <= end - overlap]
        start = back[-1] if back else end - overlap
    return out


def _owner_tag(words: list[str], tags: list[int], start: int) -> str | None:
    if TAG_RE.match(words[start]):
        return None
    before = [t for t in tags if t < start]
    return words[before[-1]] if before else None


def split_dialogues(ids: Iterable, seed: int, fractions: Sequence[float] = (0.81, 0.09, 0.10)) -> dict[str, list]:
    """``{"train", "dev", "test"}`` → ids; deterministic for (set of ids, seed)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers (train, dev, test) summing to 1, got {fractions}")
    order = sorted(ids)
    if len(set(order)) != len(order):
        raise ValueError("dialogue ids must be unique")
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * fractions[2])
    n_dev = round(len(order) * fractions[1])
    n_train = len(order) - n_test - n_dev
    return {"train": order[:n_train], "dev": order[n_train : n_train + n_dev], "test": order[n_train + n_dev :]}


def write_splits(out_dir: str | os.PathLike, splits: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """Write the three split files all or nothing; returns their paths."""
    if set(splits) != set(SPLITS):
        raise ValueError(f"splits must be exactly {SPLITS}, got {sorted(splits)}")
    for name in SPLITS:
        for i, line in enumerate(splits[name]):
            if "\n" in line or "\r" in line:
                raise ValueError(f"{name} line {i} contains a line break: {line[:80]!r}")
    if not splits["train"]:
        counts = ", ".join(f"{n}={len(splits[n])}" for n in SPLITS)
        raise EmptyDatasetError(f"refusing to write a dataset with no training lines ({counts})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"dataset_{name}.txt" for name in SPLITS}
    with replacing_all(list(paths.values())) as temps:  # all three written before any is renamed
        for name, tmp in zip(SPLITS, temps, strict=True):
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(line + "\n" for line in splits[name])
    return paths
