"""The ASR node's pure parts: frame assembly and resampling, the LocalAgreement-2 streaming
policy (driven by scripted fake transcribers on simulated audio), and self-echo suppression."""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from rtchat.bus.events import Word
from rtchat.nodes.asr.echo import EchoConfig, EchoFilter
from rtchat.nodes.asr.frames import SR_HZ, FrameAssembler, Resampler, decode, resample, samples_to_ns
from rtchat.nodes.asr.policy import Committed, Partial, PolicyConfig, StreamingPolicy, cut_loops

S = 1_000_000_000  # ns per second
SPEECH = 0.1  # amplitude of simulated speech (−20 dBFS), well above the silence gate


def sine(freq_hz: float, sr_hz: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq_hz * np.arange(round(sr_hz * seconds)) / sr_hz)).astype(np.float32)


def int16_bytes(x: np.ndarray) -> bytes:
    return np.round(x * 32767).astype(np.int16).tobytes()


def peak_hz(x: np.ndarray, sr_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr_hz)[spectrum.argmax()])


def words_of(outputs, kind=Committed) -> list[Word]:
    return [w for o in outputs if isinstance(o, kind) for w in o.words]


# ---------------------------------------------------------------- fakes


class SequenceAsr:
    """Returns the scripted hypotheses in order, whatever the audio."""

    def __init__(self, hypotheses):
        self.hypotheses = list(hypotheses)
        self.prompts: list[str] = []

    def __call__(self, audio, prompt):
        self.prompts.append(prompt)
        return self.hypotheses.pop(0)


class TimelineAsr:
    """Hears the words of a spoken timeline (text, start_s, end_s; absolute) that lie wholly in
    the buffer, with times relative to the buffer start. A word ending within ``unstable_s``
    of the buffer end is misheard differently at every call (an unstable tail)."""

    def __init__(self, policy: StreamingPolicy, timeline, unstable_s: float = 0.3):
        self.policy, self.timeline, self.unstable_s = policy, timeline, unstable_s
        self.starts = [s for _, s, _ in timeline]
        self.calls: list[tuple[int, int, str]] = []  # (buffer start, length, prompt)

    def __call__(self, audio, prompt):
        self.calls.append((self.policy.start, len(audio), prompt))
        t0 = self.policy.start / SR_HZ
        t1 = t0 + len(audio) / SR_HZ
        out = []
        for text, s, e in self.timeline[bisect.bisect_left(self.starts, t0 - 1e-6) :]:
            if e > t1:
                break
            if e > t1 - self.unstable_s:
                text = f"{text}{len(self.calls)}"
            out.append((text, s - t0, e - t0, 0.9))
        return out


def speech_timeline(seconds: float, word_s: float = 0.3, gap_s: float = 0.1, pause_every: int = 0):
    """word0, word1, … back to back; with pause_every=n a 1 s pause follows every n words."""
    timeline, t, i = [], 0.2, 0
    while t + word_s < seconds:
        timeline.append((f"word{i}", round(t, 6), round(t + word_s, 6)))
        t += word_s + gap_s
        i += 1
        if pause_every and i % pause_every == 0:
            t += 1.0
    return timeline


def speech_audio(timeline, start: int, n: int) -> np.ndarray:
    """Simulated audio: SPEECH amplitude inside words, zeros between them."""
    t = (start + np.arange(n)) / SR_HZ
    starts = np.array([s for _, s, _ in timeline])
    ends = np.array([e for _, _, e in timeline])
    k = np.searchsorted(starts, t, side="right") - 1
    inside = (k >= 0) & (t < ends[np.maximum(k, 0)])
    return np.where(inside, SPEECH, 0.0).astype(np.float32)


def run_stream(policy, asr, timeline, seconds: float, frame_s: float = 0.1):
    """Feed simulated audio frame by frame, stepping the policy after every frame."""
    out, sizes = [], []
    n = round(frame_s * SR_HZ)
    for start in range(0, round(seconds * SR_HZ), n):
        policy.add(speech_audio(timeline, start, n))
        out += policy.step(asr)
        sizes.append(policy.end - policy.start)
    return out, sizes


# ---------------------------------------------------------------- resampling and frames


@pytest.mark.parametrize("sr_hz", [8_000, 22_050, 44_100, 48_000])
def test_resampled_1khz_sine_has_16k_length_frequency_and_amplitude(sr_hz):
    y = resample(sine(1000, sr_hz), sr_hz)
    assert len(y) == SR_HZ
    assert peak_hz(y, SR_HZ) == pytest.approx(1000, abs=1)
    assert np.sqrt(2) * y[1000:-1000].std() == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("sr_hz", [22_050, 48_000])
def test_streaming_resampler_in_20ms_frames_equals_one_shot(sr_hz):
    x = sine(440, sr_hz) + sine(3000, sr_hz, amp=0.2)
    r, n = Resampler(sr_hz), sr_hz // 50
    streamed = np.concatenate([r.push(x[i : i + n]) for i in range(0, len(x), n)] + [r.flush()])
    np.testing.assert_allclose(streamed, resample(x, sr_hz), atol=1e-6)


def test_resampling_down_removes_tones_above_the_new_nyquist():
    y = resample(sine(10_000, 48_000), 48_000)  # would alias to 6 kHz
    assert y[1000:-1000].std() < 0.005


def test_assembler_positions_are_16k_sample_indices():
    asm, frame = FrameAssembler(), sine(1000, 48_000, 0.02)
    chunks = [c for i in range(50) for c in asm.push(int16_bytes(frame), 48_000, 960, 96_000 + i * 960)]
    assert chunks[0].start == 32_000
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    assert chunks[-1].end == asm.end
    assert 0 <= 32_000 + 16_000 - asm.end <= 640  # the filter holds back at most 40 ms until more audio comes


def test_stereo_is_mixed_down_and_float32_accepted():
    left, right = sine(1000, 16_000, 0.02), sine(1000, 16_000, 0.02, amp=0.25)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    np.testing.assert_allclose(decode(int16_bytes(stereo), channels=2), (left + right) / 2, atol=1e-4)
    opposite = np.stack([left, -left], axis=1).reshape(-1)
    assert np.abs(decode(opposite.astype(np.float32).tobytes(), 2, "float32")).max() == 0
    asm = FrameAssembler()
    (chunk,) = asm.push(left.tobytes(), 16_000, 320, 0, sample_format="float32")
    np.testing.assert_array_equal(chunk.audio, left)
    with pytest.raises(ValueError, match="whole number"):
        decode(b"\x00\x01\x02", channels=1)
    with pytest.raises(ValueError, match="allowed"):
        asm.push(b"", 12_345, 0, 0)


def test_nonfinite_samples_become_zero_and_clipping_is_counted():
    asm = FrameAssembler()
    x = np.array([0.1, np.nan, np.inf, -np.inf, 1.5, -2.0, 0.2, 0.3], dtype=np.float32)
    (chunk,) = asm.push(x.tobytes(), 16_000, 8, 0, sample_format="float32")
    np.testing.assert_array_equal(chunk.audio, np.array([0.1, 0, 0, 0, 1, -1, 0.2, 0.3], dtype=np.float32))
    assert asm.stats.nonfinite_samples == 3
    assert asm.stats.clipped_samples == 2
    asm.push(np.array([32767, -32768, 0, 5], dtype=np.int16).tobytes(), 16_000, 4, 8)
    assert asm.stats.clipped_samples == 4


def test_gaps_are_filled_with_silence_up_to_the_cap_then_the_stream_resyncs():
    asm, frame = FrameAssembler(max_gap_s=2.0), np.full(320, 1000, dtype=np.int16).tobytes()
    first = asm.push(frame, 16_000, 320, 0)
    filled = asm.push(frame, 16_000, 320, 320 * 4)  # frames 1–3 missing
    assert filled[0].start == first[0].end == 320
    assert len(filled[0].audio) == 4 * 320 and not filled[0].audio[: 3 * 320].any()
    assert (asm.stats.gaps, asm.stats.gap_samples) == (1, 960)
    jumped = asm.push(frame, 16_000, 320, 320 * 5 + 3 * 16_000)  # a 3 s gap
    assert jumped[0].start == 320 * 5 + 3 * 16_000
    assert asm.stats.resyncs == 1 and asm.stats.gaps == 1


def test_late_duplicate_and_overlapping_frames():
    asm = FrameAssembler()
    frames = [np.full(320, 100 * (i + 1), dtype=np.int16).tobytes() for i in range(4)]
    asm.push(frames[0], 16_000, 320, 0)
    asm.push(frames[2], 16_000, 320, 640)  # frame 1 overtaken: its slot is filled with silence
    assert asm.push(frames[2], 16_000, 320, 640) == []  # duplicate
    assert asm.push(frames[1], 16_000, 320, 320) == []  # late
    (tail,) = asm.push(frames[3], 16_000, 320, 800)  # overlaps the last 160 samples
    assert (tail.start, len(tail.audio)) == (960, 160)
    s = asm.stats
    assert (s.duplicate_frames, s.late_frames, s.overlap_samples, s.frames) == (1, 1, 160, 5)


# ---------------------------------------------------------------- streaming policy


def test_local_agreement_commits_only_agreed_prefixes_and_flush_commits_the_rest():
    policy = StreamingPolicy(PolicyConfig(trim_after_s=15.0))  # no cut: times stay buffer-relative
    the, cat = ("the", 0.0, 0.2, 0.9), ("cat", 0.2, 0.5, 0.9)
    asr = SequenceAsr(
        [
            [the, cat],
            [the, cat, ("sat", 0.5, 0.8, 0.9)],
            [the, cat, ("sad", 0.5, 0.8, 0.9), ("on", 0.8, 1.0, 0.9)],
            [("The", 0.0, 0.2, 0.9), cat, ("Sad.", 0.5, 0.8, 0.9), ("on", 0.8, 1.0, 0.9), ("the", 1.0, 1.2, 0.9)],
        ]
    )
    texts = []
    for _ in range(4):
        policy.add(np.full(8000, SPEECH, dtype=np.float32))
        texts.append([(type(o).__name__, o.text) for o in policy.step(asr)])
    assert texts == [
        [("Partial", "the cat")],
        [("Committed", "the cat"), ("Partial", "sat")],
        [("Partial", "sad on")],
        [("Committed", "Sad. on"), ("Partial", "the")],
    ]
    assert asr.prompts == ["", "", "", ""]  # committed words still in the buffer are heard, not prompted
    (final,) = policy.flush()
    assert (final.text, final.utterance) == ("the", 0)
    assert final.words[0] == Word(text="the", start_ns=1 * S, end_ns=round(1.2 * S), prob=0.9)
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    (partial,) = policy.step(SequenceAsr([[("next", 0.0, 0.3, 0.9)]]))
    assert (partial.rev, partial.utterance) == (1, 1)


def test_only_committed_words_cut_out_of_the_buffer_are_prompted():
    policy = StreamingPolicy(PolicyConfig(trim_after_s=0.0))  # cut at every commit
    the, cat = ("the", 0.0, 0.2, 0.9), ("cat", 0.2, 0.5, 0.9)
    asr = SequenceAsr([[the, cat], [the, cat, ("sat", 0.5, 0.8, 0.9)], [("sat", 0.0, 0.3, 0.9)]])
    for _ in range(3):
        policy.add(np.full(8000, SPEECH, dtype=np.float32))
        policy.step(asr)
    assert policy.start == round(0.8 * 16_000)  # cut after "cat", then after "sat"
    assert asr.prompts == ["", "", "the cat"]


def test_partial_revisions_increase_within_an_utterance():
    policy = StreamingPolicy()
    asr = SequenceAsr([[("a", 0.0, 0.2, 0.9)], [("b", 0.0, 0.2, 0.9)], [("c", 0.0, 0.2, 0.9)]])
    revs = []
    for _ in range(3):
        policy.add(np.full(8000, SPEECH, dtype=np.float32))
        revs += [o.rev for o in policy.step(asr) if isinstance(o, Partial)]
    assert revs == [1, 2, 3]


def test_flush_hears_new_audio_and_retracts_an_emptied_partial():
    policy = StreamingPolicy()
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    policy.step(SequenceAsr([[("uh", 0.0, 0.2, 0.3)]]))
    policy.add(np.full(4000, SPEECH, dtype=np.float32))  # less than a hop: no step
    assert policy.step(SequenceAsr([])) == []
    (retraction,) = policy.flush(SequenceAsr([[]]))
    assert isinstance(retraction, Partial) and retraction.words == ()
    assert policy.end - policy.start == 0 and policy.utterance == 1


def test_flush_does_not_hear_the_silence_after_a_speech_end_already_heard():
    """tiny.en says "Thank you." to the trailing silence alone: once a hypothesis has heard past
    the VAD's speech end, the flush commits what it has and transcribes nothing more."""
    policy = StreamingPolicy(PolicyConfig(hop_s=0.5))
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    policy.step(SequenceAsr([[("bye", 0.1, 0.3, 0.9)]]))  # heard up to 0.5 s
    policy.add(np.zeros(4000, dtype=np.float32))  # the silence before the VAD decides
    asr = SequenceAsr([[("bye", 0.1, 0.3, 0.9), ("Thank", 0.4, 0.6, 0.01), ("you.", 0.6, 0.7, 0.9)]])
    (final,) = policy.flush(asr, speech_until=round(0.4 * SR_HZ))
    assert final.text == "bye" and asr.prompts == []  # no call
    policy.add(np.full(8000, SPEECH, dtype=np.float32))  # speech the last hypothesis had not heard
    policy.step(SequenceAsr([[("so", 0.0, 0.2, 0.9)]]))
    policy.add(np.full(4000, SPEECH, dtype=np.float32))
    asr = SequenceAsr([[("so", 0.0, 0.2, 0.9), ("long", 0.3, 0.7, 0.9)]])
    (final,) = policy.flush(asr, speech_until=round(1.2 * SR_HZ))
    assert final.text == "so long" and len(asr.prompts) == 1


def test_words_whisper_could_not_place_in_the_audio_are_not_committed():
    """Words squeezed to no span at the end of the audio heard (a decoder running on past the
    audio: a repeat of the prompt, the sentence again) wait as partial until a hypothesis places
    them, and a flush drops them."""
    policy = StreamingPolicy(PolicyConfig(hop_s=0.5, trim_after_s=15.0))
    hi, lo = ("hi", 0.1, 0.3, 0.9), ("there", 0.3, 0.45, 0.9)

    def again(end_s):  # "hi there" again, with no span: at the end of the audio heard
        return [("hi", end_s, end_s, 0.9), ("there", end_s, end_s, 0.9)]

    asr = SequenceAsr([[hi, lo, *again(0.5)], [hi, lo, *again(1.0)]])
    outputs = []
    for _ in range(2):
        policy.add(np.full(8000, SPEECH, dtype=np.float32))
        outputs += policy.step(asr)
    assert [o.text for o in outputs if isinstance(o, Committed)] == ["hi there"]  # not "hi there hi there"
    assert [o.text for o in outputs if isinstance(o, Partial)][-1] == "hi there"  # shown, not committed
    # at the flush a group sharing one start is dropped too, its last word's span notwithstanding
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    tail = [("you", 1.2, 1.2, 0.9), ("again.", 1.2, 1.4, 0.9)]
    (final,) = policy.flush(SequenceAsr([[hi, lo, ("you", 0.6, 0.9, 0.9), *tail]]))
    assert final.text == "you"


def test_a_call_that_found_no_word_is_retried_after_the_first_word_hop():
    policy = StreamingPolicy(PolicyConfig(hop_s=0.4, first_word_hop_s=0.2, trim_after_s=15.0))
    hey = ("hey", 0.3, 0.5, 0.9)
    hypotheses, heard_s = [[], [], [hey], [hey], [hey]], []

    def asr(audio, prompt):
        heard_s.append(round(len(audio) / SR_HZ, 2))
        return hypotheses.pop(0)

    for _ in range(85):  # 1.7 s in 20 ms frames
        policy.add(np.full(320, SPEECH, dtype=np.float32))
        policy.step(asr)
    assert heard_s == [0.4, 0.6, 0.8, 1.2, 1.6]  # wordless at 0.4 and 0.6 s, a word at 0.8, then every 0.4 s
    assert policy.calls_without_word == -1
    policy.flush()
    assert policy.calls_without_word == 0 and policy.hop_now == policy.hop


def test_ten_minutes_of_speech_keep_the_buffer_bounded_and_word_times_absolute():
    policy = StreamingPolicy()
    timeline = speech_timeline(600.0)
    asr = TimelineAsr(policy, timeline)
    out, sizes = run_stream(policy, asr, timeline, 600.0)
    out += policy.flush(asr)
    committed = words_of(out)
    expected = [(t, round(s * S), round(e * S)) for t, s, e in timeline]
    assert [(w.text, w.start_ns, w.end_ns) for w in committed] == expected
    assert max(n for _, n, _ in asr.calls) <= 2 * SR_HZ  # commits trim: ~1 s heard per call
    assert max(sizes) <= 2 * SR_HZ
    assert all(len(p.split()) <= 50 for _, _, p in asr.calls)
    assert policy.stats["forced_trims"] == 0 and len(committed) > 1000


def test_unagreeing_hypotheses_are_force_trimmed_at_the_maximum():
    policy = StreamingPolicy(PolicyConfig(max_buffer_s=5.0))
    timeline = speech_timeline(600.0)
    asr = TimelineAsr(policy, timeline, unstable_s=1e9)  # every word changes at every call
    out, sizes = run_stream(policy, asr, timeline, 600.0)
    max_len = 5 * SR_HZ
    assert max(n for _, n, _ in asr.calls) <= max_len
    assert max(sizes) <= max_len + SR_HZ // 2  # between steps, at most one hop more
    committed = words_of(out)
    assert policy.stats["forced_trims"] > 100 and len(committed) > 1000
    starts = [w.start_ns for w in committed]
    assert all(a.end_ns <= b.start_ns for a, b in zip(committed, committed[1:], strict=False))
    assert starts[-1] > 590 * S  # absolute audio time, not buffer time


def test_word_times_are_absolute_across_trims_and_utterances():
    policy = StreamingPolicy()
    timeline = speech_timeline(30.0, pause_every=5)
    asr = TimelineAsr(policy, timeline)
    n = SR_HZ // 10
    out = []
    for start in range(0, 30 * SR_HZ, n):
        policy.add(speech_audio(timeline, start, n))
        out += policy.step(asr)
        t = (start + n) / SR_HZ
        if any(0.5 <= t - e < 0.6 for _, _, e in timeline):  # a VAD closing 0.5 s after a word
            if not any(s < t + 0.05 and e > t - 0.5 for _, s, e in timeline):
                out += policy.flush(asr)
    committed = words_of(out)
    assert [(w.text, w.start_ns) for w in committed] == [(t, round(s * S)) for t, s, _ in timeline]
    assert len({o.utterance for o in out if isinstance(o, Committed)}) > 5


def test_repetition_loops_are_cut_back_to_one_occurrence():
    def w(text):
        return Word(text=text, start_ns=0, end_ns=0)

    loop = [w(t) for t in "so I think I think I think I think that the the the cat".split()]
    kept, loops = cut_loops(loop, max_repeats=3)
    assert " ".join(x.text for x in kept) == "so I think that the cat"
    assert loops == 2
    kept, loops = cut_loops([w(t) for t in "no no way".split()], max_repeats=3)
    assert loops == 0 and len(kept) == 3

    policy = StreamingPolicy()
    looping = [("Thank", 0.0, 0.1, 0.5), ("you.", 0.1, 0.2, 0.5)] * 6
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    (partial,) = policy.step(SequenceAsr([looping]))
    assert partial.text == "Thank you." and policy.stats["loops_cut"] == 1


def test_silence_is_not_transcribed_and_produces_no_words():
    policy = StreamingPolicy()
    calls = []

    def hallucinating(audio, prompt):
        calls.append(len(audio))
        return [("Thank", 0.0, 0.2, 0.9), ("you.", 0.2, 0.4, 0.9)]

    rng = np.random.default_rng(0)
    out = []
    for _ in range(100):  # 10 s of noise at about −70 dBFS
        policy.add((rng.standard_normal(1600) * 3e-4).astype(np.float32))
        out += policy.step(hallucinating)
    out += policy.flush(hallucinating)
    assert out == [] and calls == []
    assert policy.stats["silent_skips"] == 20  # one per hop; flush had nothing new to hear
    assert policy.end - policy.start == 0


def test_hypothesis_words_over_committed_audio_are_not_committed_twice():
    policy = StreamingPolicy(PolicyConfig(trim_after_s=15.0))
    hello, there = ("hello", 0.0, 0.4, 0.9), ("there", 0.4, 0.8, 0.9)
    asr = SequenceAsr([[hello], [hello, there], [hello, there], [hello, there]])
    out = []
    for _ in range(4):
        policy.add(np.full(8000, SPEECH, dtype=np.float32))
        out += policy.step(asr)
    assert [w.text for w in words_of(out)] == ["hello", "there"]


def test_restart_at_a_resync_flushes_and_moves_the_timeline():
    policy = StreamingPolicy()
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    policy.step(SequenceAsr([[("before", 0.1, 0.4, 0.9)]]))
    (final,) = policy.restart_at(100 * SR_HZ)
    assert final.text == "before" and (policy.start, policy.end) == (100 * SR_HZ, 100 * SR_HZ)
    policy.add(np.full(8000, SPEECH, dtype=np.float32))
    (partial,) = policy.step(SequenceAsr([[("after", 0.1, 0.4, 0.9)]]))
    assert (partial.words[0].start_ns, partial.utterance) == (round(100.1 * S), 1)


# ---------------------------------------------------------------- echo suppression


def word(text, start_s, end_s):
    return Word(text=text, start_ns=round(start_s * S), end_ns=round(end_s * S))


def test_echo_drops_played_words_inside_playback_only():
    echo = EchoFilter(EchoConfig(margin_s=0.5))
    echo.played(10 * S, 12 * S, "Sure, I can help (0.4) with that.")
    words = [
        word("sure", 10.1, 10.4),  # the agent's word, during its playback: echo
        word("Help!", 11.0, 11.3),  # normalised match: echo
        word("banana", 11.3, 11.6),  # not the agent's: kept
        word("that", 12.3, 12.5),  # within the margin: echo
        word("help", 20.0, 20.3),  # the agent's word, long after: kept
    ]
    kept, dropped = echo.filter(words)
    assert [w.text for w in kept] == ["banana", "help"]
    assert [w.text for w in dropped] == ["sure", "Help!", "that"]
    assert echo.dropped == 3


def test_echo_mode_none_keeps_everything_and_bad_modes_are_refused():
    echo = EchoFilter(EchoConfig(mode="none"))
    echo.played(0, 2 * S, "hello there")
    words = [word("hello", 0.1, 0.5), word("there", 0.5, 0.9)]
    assert echo.filter(words) == (tuple(words), ())
    with pytest.raises(ValueError, match="allowed none, played_words"):
        EchoConfig(mode="aec")


def test_echo_forgets_playback_beyond_the_horizon():
    echo = EchoFilter(EchoConfig(horizon_s=30.0))
    echo.played(0, 1 * S, "hello")
    echo.played(60 * S, 61 * S, "bye")
    assert len(echo.spans) == 1
    assert not echo.is_echo(word("hello", 0.2, 0.5)) and echo.is_echo(word("bye", 60.2, 60.5))


def test_samples_to_ns_is_exact():
    assert samples_to_ns(16_000) == S and samples_to_ns(1) == 62_500
