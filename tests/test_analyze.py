"""``rtchat analyze`` on logs the test writes event by event, so every figure is known exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtchat.bus.eventlog import LogWriter
from rtchat.bus.events import (
    AgentCancel,
    AgentPause,
    AgentSay,
    AsrFinal,
    AudioIn,
    AudioPlayed,
    Envelope,
    TtsAudio,
    UserText,
    VadEnd,
    VadStart,
    Word,
)
from rtchat.bus.wire import encode
from rtchat.evals.analyze import analyze, read_events, timeline_png

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
SR = 16_000
TTS_SR = 22_050


def at(seconds: float) -> int:
    return T0 + round(seconds * S)


def audio_s(seconds: float) -> int:
    return round(seconds * S)


def write(path, timed: list[tuple[float, object]]) -> None:
    w = LogWriter(path, {"run": "test"})
    for seq, (t, ev) in enumerate(sorted(timed, key=lambda x: x[0])):
        w.append(at(t) + 1000, encode(ev, Envelope(v=1, src="test", seq=seq, t_ns=at(t), session="r")))
    w.close()


def pcm(seconds: float, sr: int) -> tuple[bytes, int]:
    n = round(seconds * sr)
    return b"\x00\x00" * n, n


def chunk(turn: int, chunk_i: int, t_say: float, pieces: list[tuple[str, float]], start: float, cut_at: float | None = None):
    """agent.say, its tts.audio pieces (text "", i.e. silence, or words), and its audio.played."""
    text = "".join(t or f" ({d})" for t, d in pieces)
    out = [(t_say, AgentSay(turn=turn, gen=0, text=text, chunk=chunk_i))]
    for i, (words, dur) in enumerate(pieces):
        data, n = pcm(dur, TTS_SR)
        out.append((t_say + 0.05, TtsAudio(turn=turn, gen=0, chunk=chunk_i, text=words, pcm=data, sr_hz=TTS_SR,
                                           n_samples=n, last=i == len(pieces) - 1)))
    total = sum(d for _, d in pieces)
    end = cut_at if cut_at is not None else start + total
    out.append((end + 0.01, AudioPlayed(turn=turn, gen=0, chunk=chunk_i, text=text, start_ns=at(start), end_ns=at(end),
                                        stream_pos=round(start * SR), n_samples=round((end - start) * SR), sr_hz=SR)))
    return out


@pytest.fixture
def session(tmp_path):
    """User speaks 1.0–2.0 s; the agent answers at 2.5 s (0.5 s of words, 0.2 s trailing pause);
    the user starts again at 2.8 s over the agent, which cancels at 3.0 s; the user stops at 4.0 s;
    the agent answers at 4.3 s after a 0.3 s leading pause piece (first sample at 4.0 s)."""
    data, n = pcm(0.02, SR)
    events = [
        (0.0, AudioIn(pcm=data, sr_hz=SR, n_samples=n, stream_pos=0, t_capture_ns=at(0.0))),
        (1.25, VadStart(stream_pos=16_000, audio_ns=audio_s(1.0))),
        (2.3, AsrFinal(text=" hello there", utterance=0, words=(
            Word(text=" hello", start_ns=audio_s(1.1), end_ns=audio_s(1.5)),
            Word(text=" there", start_ns=audio_s(1.5), end_ns=audio_s(1.9))))),
        (2.6, VadEnd(stream_pos=32_000, audio_ns=audio_s(2.0))),
        *chunk(1, 0, 2.35, [(" hi!", 0.5), ("", 0.2)], start=2.5),
        (2.9, VadStart(stream_pos=44_800, audio_ns=audio_s(2.8))),
        (3.0, AgentCancel(turn=1, gen=1)),
        (3.5, AsrFinal(text=" wait", utterance=1, words=(Word(text=" wait", start_ns=audio_s(2.9), end_ns=audio_s(3.9)),))),
        (4.6, VadEnd(stream_pos=64_000, audio_ns=audio_s(4.0))),
        *chunk(3, 0, 3.9, [("", 0.3), (" sure", 0.6)], start=4.0),
        (5.0, AgentPause(turn=3, gen=1, duration_ns=800_000_000)),
    ]
    path = tmp_path / "events.rtlog"
    write(path, events)
    return tmp_path


def test_floor_transfers_overlaps_and_interruptions_are_measured_from_the_log(session):
    events, notes = read_events(session)
    report = analyze(events)
    assert notes == {"undecodable": 0, "damage": None}
    assert report["turns"] == 2
    assert report["fto_ms"] == [500.0, 300.0]  # 2.5 - 2.0; 4.3 (after the 0.3 s leading pause) - 4.0
    assert report["fto_p50_ms"] == 400.0
    assert report["overlaps"] == 1 and report["overlap_ms_total"] == pytest.approx(200.0)  # 2.8-3.0 (trailing pause trimmed)
    assert report["interruptions"] == 1 and report["interruptions_yielded"] == 1
    assert report["user_turns"] == 2 and report["user_turns_answered"] == 2
    assert report["agent_pauses"] == 1
    assert [t["user"] for t in report["transfers"]] == ["hello there", "wait"]
    assert report["spans"]["agent"][0][:2] == [1.5, 2.0]  # origin = the user's first onset (1.0 s)


def test_stage_latencies_come_from_event_times_and_audio_times(session):
    stages = analyze(read_events(session)[0])["stage_latency_ms"]
    assert stages["vad_start"] == pytest.approx(175.0)  # p50 of 250 and 100
    assert stages["vad_end"] == pytest.approx(600.0)  # p50 of 600 and 600
    assert stages["asr_final"] == pytest.approx(0.0)  # p50 of 400 and -400 (a final may come before its word's end)
    assert stages["tts_first_audio"] == pytest.approx(50.0)
    assert stages["played"] == pytest.approx(75.0)  # p50 of 100 (2.5 - 2.4) and 50 (4.0 - 3.95)
    assert stages["agent_decision"] == pytest.approx(225.0)  # p50 of 50 (say 2.35 - final 2.3) and 400 (3.9 - 3.5)


def test_a_typed_session_counts_typed_turns(tmp_path):
    events = [(1.0, UserText(text="hello")), *chunk(1, 0, 1.6, [(" hi", 0.4)], start=1.7)]
    write(tmp_path / "events.rtlog", events)
    report = analyze(read_events(tmp_path)[0])
    assert report["turns"] == 1 and report["fto_ms"] == [700.0]


def test_an_empty_log_gives_empty_figures(tmp_path):
    write(tmp_path / "events.rtlog", [])
    report = analyze(read_events(tmp_path)[0])
    assert report["turns"] == 0 and report["fto_p50_ms"] is None and report["stage_latency_ms"]["vad_end"] is None


def test_cli_writes_json_and_a_timeline_picture(session, tmp_path):
    out, png = tmp_path / "report.json", tmp_path / "timeline.png"
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "analyze", str(session), "--json", str(out), "--png", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    for key in ("turns", "fto_ms", "fto_p50_ms", "fto_p90_ms", "overlaps", "stage_latency_ms"):
        assert key in report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_refuses_a_directory_without_a_log(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "analyze", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no event log" in r.stderr


def test_timeline_png_with_no_speech_still_draws(tmp_path):
    write(tmp_path / "events.rtlog", [])
    timeline_png(analyze(read_events(tmp_path)[0]), tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
