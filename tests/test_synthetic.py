"""The synthetic spoken corpus: timing rules, backchannels, identities, repair and the CLI."""

from __future__ import annotations

import argparse
import random
import re
import statistics
from itertools import pairwise

import pytest

from rtchat.datasets import synthetic
from rtchat.datasets.lines import parse_line
from rtchat.datasets.splits import EmptyDatasetError, write_splits

PAUSE_RE = re.compile(r"^\(\d+\.\d\)$")
TAG_RE = re.compile(r"^S\d:$")
CHAT_TEXT = [
    "Hello, how are you? I had a long day at work.",
    "Oh no, what happened; was it the boss again?",
    "Yes. He made us stay late, and then the printer broke!",
    "That sounds awful, I'm sorry. Did you get home okay?",
]


def conversation(turns: int, senders=("a", "b"), messages_per_turn: int = 2) -> dict:
    out = []
    for t in range(turns):
        sender = senders[t % len(senders)]
        out.append(
            [{"text": CHAT_TEXT[(t + m) % len(CHAT_TEXT)], "timestamp": "", "sender": sender} for m in range(messages_per_turn)]
        )
    return {"messages": out}


def many_segments(n_dialogues: int = 200, seed: int = 1) -> list[list[synthetic.Segment]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n_dialogues):
        turns, _ = synthetic.to_turns(conversation(12))
        out.append(synthetic.speak(turns, rng))
    return out


def test_the_same_seed_gives_the_same_corpus_and_another_seed_another():
    convs = {f"c{i}": conversation(6 + i % 5) for i in range(30)}
    a, _ = synthetic.build(convs, seed=7)
    assert a == synthetic.build(convs, seed=7)[0]
    assert a != synthetic.build(convs, seed=8)[0]


def test_every_switch_follows_a_pause_token_unless_it_is_an_overlap():
    for segments in many_segments():
        words = synthetic.render(segments).split()
        switches = [i for i, w in enumerate(words) if TAG_RE.match(w) and i > 0]
        no_pause = [i for i in switches if not PAUSE_RE.match(words[i - 1])]
        real_switch_without_gap = [s for s in segments[:-1] if s.turn_final and s.pause_s is None]
        backchannels = [s for s in segments if s.backchannel]  # the speaker resumes right after one
        assert len(no_pause) == len(real_switch_without_gap) + len(backchannels)
        for i in no_pause:  # a pause-less switch comes after a backchannel or ends an overlapped turn
            assert words[i - 1] not in ("S1:", "S2:")
        for a, b in pairwise(segments):
            if a.speaker != b.speaker and not a.backchannel:
                assert a.pause_s is not None or a.turn_final  # no pause only for an overlapped real switch


def test_turn_final_gaps_follow_the_published_shape():
    finals = [s for segs in many_segments() for s in segs[:-1] if s.turn_final]
    gaps = [round(s.pause_s, 1) for s in finals if s.pause_s is not None]
    share_no_gap = 1 - len(gaps) / len(finals)
    assert 0.18 < share_no_gap < 0.32
    assert statistics.mode(gaps) in (0.2, 0.3)
    assert 0.2 <= statistics.median(gaps) <= 0.4
    assert 0.04 < sum(g >= 1.0 for g in gaps) / len(gaps) < 0.2  # a tail of long gaps
    assert min(gaps) >= 0.1 and max(gaps) <= 3.0


def test_within_turn_pauses_overlap_turn_final_durations():
    segs = [s for segments in many_segments() for s in segments]
    within = [round(s.pause_s, 1) for s in segs if not s.turn_final and not s.backchannel]
    final = [round(s.pause_s, 1) for s in segs if s.turn_final and s.pause_s is not None]
    assert len(within) > 500
    lo, hi = sorted(final)[len(final) // 10], sorted(final)[9 * len(final) // 10]
    assert sum(lo <= p <= hi for p in within) / len(within) > 0.6
    assert statistics.median(final) < statistics.median(within) < 2 * statistics.median(final) + 0.2


def test_clauses_tell_inner_boundaries_from_possible_completions():
    got = synthetic.clauses(["Hi, how are you? I'm fine", "ok, .", "so"])
    assert got == [(["hi"], "inner"), (["how", "are", "you"], "completion"), (["i'm", "fine"], "completion"),
                   (["ok"], "completion"), (["so"], "completion")]


def _hold_rates(monkeypatch, **probabilities) -> tuple[float, float, list[synthetic.Segment]]:
    """Share of inner (after "c,") and completion (after "f.") boundaries followed by a hold, for
    a turn "a b c, d e f. g h i" said many times; hesitations off unless given."""
    monkeypatch.setattr(synthetic, "P_HESITATION", probabilities.pop("P_HESITATION", 0.0))
    for name, value in probabilities.items():
        monkeypatch.setattr(synthetic, name, value)
    turns = [("S1" if t % 2 == 0 else "S2", ["A b c, d e f. G h i"]) for t in range(4000)]
    segments = synthetic.speak(turns, random.Random(3))
    holds = [s for s in segments if not s.turn_final and not s.backchannel]
    last = [s.words[-1] if s.words[-1] not in synthetic.FILLERS else s.words[-2] for s in holds]
    return last.count("c") / 4000, last.count("f") / 4000, holds


def test_speakers_rush_through_possible_completions_and_hold_them_with_a_filler(monkeypatch):
    inner, completion, holds = _hold_rates(monkeypatch)
    assert abs(inner - synthetic.P_PAUSE_INNER) < 0.03 and abs(completion - synthetic.P_PAUSE_COMPLETION) < 0.03
    at_completion = [s for s in holds if "f" in s.words[-2:]]
    with_filler = sum(s.words[-1] in synthetic.FILLERS for s in at_completion) / len(at_completion)
    assert abs(with_filler - synthetic.P_FILLER_BEFORE_HOLD) < 0.06


def test_hesitation_pauses_come_right_after_a_function_word_inside_a_clause(monkeypatch):
    monkeypatch.setattr(synthetic, "P_PAUSE_INNER", 0.0)
    monkeypatch.setattr(synthetic, "P_PAUSE_COMPLETION", 0.0)
    monkeypatch.setattr(synthetic, "P_HESITATION", 0.5)
    turns = [("S1" if t % 2 == 0 else "S2", ["I went to the store and bought the milk"]) for t in range(400)]
    segments = synthetic.speak(turns, random.Random(4))
    holds = [s for s in segments if not s.turn_final]
    assert 150 < len(holds) < 250  # one clause per turn, p 0.5
    for s in holds:
        words = [w for w in s.words if w not in synthetic.FILLERS]
        assert words[-1] in synthetic.FUNCTION_WORDS
    assert any(s.words[-1] in synthetic.FILLERS for s in holds)


def test_backchannels_sit_inside_the_other_speakers_longer_pause():
    count = 0
    for segments in many_segments():
        for i, s in enumerate(segments):
            if not s.backchannel:
                continue
            count += 1
            before, after = segments[i - 1], segments[i + 1]
            assert before.speaker != s.speaker == ("S2" if before.speaker == "S1" else "S1")
            assert not before.turn_final and before.pause_s >= synthetic.BACKCHANNEL_MIN_PAUSE_S - 0.05
            assert after.speaker == before.speaker and s.pause_s is None
            assert " ".join(s.words) in synthetic.BACKCHANNELS
    assert count > 50
    body = " ".join(synthetic.render(segs) for segs in many_segments(50))
    assert re.search(r"\(\d\.\d\) S\d: (mm-hmm|yeah|right|uh-huh|okay|oh yeah|mm) S\d:", body)


def test_fillers_appear_and_text_is_cleaned_to_words():
    body = " ".join(synthetic.render(segs) for segs in many_segments(100))
    assert re.search(r"\b(um|uh)\b", body)
    for w in body.split():
        assert TAG_RE.match(w) or PAUSE_RE.match(w) or re.fullmatch(r"[\w'\-]+", w), w
    assert body == body.replace("Hello", "")  # lower-cased


def test_every_line_parses_and_identities_are_plausible():
    convs = {f"c{i}": conversation(8 + i % 7) for i in range(40)}
    lines, stats = synthetic.build(convs, seed=3)
    assert stats["used"] == 40 and sum(len(v) for v in lines.values()) >= 40
    for name, ls in lines.items():
        for n, text in enumerate(ls):
            line = parse_line(text, where=f"{name}:{n}")
            assert line.text() == text and line.summary == ""
            assert line.body.split()[0] in ("S1:", "S2:")
            s1, s2 = line.identities["S1"], line.identities["S2"]
            assert s1.name != s2.name
            for person in (s1, s2):
                names = synthetic.FEMALE_NAMES if person.sex == "female" else synthetic.MALE_NAMES
                assert person.name in names
                assert person.age == "unknown" or 18 <= int(person.age) <= 75


def test_single_sender_conversations_are_repaired_by_turn_parity_or_skipped():
    turns, repaired = synthetic.to_turns(conversation(6, senders=("same",)))
    assert repaired and [tag for tag, _ in turns] == ["S1", "S2"] * 3
    one_turn = conversation(1, senders=("same",), messages_per_turn=5)  # what the released file holds
    convs = {"multi": conversation(6, senders=("same",)), "one": one_turn, "ok": conversation(6)}
    _, stats = synthetic.build(convs, seed=0)
    assert (stats["used"], stats["repaired"], stats["skipped"], stats["skipped_single_sender"]) == (2, 1, 1, 1)


def test_consecutive_turns_of_one_sender_are_merged():
    conv = {
        "messages": [
            [{"text": "hi", "sender": "a"}],
            [{"text": "you there", "sender": "a"}],
            [{"text": "yes", "sender": "b"}],
            [{"text": "  ", "sender": "a"}],
            [{"text": "ok", "sender": "b"}],
        ]
    }
    turns, repaired = synthetic.to_turns(conv)
    assert not repaired and turns == [("S1", ["hi", "you there"]), ("S2", ["yes", "ok"])]


def test_no_usable_dialogue_is_an_error(tmp_path):
    lines, stats = synthetic.build({"a": conversation(2), "b": conversation(1, senders=("x",))}, seed=0)
    assert stats["used"] == 0
    with pytest.raises(EmptyDatasetError):
        write_splits(tmp_path, lines)
    assert not list(tmp_path.iterdir())


def cli(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    synthetic.configure(parser)
    return parser.parse_args(args)


def test_the_command_writes_parseable_split_files_from_chitchat(tmp_path, capsys):
    assert synthetic.run(cli(["--out", str(tmp_path), "--max-dialogues", "60", "--seed", "5"])) == 0
    out = capsys.readouterr().out
    assert "used" in out and "train:" in out and "transcript words" in out
    texts = {n: (tmp_path / f"dataset_{n}.txt").read_text(encoding="utf-8") for n in ("train", "dev", "test")}
    assert texts["train"].endswith("\n")
    for n, text in texts.items():
        for i, line in enumerate(text.splitlines()):
            parse_line(line, where=f"{n}:{i}")
    assert synthetic.run(cli(["--out", str(tmp_path / "again"), "--max-dialogues", "60", "--seed", "5"])) == 0
    assert (tmp_path / "again" / "dataset_train.txt").read_text(encoding="utf-8") == texts["train"]


def test_the_command_fails_cleanly_without_dialogues(tmp_path, capsys):
    assert synthetic.run(cli(["--out", str(tmp_path / "o"), "--max-dialogues", "0"])) == 1
    assert "no training lines" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_summaries_can_only_be_off():
    assert cli(["--out", "x"]).summaries == "off"
    with pytest.raises(SystemExit):
        cli(["--out", "x", "--summaries", "on"])
