"""The agent's speech read back from ``session.wav`` (evals/stereo.py) and scored on the script's
times (``bench_session.measure_audio``), on synthetic stereo recordings: every time is known."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import soundfile as sf
from session_log import at, chunk, pcm, write

from rtchat.bus.events import AudioIn
from rtchat.evals import bench_session, stereo
from rtchat.evals.analyze import Span
from rtchat.evals.bench_session import (
    UNSEEN_USERS,
    USERS,
    measure_audio,
    script_lines,
    script_turns,
    summarize_audio,
)
from rtchat.evals.simulate_user import At, Pause, Say, parse, render
from rtchat.nodes.audio.wavio import WavError

SR = 16_000
FRAME_S = stereo.FRAME_MS / 1000


def noise(seconds: float, dbfs: float = -12.0, seed: int = 0) -> np.ndarray:
    """A burst of white noise at about ``dbfs`` RMS."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 32768 * 10 ** (dbfs / 20), round(seconds * SR)), -32768, 32767).astype(np.int16)


def track(seconds: float, bursts: list[tuple[float, float]]) -> np.ndarray:
    """Silence with noise bursts at [start_s, end_s)."""
    x = np.zeros(round(seconds * SR), np.int16)
    for k, (a, b) in enumerate(bursts):
        x[round(a * SR):round(b * SR)] = noise(b - a, seed=k)
    return x


def recording(user: np.ndarray, user_at: int, agent: np.ndarray) -> np.ndarray:
    """(n, 2) int16: the user's recording from index ``user_at`` on the left, ``agent`` on the right."""
    n = max(user_at + len(user), len(agent))
    x = np.zeros((n, 2), np.int16)
    x[user_at:user_at + len(user), 0] = user
    x[:len(agent), 1] = agent
    return x


def write_session(path, x: np.ndarray, sr: int = SR) -> None:
    sf.write(str(path), x, sr, subtype="PCM_16", format="WAV")


def test_agent_onsets_are_found_within_one_frame(tmp_path):
    bursts = [(1.013, 1.6), (2.507, 3.2), (5.0, 5.4)]
    write_session(tmp_path / "session.wav", recording(track(1.0, [(0.2, 0.6)]), 0, track(6.0, bursts)))
    spans = stereo.speech_spans(stereo.read_session(tmp_path / "session.wav")[:, 1])
    assert len(spans) == 3
    for s, (a, b) in zip(spans, bursts, strict=True):
        assert abs(s.start_ns / 1e9 - a) <= FRAME_S and abs(s.end_ns / 1e9 - b) <= FRAME_S


def test_spans_closer_than_the_merge_gap_are_one():
    spans = stereo.speech_spans(track(4.0, [(0.5, 1.0), (1.2, 1.5), (2.0, 2.5)]))  # 200 ms apart, then 500 ms
    assert [(s.start_ns / 1e9, s.end_ns / 1e9) for s in spans] == [(0.5, 1.5), (2.0, 2.5)]


def test_a_quiet_lead_in_is_not_the_onset():
    """TTS often starts with tens of ms far below its words: the onset is where the words are loud."""
    x = np.zeros(2 * SR, np.int16)
    x[round(1.0 * SR):round(1.5 * SR)] = noise(0.5, dbfs=-6.0)  # loud: frames 35 dB quieter or more are not speech
    x[round(0.94 * SR):round(1.0 * SR)] = noise(0.06, dbfs=-45.0)  # above the floor, 39 dB below the words
    (span,) = stereo.speech_spans(x)
    assert span.start_ns == 1_000_000_000


def test_silence_has_no_speech():
    assert stereo.speech_spans(np.zeros(3 * SR, np.int16)) == []
    assert stereo.speech_spans(noise(3.0, dbfs=-70.0)) == []  # below the floor: not speech however steady
    silent_left = recording(np.zeros(SR, np.int16), 0, track(2.0, [(0.5, 1.0)]))
    assert stereo.agent_spans(silent_left, track(1.0, [(0.2, 0.4)])) is None  # nothing to align by


@pytest.mark.parametrize("user_at", [0, 12_345, 3 * SR + 7])
def test_the_user_recording_is_found_on_the_left_to_the_sample(user_at):
    user = track(4.0, [(0.5, 1.2), (2.0, 2.6)])
    x = recording(user, user_at, np.zeros(0, np.int16))
    assert stereo.user_offset(x[:, 0], user) == user_at
    sounding_from_0 = noise(1.0, dbfs=-60.0)  # a recorded user whose noise starts at once
    assert stereo.user_offset(recording(sounding_from_0, user_at, np.zeros(0, np.int16))[:, 0], sounding_from_0) == user_at


def test_agent_spans_are_in_the_script_time_base():
    user = track(3.0, [(0.5, 1.0)])
    x = recording(user, SR, track(5.0, [(3.0, 3.5)]))  # user sample 0 at 1.0 s of the recording
    spans, offset = stereo.agent_spans(x, user)
    assert offset == SR and [(s.start_ns, s.end_ns) for s in spans] == [(2_000_000_000, 2_500_000_000)]


@pytest.mark.parametrize("channels, sr, held", [(1, SR, "1 channel(s) at 16000 Hz"), (2, 44_100, "2 channel(s) at 44100 Hz")])
def test_a_recording_not_stereo_at_16k_is_refused_saying_why(tmp_path, channels, sr, held):
    path = tmp_path / "bad.wav"
    sf.write(str(path), np.zeros((sr, channels), np.int16), sr, subtype="PCM_16", format="WAV")
    with pytest.raises(ValueError, match=re.escape(held)) as e:
        stereo.read_session(path)
    assert isinstance(e.value, WavError) and "allowed: a session recording: a WAV with 2 channels" in str(e.value)
    assert "at 16000 Hz" in str(e.value).split("allowed:")[1]


def test_a_file_that_is_no_wav_is_refused(tmp_path):
    path = tmp_path / "session.wav"
    path.write_text("not audio")
    with pytest.raises(WavError, match="not a readable WAV.*allowed: a session recording"):
        stereo.read_session(path)


# Script (s of the user's recording): line 1 "and then i [pause 0.9] i went" (0.5–1.2, 2.1–2.6),
# line 2 "so what now" (6.0–6.8), line 3 "any ideas" (10.0–10.5), rendered 1.0 s into the recording.
SEGMENTS = [[0.5, 1.2, "and then i"], [2.1, 2.6, "i went"], [6.0, 6.8, "so what now"], [10.0, 10.5, "any ideas"]]
PER_LINE = [2, 1, 1]
USER_AT_S = 1.0  # a whole number of frames: the agent's bursts below fall on frame edges
AGENT = [(1.4, 1.8), (2.9, 3.6), (6.2, 6.5), (7.2, 8.0)]  # script times
CHUNKS = [Span(round(a * 1e9), round(b * 1e9), t) for (a, b), t in zip(AGENT[:3], ["what happened", "oh nice", "mm-hmm"],
                                                                      strict=True)]  # 7.2 s: no log chunk over it


def hand_made_run(tmp_path):
    user = track(11.0, [(a, b) for a, b, _ in SEGMENTS])
    agent = track(13.0, [(a + USER_AT_S, b + USER_AT_S) for a, b in AGENT])
    write_session(tmp_path / "session.wav", recording(user, round(USER_AT_S * SR), agent))
    return user


def test_gaps_cut_ins_and_answers_come_from_the_recording(tmp_path):
    """1.4 s: in line 1's hesitation, a cut-in; 2.9 s: the user said "i went" (2.1) since, a new turn
    300 ms after line 1; 6.2 s: the log says "mm-hmm", a backchannel over line 2; 7.2 s: no chunk
    over it in the log, a turn, 400 ms after line 2; line 3: nothing after it, unanswered."""
    user = hand_made_run(tmp_path)
    lines = script_lines(SEGMENTS, PER_LINE)
    got = measure_audio(tmp_path, user, lines, CHUNKS, log_user_at_ns=round(USER_AT_S * 1e9))
    assert got["onsets_s"] == [1.4, 2.9, 6.2, 7.2]
    assert got["cut_ins"] == 1 and got["cut_in_at_s"] == [1.4]
    assert got["backchannels"] == 1 and got["gaps_ms"] == [300.0, 400.0]
    assert got["answered"] == 2 and got["user_turns"] == 3
    assert got["user_at_s"] == USER_AT_S and got["user_at_vs_log_ms"] == 0.0
    summary = summarize_audio([got])
    assert summary["audio_cut_in_rate"] == 0.333 and summary["audio_answered_rate"] == 0.667
    assert summary["audio_gap_p50_ms"] == 350.0 and summary["audio_gap_p90_ms"] == 390.0  # 300 + 0.9 * 100
    assert summary["audio_sessions"] == 1


def test_no_recording_no_audio_figures(tmp_path):
    assert measure_audio(tmp_path, track(1.0, [(0.2, 0.5)]), script_lines(SEGMENTS, PER_LINE), [], 0) is None
    assert summarize_audio([])["audio_cut_in_rate"] is None


QUESTION_WORDS = {"do", "how", "is", "what", "should", "any", "can"}


def words(line: str) -> str:
    return " ".join(re.sub(r"\[[^\]]*\]", " ", line).split())


def test_unseen_users_parse_hesitate_mid_clause_and_differ_from_the_tuned_ones():
    assert len(UNSEEN_USERS) == 2 and not set(UNSEEN_USERS) & set(USERS)
    tuned = {words(line) for lines in USERS.values() for line in lines}
    for lines in UNSEEN_USERS.values():
        assert len(lines) == 8 and script_turns(lines)
        items = [parse(line) for line in lines]
        # a hesitation inside a line: words before the pause and after it
        mid = [it for it in items if any(isinstance(x, Pause) and any(isinstance(y, Say) for y in it[:k])
                                         and any(isinstance(y, Say) for y in it[k:]) for k, x in enumerate(it))]
        assert len(mid) == 3
        questions = [line for line in lines if words(line).split()[0] in QUESTION_WORDS]
        assert 2 <= len(questions) <= 6  # questions and statements
        assert not {words(line) for line in lines} & tuned
        assert isinstance(items[0][0], At) and all(it[0] == Pause(5.0) for it in items[1:])


def test_unseen_lines_leave_five_seconds_to_answer():
    lines = UNSEEN_USERS["garden"]
    _, segments = render(parse("\n".join(lines)), lambda text: (np.full(1600 * len(text.split()), 3000, np.int16), SR))
    got = script_lines(segments, script_turns(lines))
    assert [round((b.start_ns - a.end_ns) / 1e9, 3) for a, b in zip(got, got[1:], strict=False)] == [5.0] * 7


def fake_run(tmp_path, runs):
    """A session whose log and recording agree: the user at index 0, the agent at 2.0–2.5 s."""
    def run_session(user_wav, runs_dir, overrides, tail_s):
        run_dir = tmp_path / f"run{next(runs)}"
        run_dir.mkdir()
        data, n = pcm(0.02, SR)
        write(run_dir / "events.rtlog", [(0.0, AudioIn(pcm=data, sr_hz=SR, n_samples=n, stream_pos=0, t_capture_ns=at(0.0))),
                                         *chunk(1, 0, 1.9, [(" sure", 0.5)], start=2.0)])
        user, _ = sf.read(str(user_wav), dtype="int16")
        write_session(run_dir / "session.wav", recording(user, 0, track(3.0, [(2.0, 2.5)])))
        return run_dir
    return run_session


def test_unseen_runs_its_users_and_every_run_reports_the_audio_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_session, "engine_synth", lambda voice: lambda text: (np.full(800, 3000, np.int16), SR))
    monkeypatch.setattr(bench_session, "run_session", fake_run(tmp_path, iter(range(100))))
    monkeypatch.setattr(bench_session, "bench_tts", lambda quick: {})
    out = tmp_path / "session.json"
    args = argparse.Namespace(json=str(out), quick=False, unseen=True, users=None, voices=None, tail=1.0,
                              keep=str(tmp_path / "keep"), overrides=[])
    assert bench_session.run(args) == 0
    report = json.loads(out.read_text())
    assert report["voices"] == {"garden": ["piper", "espeak"], "move": ["piper", "espeak"]} and report["config"]["unseen"]
    assert report["users"] == UNSEEN_USERS
    for key in bench_session.AUDIO_KEYS:
        assert key in report and key in report["policies"]["no_lookahead"] and f"``{key}``" in report["definitions"]
    assert report["policies"]["lookahead"]["audio_sessions"] == 4 and report["audio_answered_rate"] == 0.125  # line 1 of 8
    assert all(s["audio"]["user_at_vs_log_ms"] == 0.0 for s in report["sessions"]["lookahead"])


def test_unseen_refuses_a_tuned_user_naming_the_allowed(tmp_path, capsys):
    args = argparse.Namespace(json=str(tmp_path / "x.json"), quick=False, unseen=True, users=["trip"], voices=None, tail=1.0,
                              keep=None, overrides=[])
    assert bench_session.run(args) == 2
    assert "--users trip: not in this set; allowed: garden, move" in capsys.readouterr().err
