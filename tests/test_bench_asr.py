"""rtchat bench asr: the sentence grammar, the simulated real-time clock and the latency keys
(on scripted events; the real run is the benchmark itself)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rtchat.bus.events import AsrFinal, AsrPartial, VadEnd, VadStart, Word
from rtchat.evals.bench_asr import latencies, ratios, sentences, stream, wer, wer_breakdown, wer_by_voice
from rtchat.nodes.tts.espeak import synthesize


def test_sentences_are_seeded_varied_and_free_of_digits():
    a = sentences(50, seed=3)
    assert a == sentences(50, seed=3) and a != sentences(50, seed=4)
    assert len(set(a)) > 40 and not any(re.search(r"\d", s) for s in a)


class SlowCore:
    """Takes 30 ms per frame (longer than a 20 ms frame) and reports every 10th frame."""

    def __init__(self, monkeypatch):
        self.clock = [0.0]
        monkeypatch.setattr("rtchat.evals.bench_asr.time.perf_counter", lambda: self.clock[0])
        self.n = 0

    def on_event(self, frame, now_ns):
        self.clock[0] += 0.030
        self.n += 1
        return [frame.stream_pos] if self.n % 10 == 0 else []

    def deadline_ns(self):
        return None


class EndThenFlush:
    """Like the ASR core at a speech end: frame 25 returns "end" at once (1 ms) and is due; the
    tick (100 ms of compute) returns "flushed"."""

    def __init__(self, monkeypatch):
        self.clock, self.n, self.due = [0.0], 0, False
        monkeypatch.setattr("rtchat.evals.bench_asr.time.perf_counter", lambda: self.clock[0])

    def on_event(self, frame, now_ns):
        self.clock[0] += 0.001
        self.n += 1
        self.due = self.n == 25
        return ["end"] if self.due else []

    def deadline_ns(self):
        return 0 if self.due else None

    def on_tick(self, now_ns):
        self.clock[0] += 0.100
        self.due = False
        return ["flushed"]


def test_a_core_slower_than_real_time_falls_behind_in_the_simulated_clock(monkeypatch):
    core = SlowCore(monkeypatch)
    events, busy_s = stream(core, np.zeros(16_000, dtype=np.int16))  # 1 s = 50 frames
    assert busy_s == pytest.approx(1.5)
    # frame k (1-based) finishes at 20 ms (its arrival) + 30 ms·k: the queue grows by 10 ms a frame
    assert [t for t, _ in events] == [20_000_000 + 30_000_000 * k for k in (10, 20, 30, 40, 50)]


def test_what_a_core_returns_is_published_when_that_call_ends_and_a_due_core_is_ticked(monkeypatch):
    events, busy_s = stream(EndThenFlush(monkeypatch), np.zeros(16_000, dtype=np.int16))
    assert events == [(501_000_000, "end"), (601_000_000, "flushed")]  # frame 25 arrives at 500 ms
    assert busy_s == pytest.approx(0.05 + 0.1)


def test_latency_keys_from_scripted_events():
    s = 1_000_000_000
    words = (Word(text="hello", start_ns=1 * s, end_ns=2 * s, prob=1.0),
             Word(text="there", start_ns=2 * s, end_ns=3 * s, prob=1.0))
    events = [
        (1 * s, VadStart(stream_pos=16_000, audio_ns=1 * s)),
        (int(1.4 * s), AsrPartial(text="hello", rev=1, utterance=0, words=words[:1])),
        (int(3.45 * s), VadEnd(stream_pos=46_400, audio_ns=int(2.9 * s))),
        (int(3.5 * s), AsrFinal(text="hello there", utterance=0, words=words)),
    ]
    got = latencies(events, duration_s=4.0, silence_ms=470)
    assert got["vad_end_p50_ms"] == pytest.approx(80)  # 3.45 s − 2.9 s − 470 ms
    assert got["partial_p50_ms"] == pytest.approx(400)
    assert got["commit_p50_ms"] == pytest.approx((1500 + 500) / 2)
    assert got["last_word_p50_ms"] == pytest.approx(500)  # "there" ends at 3 s, final at 3.5 s
    assert got["final_after_vad_end_p50_ms"] == pytest.approx(50)
    assert got["drift_ratio"] is None  # needs two minutes
    assert got["committed_words"] == 2 and got["utterances"] == 1


def test_the_last_word_of_each_utterance_is_timed_against_the_vad_end_that_closed_it():
    """Utterance k is the one the k-th vad.end closed; a final before its vad.end counts negative."""
    s = 1_000_000_000
    w = [Word(text=t, start_ns=a * s, end_ns=b * s, prob=1.0) for t, a, b in (("one", 1, 2), ("two", 5, 6), ("three", 6, 7))]
    events = [
        (1 * s, VadStart(stream_pos=16_000, audio_ns=1 * s)),
        (int(2.1 * s), AsrFinal(text="one", utterance=0, words=(w[0],))),  # final 100 ms before vad.end
        (int(2.2 * s), VadEnd(stream_pos=0, audio_ns=2 * s)),
        (5 * s, VadStart(stream_pos=80_000, audio_ns=5 * s)),
        (int(6.5 * s), AsrFinal(text="two", utterance=1, words=(w[1],))),
        (int(7.2 * s), VadEnd(stream_pos=0, audio_ns=7 * s)),
        (int(7.5 * s), AsrFinal(text="three", utterance=1, words=(w[2],))),  # the flush: 300 ms after vad.end
    ]
    got = latencies(events, duration_s=8.0)
    assert got["last_word_p50_ms"] == pytest.approx((100 + 500) / 2)  # "one" 100 ms, "three" 500 ms
    assert got["final_after_vad_end_p50_ms"] == pytest.approx((-100 + 300) / 2)


def test_the_wer_breakdown_counts_each_kind_of_error_after_normalising():
    reference = "the farmer repaired the long letter in the evening"
    heard = "The farmer repaired the long ladder, in the the evening. Yes"  # 1 substitution, 2 insertions
    got = wer_breakdown(reference, heard)
    assert (got["substitutions"], got["deletions"], got["insertions"], got["reference_words"]) == (1, 0, 2, 9)
    assert got["top_substitutions"] == [["letter", "ladder", 1]]
    assert wer(reference, heard) == pytest.approx(3 / 9)
    assert wer("our neighbour opened it", "Our neighbor opened it.") == 0.0  # one spelling (Whisper's normaliser)
    dropped = wer_breakdown(reference, "the farmer repaired the long letter")
    assert (dropped["deletions"], dropped["insertions"], dropped["substitutions"]) == (3, 0, 0)


def test_each_voice_is_charged_its_own_errors():
    said = ["the farmer repaired the long letter", "my sister found a warm coat", "the doctor opened the gate"]
    by = ["espeak", "piper", "espeak"]
    heard = "The farmer repaired the long ladder. My sister found a warm coat. The doctor opened the the gate"
    got = wer_by_voice(said, by, heard)
    assert got == {"espeak": pytest.approx(2 / 11), "piper": 0.0}  # ladder (substituted), the (inserted)
    assert wer_by_voice(said, by, "") == {"espeak": 1.0, "piper": 1.0}


def test_espeak_speaks_offline():
    audio, sr = synthesize("the old man painted the red door")
    assert sr == 22_050 and audio.dtype == np.int16
    assert 1.0 < len(audio) / sr < 4.0 and np.abs(audio).max() > 1000


def test_a_latency_over_its_baseline_is_none_where_either_is_missing_or_the_base_is_zero():
    this = {"a": 150.0, "b": 10.0, "c": None, "d": 5.0}
    base = {"a": 300.0, "b": 0.0, "c": 4.0}
    assert ratios(this, base, ("a", "b", "c", "d")) == {"a": 0.5, "b": None, "c": None, "d": None}


def test_a_bad_baseline_is_refused_naming_the_key_before_anything_is_loaded(tmp_path, capsys):
    import argparse

    from rtchat.evals.bench_asr import configure, run

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--json", str(tmp_path / "out.json"), "--quick", "--baseline", "asr.silence_hop_ms=900"])
    assert run(args) == 2
    out = capsys.readouterr().out
    assert "--baseline" in out and "asr.silence_hop_ms" in out and "allowed" in out
    assert not (tmp_path / "out.json").exists()
