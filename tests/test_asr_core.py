"""The ASR core on virtual time (nodes/asr/core.py, vad.py): AudioIn frames in, vad/asr events out.

The transcriber is a script of words at absolute audio times: asked about a buffer, it returns
the words fully inside it, relative to the buffer's start (which it reads from the core's policy,
as a real Whisper would "read" it from the audio). The VAD model is an energy detector. Audio is a
tone during the spoken span and silence elsewhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rtchat.bus.core import serve
from rtchat.bus.events import AsrFinal, AsrPartial, AudioIn, AudioPlayed, Reset, VadEnd, VadPause, VadResume, VadStart
from rtchat.configs.schema import AsrConfig
from rtchat.nodes.asr.core import AsrCore
from rtchat.nodes.asr.frames import Chunk
from rtchat.nodes.asr.vad import WINDOW, StreamingVad, VadConfig

MS = 1_000_000
T0 = 1_700_000_000_000_000_000  # capture clock at stream position 0
SCRIPT = [("Hello", 0.55, 0.9), ("there,", 0.95, 1.3), ("how", 1.4, 1.6), ("are", 1.65, 1.85), ("you?", 1.9, 2.4)]
SPEECH = (0.5, 2.5)  # seconds of tone
# the schedule the scripted timings were written for: a call every 0.5 s from the first
SCRIPTED = dataclasses.replace(AsrConfig(), hop_s=0.5, first_word_hop_s=0.0)


class ScriptedWhisper:
    """Returns the script's words that lie wholly inside the buffer, times relative to its start."""

    def __init__(self, script=SCRIPT):
        self.script = script
        self.core: AsrCore | None = None
        self.calls: list[tuple[float, float, str]] = []  # (buffer start s, buffer end s, prompt)

    def __call__(self, audio, prompt):
        t0 = self.core.policy.start / 16_000
        t1 = t0 + len(audio) / 16_000
        self.calls.append((t0, t1, prompt))
        return [(w, s - t0, e - t0, 0.9) for w, s, e in self.script if s >= t0 - 0.05 and e <= t1]


class EnergyVad:
    """P(speech) = 0.9 for a window with rms above 0.01, else 0.05."""

    def __init__(self):
        self.resets = 0

    def __call__(self, window):
        return 0.9 if float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) > 0.01 else 0.05

    def reset(self):
        self.resets += 1


def make_core(**overrides) -> tuple[AsrCore, ScriptedWhisper]:
    whisper = ScriptedWhisper()
    core = AsrCore(dataclasses.replace(SCRIPTED, **overrides), whisper, EnergyVad())
    whisper.core = core
    return core, whisper


def speech(sr_hz: int, total_s: float = 4.0, span=SPEECH, channels: int = 1) -> np.ndarray:
    t = np.arange(int(total_s * sr_hz)) / sr_hz
    x = np.where((t >= span[0]) & (t < span[1]), 0.3 * np.sin(2 * np.pi * 220 * t), 0.0)
    x = (x * 32767).astype(np.int16)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def frames(pcm: np.ndarray, sr_hz: int, frame_ms: int = 20, start: int = 0):
    n = sr_hz * frame_ms // 1000
    for pos in range(0, len(pcm) - n + 1, n):
        yield AudioIn(
            pcm=pcm[pos : pos + n].tobytes(), sr_hz=sr_hz, n_samples=n, stream_pos=start + pos,
            t_capture_ns=T0 + (start + pos) * 1_000_000_000 // sr_hz,
        )


def run(core: AsrCore, events) -> list:
    out = []
    for ev in events:
        now = ev.t_capture_ns if isinstance(ev, AudioIn) else T0
        out += serve(core, ev, now)
    return out


def finals_text(out) -> str:
    return " ".join(e.text for e in out if isinstance(e, AsrFinal))


# ---------------------------------------------------------------- the core


def test_speech_gives_vad_start_rising_partials_finals_with_absolute_times_then_vad_end():
    core, whisper = make_core()
    out = run(core, frames(speech(16_000), 16_000))
    kinds = [type(e) for e in out]
    assert kinds[0] is VadStart and kinds[-1] is AsrFinal  # the speech end's flush comes after vad.end
    assert kinds.count(VadStart) == kinds.count(VadEnd) == 1
    start, end = out[0], next(e for e in out if isinstance(e, VadEnd))
    assert 0.5 - 0.03 - 0.033 <= start.audio_ns / 1e9 <= 0.5  # padded, at most one window late
    assert start.audio_ns == start.stream_pos * 62_500
    assert 2.5 <= end.audio_ns / 1e9 <= 2.5 + 0.03 + 0.033
    partials = [e for e in out if isinstance(e, AsrPartial)]
    assert partials and [p.rev for p in partials] == sorted(set(p.rev for p in partials))
    assert finals_text(out) == "Hello there, how are you?"
    words = [w for e in out if isinstance(e, AsrFinal) for w in e.words]
    for w, (text, s, e) in zip(words, SCRIPT, strict=True):
        assert w.text == text
        assert abs(w.start_ns - s * 1e9) < 1000 and abs(w.end_ns - e * 1e9) < 1000
    assert all(e.utterance == 0 for e in out if isinstance(e, AsrFinal | AsrPartial))
    # only speech is heard, with asr.preroll_s of audio before the VAD's start
    assert whisper.calls and all(abs(t0 - (start.audio_ns / 1e9 - 0.3)) < 1e-3 and t1 <= 3.2 for t0, t1, _ in whisper.calls)
    assert core.stats()["vad_starts"] == core.stats()["vad_ends"] == 1


def test_the_speech_end_goes_out_before_the_recogniser_call_that_flushes_the_utterance():
    """vad.end is returned by the very call in which the VAD decides it, with no recogniser call
    in that call; the core is then due at once, and its tick flushes: the last words as a final."""
    core, whisper = make_core()
    out = []
    for ev in frames(speech(16_000), 16_000):
        calls = len(whisper.calls)
        got = core.on_event(ev, ev.t_capture_ns)
        if any(isinstance(e, VadEnd) for e in got):
            assert got == [e for e in got if isinstance(e, VadEnd)] and len(whisper.calls) == calls
            assert core.deadline_ns() is not None and core.deadline_ns() <= ev.t_capture_ns
            flushed = core.on_tick(ev.t_capture_ns)
            assert len(whisper.calls) == calls + 1 and [type(e) for e in flushed] == [AsrFinal]
            assert core.deadline_ns() is None
            got += flushed
        out += got
    assert [type(e) for e in out].count(VadEnd) == 1
    assert finals_text(out) == "Hello there, how are you?"


def serve_ticks(core: AsrCore, whisper: ScriptedWhisper, pcm: np.ndarray) -> list[tuple[list, int]]:
    """Each frame served as the node's loop serves it (ticks while due): (its events, its calls)."""
    out = []
    for ev in frames(pcm, 16_000):
        calls = len(whisper.calls)
        out.append((serve(core, ev, ev.t_capture_ns), len(whisper.calls) - calls))
    return out


def test_a_pause_is_heard_at_once_so_the_final_comes_with_vad_end_and_no_call_after_it():
    """asr.silence_hop_ms: 64 ms of silence inside speech is a pause; the recogniser hears the
    utterance up to there at once (not at the next hop). The speech ends in that silence, so the
    flush at vad.end has heard everything: the final goes out with vad.end, in the same frame,
    without a recogniser call — the words are the same as with the flush's own call."""
    script = [*SCRIPT[:4], ("today?", 2.0, 2.68)]  # the last word is whole in no hop's audio (0.65 + k/2 s)
    pcm = speech(16_000, span=(0.5, 2.7))

    def served(silence_hop_ms: int):
        whisper = ScriptedWhisper(script)
        whisper.core = AsrCore(dataclasses.replace(SCRIPTED, silence_hop_ms=silence_hop_ms, vad_min_silence_ms=200),
                               whisper, EnergyVad())
        frames_out = serve_ticks(whisper.core, whisper, pcm)
        (end,) = [i for i, (evs, _) in enumerate(frames_out) if any(isinstance(e, VadEnd) for e in evs)]
        return frames_out, end, whisper.calls

    on, end, calls = served(64)
    assert [type(e) for e in on[end][0]] == [VadEnd, AsrFinal] and on[end][1] == 0
    # the bus heard the pause first (vad.pause, the agent may take the turn in it), placed where vad.end places the end
    out = [e for evs, _ in on for e in evs]
    (pause_ev,) = [e for e in out if isinstance(e, VadPause)]
    vad_end = on[end][0][0]
    assert out.index(pause_ev) < out.index(vad_end) and pause_ev.audio_ns == vad_end.audio_ns
    assert pause_ev.at_ns == vad_end.at_ns and not any(isinstance(e, VadResume) for e in out)
    assert finals_text(e for evs, _ in on for e in evs) == "Hello there, how are today?"
    # the last call heard up to 64 ms (two VAD windows) after the first silent window, and
    # came ~130 ms before vad.end (200 ms of silence), where the pause was heard
    silent_from = -(-int(2.7 * 16_000) // WINDOW) * WINDOW
    assert calls[-1][1] == pytest.approx((silent_from + 2 * WINDOW) / 16_000)
    pause = max(i for i, (_, n) in enumerate(on) if n)
    assert (pause + 1) * 320 >= silent_from + 2 * WINDOW and (end - pause) * 20 >= 120

    off, off_end, _ = served(0)
    assert off_end == end and off[end][1] == 1  # off: the flush calls after vad.end, for the same words
    assert finals_text(off[end][0]) == finals_text(on[end][0]) == "today?"


def test_no_hop_call_begins_in_a_silence_before_it_is_a_pause():
    """A hop due in the first 64 ms of a silence waits for the pause: if the speech is ending, the
    pause's hypothesis is the call to make, and a hop's call begun there would hold the VAD (and
    so vad.pause and vad.end) behind it. Hops fall at 0.65 + k/2 s; this speech ends at 2.62 s,
    its first silent window at 2.624 s, the pause two windows later."""
    script = [*SCRIPT[:4], ("today?", 2.0, 2.6)]
    whisper = ScriptedWhisper(script)
    core = AsrCore(dataclasses.replace(SCRIPTED, silence_hop_ms=64, vad_min_silence_ms=200), whisper, EnergyVad())
    whisper.core = core
    out = [e for evs, _ in serve_ticks(core, whisper, speech(16_000, span=(0.5, 2.62))) for e in evs]
    silent_from = -(-int(2.62 * 16_000) // WINDOW) * WINDOW
    ends = [round(t1, 3) for _, t1, _ in whisper.calls]
    pause_call = pytest.approx((silent_from + 2 * WINDOW) / 16_000)
    assert [t for t in ends if t > silent_from / 16_000] == [pause_call]  # the pause's only
    assert 2.15 in ends and finals_text(out) == "Hello there, how are today?"  # the hops before went on as ever


def test_speech_that_resumes_after_a_pause_goes_on_as_one_utterance_with_every_word():
    """A 128 ms gap inside speech is a pause (one early hypothesis), not an end: one utterance,
    no vad.end before the speech really ends, every word committed once."""
    script = [("one", 0.55, 0.9), ("two", 0.95, 1.2), ("three", 1.4, 1.7), ("four", 1.75, 2.4)]
    pcm = speech(16_000) * 0
    for span in ((0.5, 1.25), (1.378, 2.5)):
        pcm += speech(16_000, span=span)
    whisper = ScriptedWhisper(script)
    core = AsrCore(dataclasses.replace(SCRIPTED, silence_hop_ms=64), whisper, EnergyVad())
    whisper.core = core
    out = [e for evs, _ in serve_ticks(core, whisper, pcm) for e in evs]
    assert [type(e) for e in out].count(VadStart) == [type(e) for e in out].count(VadEnd) == 1
    assert next(e for e in out if isinstance(e, VadEnd)).audio_ns / 1e9 >= 2.5
    # the gap: vad.pause (the silence's first 64 ms), then vad.resume where the speech goes on; the end's silence: vad.pause only
    vad = [(type(e).__name__, round(e.audio_ns / 1e9, 2)) for e in out if isinstance(e, VadStart | VadPause | VadResume | VadEnd)]
    assert [k for k, _ in vad] == ["VadStart", "VadPause", "VadResume", "VadPause", "VadEnd"]
    assert 1.25 <= vad[1][1] < 1.32 and 1.34 <= vad[2][1] <= 1.38 and vad[3][1] == vad[4][1]
    assert finals_text(out) == "one two three four"
    # a call heard up to 64 ms into the gap
    gap_from = -(-int(1.25 * 16_000) // WINDOW) * WINDOW
    assert (gap_from + 2 * WINDOW) / 16_000 in [pytest.approx(t1) for _, t1, _ in whisper.calls]


def test_a_new_utterance_flushes_the_last_one_first():
    """A speech start that comes before the pending flush ran (no tick between) flushes it first:
    the words of the first utterance are not lost and come before the second's vad.start."""
    core, whisper = make_core()
    pcm = np.concatenate([speech(16_000, 3.0), speech(16_000, 3.0)])
    out = []
    for ev in frames(pcm, 16_000):  # on_event only: the node's loop never ticks here
        out += core.on_event(ev, ev.t_capture_ns)
    kinds = [type(e) for e in out]
    second_start = [i for i, k in enumerate(kinds) if k is VadStart][1]
    assert [k for k in kinds[:second_start] if k in (VadEnd, AsrFinal)][-2:] == [VadEnd, AsrFinal]
    assert finals_text(out[:second_start]) == "Hello there, how are you?"


def test_committed_words_are_heard_again_not_prompted_while_in_the_buffer():
    core, whisper = make_core()
    run(core, frames(speech(16_000), 16_000))
    assert [p for _, _, p in whisper.calls] == [""] * len(whisper.calls)  # a 3 s utterance is never cut
    core, whisper = make_core(trim_after_s=0.0)  # cut at every commit: the cut words become the prompt
    run(core, frames(speech(16_000), 16_000))
    assert any(p.startswith("Hello there,") for _, _, p in whisper.calls)


def test_silence_is_never_transcribed_and_says_nothing():
    core, whisper = make_core()
    assert run(core, frames(np.zeros(3 * 16_000, dtype=np.int16), 16_000)) == []
    assert whisper.calls == []


def test_ten_minutes_of_silence_say_nothing_and_keep_memory_flat():
    core, whisper = make_core()
    out = run(core, frames(np.zeros(600 * 16_000, dtype=np.int16), 16_000))
    assert out == [] and whisper.calls == []
    assert len(core.ring.audio) <= 4 * core.ring.keep and len(core.policy.buf) == 0


def test_ten_minutes_of_continuous_speech_keep_every_call_bounded():
    script = [(f"w{k}", 0.5 + 0.4 * k, 0.8 + 0.4 * k) for k in range(1_450)]  # words until ~580 s
    core, whisper = make_core()
    whisper.script = script
    out = run(core, frames(speech(16_000, total_s=600.0, span=(0.5, 599.5)), 16_000))
    longest = max(t1 - t0 for t0, t1, _ in whisper.calls)
    assert longest <= core.cfg.max_buffer_s + 0.5  # cost per call does not grow with the utterance
    said = finals_text(out).split()
    assert len(said) > 1_300 and said == sorted(said, key=lambda w: int(w[1:]))  # in order, none twice
    assert [e for e in out if isinstance(e, VadStart)] and core.counts["bad_frames"] == 0


def test_a_node_behind_real_time_stretches_its_hop_and_returns_to_it_when_caught_up():
    core, _ = make_core(hop_s=0.5, first_word_hop_s=0.2, max_hop_s=2.0)
    audio = list(frames(np.zeros(16_000 * 10, dtype=np.int16), 16_000))  # 10 s, 500 frames of 20 ms
    for k, ev in enumerate(audio[:250]):  # handled 1.2x slower than real time: 1 s behind after 5 s
        core.on_event(ev, T0 + int(k * 24 * MS))
    assert core.lag_ns == pytest.approx(249 * 4 * MS, abs=MS)
    assert core.policy.hop == 16_000 * 0.5 + round(core.lag_ns / 62_500)  # hop_s + lag
    assert core.policy.first_word_hop == 16_000 * 0.2 + round(core.lag_ns / 62_500)  # and first_word_hop_s + lag
    for k, ev in enumerate(audio[250:400]):  # far behind: capped at max_hop_s
        core.on_event(ev, T0 + int(249 * 24 * MS) + int((k + 1) * 60 * MS))
    assert core.policy.hop == 32_000 and core.stats()["hop_ms"] == 2000
    for i, ev in enumerate(audio[400:], start=400):  # caught up: the clock in step with the audio again
        core.on_event(ev, T0 + i * 20 * MS)
    assert core.lag_ns == 0 and core.policy.hop == 8_000 and core.policy.first_word_hop == 3_200


def test_two_utterances_get_consecutive_numbers():
    core, whisper = make_core()
    pcm = np.concatenate([speech(16_000, 3.0), speech(16_000, 3.6)])
    whisper.script = SCRIPT + [(w, s + 3.0, e + 3.0) for w, s, e in SCRIPT]
    out = run(core, frames(pcm, 16_000))
    assert [type(e) for e in out if isinstance(e, VadStart | VadEnd)] == [VadStart, VadEnd, VadStart, VadEnd]
    assert {e.utterance for e in out if isinstance(e, AsrFinal)} == {0, 1}
    assert finals_text(out) == "Hello there, how are you? Hello there, how are you?"


@pytest.mark.parametrize("sr_hz, channels", [(8_000, 1), (44_100, 1), (48_000, 1), (48_000, 2), (44_100, 2)])
def test_other_rates_and_stereo_frames_give_the_same_words(sr_hz, channels):
    core, _ = make_core()
    out = run(core, frames(speech(sr_hz, channels=channels), sr_hz))
    assert finals_text(out) == "Hello there, how are you?"
    start = next(e for e in out if isinstance(e, VadStart))
    assert 0.5 - 0.07 <= start.audio_ns / 1e9 <= 0.5 + 0.01
    assert core.stats()["bad_frames"] == 0


@pytest.mark.parametrize("sr_hz, frame_ms", [(16_000, 30), (16_000, 10), (48_000, 20), (44_100, 20), (24_000, 20)])
def test_every_call_hears_the_same_audio_whatever_the_capture_rate_and_frame_size(sr_hz, frame_ms):
    """Where a hypothesis ends depends on stream positions only: a 48 kHz resampler that hands on
    16 kHz audio in ~490-sample blocks, or 30 ms frames, must not move the audio Whisper hears."""
    reference, heard = make_core(), make_core()
    run(reference[0], frames(speech(16_000), 16_000))
    out = run(heard[0], frames(speech(sr_hz), sr_hz, frame_ms=frame_ms))
    assert finals_text(out) == "Hello there, how are you?"
    assert len(reference[1].calls) >= 5
    assert heard[1].calls == reference[1].calls


class LeadingSilenceWhisper(ScriptedWhisper):
    """Like Whisper's alignment: the first word starts at the first frame of the audio it is given
    and the last word ends at its last frame, however much non-speech lies around them."""

    def __call__(self, audio, prompt):
        words = super().__call__(audio, prompt)
        if words:
            words[0] = (words[0][0], 0.0, *words[0][2:])
            words[-1] = (words[-1][0], words[-1][1], len(audio) / 16_000, words[-1][3])
        return words


def test_no_word_is_stamped_outside_the_vad_speech_span():
    whisper = LeadingSilenceWhisper(script=[("Hello", 0.55, 0.9), ("there.", 0.95, 1.3)])
    core = AsrCore(SCRIPTED, whisper, EnergyVad())
    whisper.core = core
    out = run(core, frames(speech(16_000, span=(0.5, 1.3)), 16_000))
    start, end = (e for e in out if isinstance(e, VadStart | VadEnd))
    assert whisper.calls[0][0] == pytest.approx(start.audio_ns / 1e9 - 0.3)  # it heard the preroll
    words = [w for e in out if isinstance(e, AsrFinal) for w in e.words]
    assert [w.text for w in words] == ["Hello", "there."]
    assert words[0].start_ns == start.audio_ns  # not in the preroll, where the model put it
    assert words[-1].end_ns == end.audio_ns  # not in the silence before the VAD decided
    assert next(e for e in out if isinstance(e, AsrFinal) and "there." in e.text).spoken_until_ns == end.at_ns


def test_bad_frames_are_counted_dropped_and_survived():
    core, _ = make_core()
    good = list(frames(speech(16_000), 16_000))
    bad = [
        dataclasses.replace(good[0], sr_hz=12_345),  # unsupported rate
        dataclasses.replace(good[0], n_samples=100),  # n_samples does not match the bytes
        dataclasses.replace(good[0], pcm=good[0].pcm + b"\x01"),  # not whole int16 samples
        dataclasses.replace(good[0], pcm=b"", n_samples=0),
        dataclasses.replace(good[0], pcm=b"\x00" * 2 * 320 * 9),  # 9 "channels"
    ]
    out = run(core, [good[0], *bad, *good[1:]])
    assert core.stats()["bad_frames"] == len(bad)
    assert finals_text(out) == "Hello there, how are you?"


def test_full_scale_noise_is_clipped_counted_and_survived():
    core, _ = make_core()
    rng = np.random.default_rng(0)
    noise = rng.integers(-32768, 32767, 16_000 * 2, dtype=np.int16, endpoint=True)
    out = run(core, frames(noise, 16_000))
    assert isinstance(out[0], VadStart)
    assert core.stats()["frames_clipped_samples"] > 0 and core.stats()["bad_frames"] == 0


def played(text: str, start_s: float, end_s: float) -> AudioPlayed:
    return AudioPlayed(
        turn=1, gen=0, chunk=0, text=text, start_ns=T0 + int(start_s * 1e9), end_ns=T0 + int(end_s * 1e9),
        stream_pos=0, n_samples=0, sr_hz=22_050,
    )


def test_words_the_agent_just_played_are_suppressed_as_echo():
    core, _ = make_core()
    evs = list(frames(speech(16_000), 16_000))
    out = run(core, [evs[0], played("how are", 1.3, 1.9), *evs[1:]])
    assert finals_text(out) == "Hello there, you?"
    assert core.stats()["echo_words_dropped"] == 2
    assert all("how" not in p.text for p in out if isinstance(p, AsrPartial))


def test_echo_none_keeps_every_word():
    core, _ = make_core(echo="none")
    evs = list(frames(speech(16_000), 16_000))
    out = run(core, [evs[0], played("how are", 1.3, 1.9), *evs[1:]])
    assert finals_text(out) == "Hello there, how are you?"


def test_played_words_far_from_the_user_words_are_kept():
    core, _ = make_core()
    evs = list(frames(speech(16_000), 16_000))
    out = run(core, [evs[0], played("how are", 3.5, 3.9), *evs[1:]])
    assert finals_text(out) == "Hello there, how are you?"


def test_reset_drops_the_open_utterance_and_the_prompt():
    core, whisper = make_core()
    evs = list(frames(speech(16_000), 16_000))
    half = int(1.8 * 50)  # two hypotheses agreed on "Hello"; "there," is still pending
    before = run(core, evs[:half])
    assert finals_text(before) == "Hello"
    n_calls = len(whisper.calls)
    assert core.on_event(Reset(reason="test"), T0) == []
    after = run(core, evs[half:])
    assert isinstance(after[0], VadStart)  # the tone goes on: speech starts again, a new utterance
    assert finals_text(after) == "you?"  # audio heard before the reset is not heard again
    assert {e.utterance for e in after if isinstance(e, AsrFinal)} == {1}
    assert all("Hello" not in p for _, _, p in whisper.calls[n_calls:])


def test_a_stream_resync_ends_the_utterance():
    core, _ = make_core(max_gap_s=0.5)
    evs = list(frames(speech(16_000), 16_000))
    cut = int(1.7 * 50)  # during "are"
    later = list(frames(speech(16_000, span=(0.0, 0.0)), 16_000, start=10 * 16_000))
    out = run(core, evs[:cut] + later[:25])
    assert [type(e) for e in out if isinstance(e, VadStart | VadEnd)] == [VadStart, VadEnd]
    assert finals_text(out).startswith("Hello there, how")
    assert core.stats()["frames_resyncs"] == 1


# ---------------------------------------------------------------- the VAD alone


class ScriptedProb:
    def __init__(self, probs):
        self.probs = list(probs)
        self.resets = 0

    def __call__(self, window):
        return self.probs.pop(0)

    def reset(self):
        self.resets += 1


def push_windows(vad: StreamingVad, n: int, start: int = 0):
    return vad.push(Chunk(start, np.zeros(n * WINDOW, dtype=np.float32)))


def test_vad_hysteresis_starts_at_the_start_threshold_and_ends_after_min_silence():
    cfg = VadConfig(start_threshold=0.5, end_threshold=0.3, min_silence_ms=96, speech_pad_ms=0)  # 3 windows
    probs = [0.1, 0.4, 0.6, 0.4, 0.2, 0.2, 0.35, 0.2, 0.2, 0.2, 0.1]
    vad = StreamingVad(ScriptedProb(probs), cfg)
    events = push_windows(vad, len(probs))
    assert [(e.kind, e.sample // WINDOW) for e in events] == [("start", 2), ("end", 7)]
    # 0.4 (between the thresholds) neither started speech nor ended it; 0.35 broke the silence run


def test_vad_pads_the_span_and_works_across_odd_chunk_sizes():
    cfg = VadConfig(min_silence_ms=64, speech_pad_ms=30)
    probs = [0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0]
    vad = StreamingVad(ScriptedProb(probs), cfg)
    events = []
    x = np.zeros(len(probs) * WINDOW, dtype=np.float32)
    for pos in range(0, len(x), 300):
        events += vad.push(Chunk(pos, x[pos : pos + 300]))
    assert [(e.kind, e.sample) for e in events] == [("start", 2 * WINDOW - 480), ("end", 4 * WINDOW + 480)]


def test_vad_resync_ends_open_speech_and_resets_the_model():
    model = ScriptedProb([0.9, 0.9, 0.1])
    vad = StreamingVad(model, VadConfig())
    assert [e.kind for e in push_windows(vad, 2)] == ["start"]
    events = push_windows(vad, 1, start=100_000)
    assert [(e.kind, e.sample) for e in events] == [("end", 2 * WINDOW)]
    assert model.resets == 1


def test_vad_reports_a_pause_once_per_silence_run_inside_speech_and_none_outside():
    cfg = VadConfig(start_threshold=0.5, end_threshold=0.3, min_silence_ms=160, speech_pad_ms=0, pause_ms=64)  # 5 / 2 windows
    probs = [0.1, 0.1, 0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    events = push_windows(StreamingVad(ScriptedProb(probs), cfg), len(probs))
    assert [(e.kind, e.sample // WINDOW, e.at // WINDOW) for e in events] == [
        ("start", 2, 3),  # the silence before speech is no pause
        ("pause", 5, 7),  # one window of silence (3) is none; three (5-7) are one pause, once
        ("resume", 8, 9),  # the speech goes on after the pause (none after window 3: no pause was reported)
        ("pause", 9, 11),
        ("end", 9, 14),
    ]
    no_pauses = dataclasses.replace(cfg, pause_ms=0)
    assert [e.kind for e in push_windows(StreamingVad(ScriptedProb(probs), no_pauses), len(probs))] == ["start", "end"]


def test_vad_config_is_validated():
    with pytest.raises(ValueError, match="end_threshold <= start_threshold"):
        VadConfig(start_threshold=0.3, end_threshold=0.5)
    with pytest.raises(ValueError, match="pause_ms < min_silence_ms"):
        VadConfig(min_silence_ms=200, pause_ms=200)


# ---------------------------------------------------------------- config


def test_the_cpu_profile_starts_the_asr_between_the_agent_and_the_audio_that_feeds_it():
    from rtchat.configs import load

    nodes = load("cpu").launcher.nodes
    assert {"asr", "audio", "agent", "tts"} <= set(nodes)
    assert load("cpu", ["launcher.nodes=[logger,asr,agent]"]).launcher.nodes == ("logger", "asr", "agent")


@pytest.mark.parametrize(
    "override, message",
    [
        ("asr.vad_end_threshold=0.9", "asr.vad_start_threshold"),
        ("asr.hop_s=20", "asr.hop_s"),
        ("asr.echo=loud", "asr.echo"),
        ("asr.compute_type=int4", "asr.compute_type"),
        ("asr.trim_after_s=99", "asr.trim_after_s"),
        ("asr.preroll_s=2", "asr.preroll_s"),
        ("asr.silence_hop_ms=200", "asr.silence_hop_ms"),  # the cpu profile's vad.end comes at 200 ms
    ],
)
def test_bad_asr_settings_are_refused_naming_the_key(override, message):
    from rtchat.configs import ConfigError, load

    with pytest.raises(ConfigError, match=message):
        load("cpu", [override])
