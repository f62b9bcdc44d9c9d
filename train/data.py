"""Training data: one transcript line per example, checked with ``parse_line``, tokenised
truncating from the LEFT (the end of a conversation is what the agent continues), padded on the
right per batch, never packed (spec §14.1)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from rtchat.configs.checksums import sha256_file
from rtchat.datasets.lines import LineError, parse_line


class DataError(ValueError):
    """The training data is missing, empty or has a line that is not a transcript line."""


TRAIN_SPLIT = "dataset_train.txt"  # in a folder made by `rtchat data …`, the only file trained on


def data_files(path: str | Path) -> list[Path]:
    """A file; a folder made by ``rtchat data`` (its train split only — dev and test stay held
    out); or every ``*.txt`` in any other folder (sorted)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / TRAIN_SPLIT).is_file():
            return [path / TRAIN_SPLIT]
        files = sorted(path.glob("*.txt"))
        if not files:
            raise DataError(f"{path}: a folder with no *.txt files; expected transcript lines, one per line")
        return files
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder; expected a file of transcript lines or a folder of *.txt")
    return [path]


def read_lines(files: list[Path]) -> list[str]:
    """Every non-blank line, each checked as a transcript line; LineError names file:line."""
    lines = []
    for file in files:
        for number, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                parse_line(text, where=f"{file}:{number}")
            except LineError as exc:
                raise DataError(str(exc)) from None
            lines.append(text.strip())
    if not lines:
        raise DataError(f"{', '.join(map(str, files))}: no transcript lines (the data is empty)")
    return lines


def sha256_files(files: list[Path]) -> str:
    """One hash over the files' names and bytes, in order (a single file: its plain sha256)."""
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for file in files:
        h.update(file.name.encode() + b"\0" + bytes.fromhex(sha256_file(file)))
    return h.hexdigest()


# Decision points: where a listener decides whether the floor changes. The first character of a
# speaker tag inside the transcript, and the first character of whatever follows a pause token.
TAG_START_RE = re.compile(r"(?<=\s)S\d+:")
AFTER_PAUSE_RE = re.compile(r"\(\d+(?:\.\d+)?\)\s+(?=\S)")


def decision_chars(line: str) -> list[int]:
    """Character positions of the line's decision points (tags and the unit after each pause)."""
    start = line.find("Transcript:")
    if start < 0:
        return []
    tags = [m.start() for m in TAG_START_RE.finditer(line, start)]
    after = [m.end() for m in AFTER_PAUSE_RE.finditer(line, start)]
    return sorted(set(tags + after))


def tokenize(tok, lines: list[str], max_length: int) -> list[dict[str, list[int]]]:
    """Per line ``ids`` (cut from the left to max_length: the line's end is kept) and
    ``decision`` (1 on the tokens that start a decision point, see ``decision_chars``; needs a
    fast tokenizer's offsets, all 0 without one)."""
    tok.truncation_side = "left"
    fast = getattr(tok, "is_fast", False)
    enc = tok(lines, truncation=True, max_length=max_length, return_offsets_mapping=fast)
    examples = []
    for i, ids in enumerate(enc["input_ids"]):
        flags = [0] * len(ids)
        if fast:
            wanted = decision_chars(lines[i])
            for k, (a, b) in enumerate(enc["offset_mapping"][i]):
                # a token starts a decision point when it covers its first character and begins
                # no earlier than the space before it (byte-level BPE puts the space in the token)
                if b > a and any(a <= c < b and a >= c - 1 for c in wanted):
                    flags[k] = 1
        examples.append({"ids": ids, "decision": flags})
    return examples


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are the ids with pad positions set to -100 (not trained on);
    ``decision`` marks decision-point tokens (0 on padding)."""
    width = max(len(ex["ids"]) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    decision = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex["ids"])
        input_ids[row, :n] = torch.tensor(ex["ids"])
        mask[row, :n] = 1
        decision[row, :n] = torch.tensor(ex["decision"])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100),
            "decision": decision}
