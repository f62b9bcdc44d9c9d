"""Windows, dialogue splits and split files shared by the dataset builders."""

from __future__ import annotations

import os
from itertools import pairwise

import pytest

from rtchat.datasets import splits
from rtchat.datasets.splits import EmptyDatasetError, split_dialogues, windows, write_splits


def dialogue(turn_lengths: list[int]) -> list[str]:
    """Unique words so overlaps can be counted: S1: w0 w1 S2: w2 …"""
    words, n = [], 0
    for k, length in enumerate(turn_lengths):
        words.append(f"S{k % 2 + 1}:")
        words.extend(f"w{n + i}" for i in range(length))
        n += length
    return words


def content(window: list[str]) -> list[str]:
    return [w for w in window if w.startswith("w")]


def span(words: list[str], window: list[str]) -> tuple[int, int]:
    """Where a window lies in the dialogue (an opening tag repeated for a cut utterance excluded)."""
    first = words.index(content(window)[0])
    start = first - 1 if window[0] == words[first - 1] and window[1] == words[first] else first
    return start, words.index(content(window)[-1]) + 1


@pytest.mark.parametrize("lengths", [[7, 30, 3, 12] * 40, [60] * 30, [1] * 500, [449, 2, 449, 2, 3]])
def test_windows_respect_size_and_overlap_and_cover_the_dialogue(lengths):
    words = dialogue(lengths)
    out = windows(words, size=450, overlap=100)
    assert all(len(w) <= 450 for w in out)
    for a, b in pairwise(out):
        (a_start, a_end), (b_start, _) = span(words, a), span(words, b)
        assert a_start < b_start and a_end - b_start >= 100
    seen = {w for win in out for w in content(win)}
    assert seen == set(content(words))


def test_windows_start_and_end_at_speaker_tags_when_turns_are_short():
    words = dialogue([7, 30, 3, 12] * 40)
    out = windows(words)
    assert len(out) > 3
    assert all(w[0] in ("S1:", "S2:") for w in out)
    for w in out[:-1]:
        assert words[span(words, w)[1]] in ("S1:", "S2:")  # the word after the window is a tag


def test_a_window_cut_inside_a_long_utterance_reopens_with_its_speaker_tag():
    words = ["S1:", "hi", "S2:"] + [f"w{i}" for i in range(1200)]
    out = windows(words, size=450, overlap=100)
    assert len(out) >= 3
    assert all(w[0] in ("S1:", "S2:") for w in out)
    assert out[1][0] == "S2:" and out[1][1].startswith("w")
    assert all(len(w) <= 450 for w in out)


def test_short_and_empty_dialogues():
    assert windows([]) == []
    assert windows(["S1:", "hi", "S2:", "yo"]) == [["S1:", "hi", "S2:", "yo"]]


@pytest.mark.parametrize("size,overlap", [(100, 100), (100, 99), (10, -1)])
def test_windows_refuse_an_overlap_that_cannot_advance(size, overlap):
    with pytest.raises(ValueError, match="overlap"):
        windows(["S1:", "a"], size=size, overlap=overlap)


def test_split_is_by_dialogue_deterministic_and_independent_of_input_order():
    ids = [f"conv{i:04d}" for i in range(1000)]
    a = split_dialogues(ids, seed=42)
    assert a == split_dialogues(list(reversed(ids)), seed=42)
    assert a != split_dialogues(ids, seed=43)
    assert sorted(a["train"] + a["dev"] + a["test"]) == ids
    assert (len(a["train"]), len(a["dev"]), len(a["test"])) == (810, 90, 100)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.1, 0.2), (1.1, -0.1, 0.0)])
def test_split_refuses_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_dialogues(["a", "b"], seed=0, fractions=fractions)


def test_split_files_are_written_one_line_each(tmp_path):
    paths = write_splits(tmp_path, {"train": ["a b", "c"], "dev": ["d"], "test": []})
    assert {p.name for p in paths.values()} == {"dataset_train.txt", "dataset_dev.txt", "dataset_test.txt"}
    assert (tmp_path / "dataset_train.txt").read_text(encoding="utf-8") == "a b\nc\n"
    assert (tmp_path / "dataset_test.txt").read_text(encoding="utf-8") == ""
    assert sorted(os.listdir(tmp_path)) == ["dataset_dev.txt", "dataset_test.txt", "dataset_train.txt"]


def test_an_empty_dataset_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(EmptyDatasetError, match="no training lines"):
        write_splits(tmp_path / "out", {"train": [], "dev": [], "test": []})
    assert not (tmp_path / "out").exists()


def test_a_bad_line_leaves_the_old_files_untouched(tmp_path):
    write_splits(tmp_path, {"train": ["old"], "dev": ["old"], "test": ["old"]})
    with pytest.raises(ValueError, match="line break"):
        write_splits(tmp_path, {"train": ["new"], "dev": ["new"], "test": ["two\nlines"]})
    assert all((tmp_path / f"dataset_{n}.txt").read_text() == "old\n" for n in ("train", "dev", "test"))


def test_a_write_error_leaves_old_files_and_no_temporary_files(tmp_path, monkeypatch):
    write_splits(tmp_path, {"train": ["old"], "dev": ["old"], "test": ["old"]})
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(splits.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_splits(tmp_path, {"train": ["new"], "dev": ["new"], "test": ["new"]})
    assert sorted(os.listdir(tmp_path)) == ["dataset_dev.txt", "dataset_test.txt", "dataset_train.txt"]
    assert all((tmp_path / f"dataset_{n}.txt").read_text() == "old\n" for n in ("train", "dev", "test"))


def test_splits_must_be_named_train_dev_test(tmp_path):
    with pytest.raises(ValueError, match="exactly"):
        write_splits(tmp_path, {"train": ["a"], "validation": [], "test": []})
