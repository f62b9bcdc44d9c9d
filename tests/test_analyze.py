"""``rtchat analyze`` on logs the test writes event by event, so every figure is known exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from session_log import at, audio_s, barge_in_session, chunk, pcm, write

from rtchat.bus.events import AgentCycle, AgentSchedule, AsrFinal, AsrPartial, AudioIn, UserText, VadEnd, VadPause, VadStart, Word
from rtchat.evals.analyze import analyze, read_events, timeline_figure, timeline_png


@pytest.fixture
def session(tmp_path):
    """session_log.barge_in_session, as a run directory."""
    write(tmp_path / "events.rtlog", barge_in_session())
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


def cycle(decision: str) -> AgentCycle:
    return AgentCycle(turn=0, gen=0, input_text="", prediction="", decision=decision)


def words(*spans: tuple[str, float, float]) -> tuple[Word, ...]:
    return tuple(Word(text=f" {w}", start_ns=audio_s(a), end_ns=audio_s(b)) for w, a, b in spans)


def test_each_transfer_says_when_its_signals_arrived(tmp_path):
    """Two transfers, every signal at a known time after the user's speech end."""
    data, n = pcm(0.02, 16_000)
    write(tmp_path / "events.rtlog", [
        (0.0, AudioIn(pcm=data, sr_hz=16_000, n_samples=n, stream_pos=0, t_capture_ns=at(0.0))),
        # 1: the user speaks 1.0–2.0 s
        (1.1, VadStart(stream_pos=16_000, audio_ns=audio_s(1.0))),
        (1.6, AsrPartial(text=" hello", rev=0, utterance=0, words=words(("hello", 1.0, 1.4)))),
        (2.1, cycle("listen")),
        (2.2, AsrPartial(text=" hello there", rev=1, utterance=0, words=words(("hello", 1.0, 1.4), ("there", 1.5, 1.9)))),
        (2.4, AsrFinal(text=" hello there", utterance=0, words=words(("hello", 1.0, 1.4), ("there", 1.5, 1.9)))),
        (2.3, VadPause(stream_pos=32_000, audio_ns=audio_s(2.0))),  # the same silence's first 64 ms
        (2.45, cycle("switch")),
        (2.5, VadEnd(stream_pos=32_000, audio_ns=audio_s(2.0))),
        *chunk(1, 0, 2.45, [("", 0.2), (" hi there", 0.6)], start=2.6),  # first sample 2.6 s, first sound 2.8 s
        (3.0, AsrPartial(text=" hi", rev=0, utterance=1, words=())),  # after the agent's first sound: not this transfer's
        (3.1, cycle("continue")),
        # 2: the user speaks 4.0–5.0 s; no partial
        (4.1, VadStart(stream_pos=64_000, audio_ns=audio_s(4.0))),
        (5.3, AsrFinal(text=" how are you", utterance=2, words=words(("how", 4.1, 4.3), ("are", 4.3, 4.5), ("you", 4.5, 4.9)))),
        (5.5, cycle("switch")),
        (5.9, VadEnd(stream_pos=80_000, audio_ns=audio_s(5.0))),
        *chunk(2, 0, 5.5, [(" fine", 0.5)], start=5.6),
    ])
    report = analyze(read_events(tmp_path)[0])
    assert report["fto_ms"] == [800.0, 600.0]  # 2.8 - 2.0; 5.6 - 5.0
    # 1: vad.end 2.5 - 2.0; the last partial before 2.8 is 2.2's; final 2.4; the switch 2.45 (not
    #    the listen at 2.1); the chunk's first sample 2.6
    assert report["transfers"][0]["signals_ms"] == {"vad_pause": 300.0, "vad_end": 500.0,
                                                    "armed": None, "partial": 200.0, "final": 400.0,
                                                    "fired": None, "decision": 450.0, "audio": 600.0}
    # 2: vad.end 5.9 - 5.0; no partial; final 5.3; the switch 5.5 (not 2.45's, before the agent's
    #    previous IPU began at 2.8); first sample 5.6
    assert report["transfers"][1]["signals_ms"] == {"vad_pause": None, "vad_end": 900.0,
                                                    "armed": None, "partial": None, "final": 300.0,
                                                    "fired": None, "decision": 500.0, "audio": 600.0}
    assert report["signal_p50_ms"] == {"vad_pause": 300.0, "vad_end": 700.0,
                                       "armed": None, "partial": 200.0, "final": 350.0, "fired": None,
                                       "decision": 475.0, "audio": 600.0}
    assert report["signal_n"] == {"vad_pause": 1, "vad_end": 2,
                                 "armed": 0, "partial": 1, "final": 2, "fired": 0, "decision": 2, "audio": 2}
    # no agent.schedule in the log: every decision was a probe
    assert [t["schedule"]["taken_by"] for t in report["transfers"]] == ["probe", "probe"]
    assert report["schedule_fired_rate"] == 0.0 and report["schedule_disarmed"] == 0 and report["schedule_list"] == []
    timeline_png(report, tmp_path / "t.png")  # the markers draw
    assert (tmp_path / "t.png").stat().st_size > 5000


def step(action: str, fire_ms: int = -1, turn: int = 0) -> AgentSchedule:
    return AgentSchedule(turn=turn, gen=0, action=action, fire_after_ns=fire_ms * 1_000_000 if fire_ms >= 0 else -1)


@pytest.fixture
def scheduled(tmp_path):
    """Three transfers and the switch schedule's steps: 1 taken by the schedule, 2 by a probe after
    the user resumed (the schedule disarmed), 3 by a probe while the schedule was armed."""
    data, n = pcm(0.02, 16_000)
    write(tmp_path / "events.rtlog", [
        (0.0, AudioIn(pcm=data, sr_hz=16_000, n_samples=n, stream_pos=0, t_capture_ns=at(0.0))),
        # 1: the user speaks 1.0–2.0 s; planned to fire after 0.3 s; armed at vad.end 2.2, fired 2.5
        (1.1, VadStart(stream_pos=16_000, audio_ns=audio_s(1.0))),
        (1.9, AsrFinal(text=" hello there", utterance=0, words=words(("hello", 1.0, 1.4), ("there", 1.5, 1.9)))),
        (1.95, AgentSchedule(turn=0, gen=0, action="planned", fire_after_ns=300_000_000,
                             pauses_ns=(0, 100_000_000, 200_000_000, 300_000_000), probs=(0.1, 0.2, 0.4, 0.7))),
        (2.2, VadEnd(stream_pos=32_000, audio_ns=audio_s(2.0))),
        (2.2, step("armed", 300)),
        (2.5, step("fired", 300)),
        (2.5, cycle("switch")),
        *chunk(1, 0, 2.5, [(" hi", 0.5)], start=2.6),
        # 2: the user speaks 4.0–5.0 s, armed at 5.2, speaks again 5.4–6.0 s (disarmed at 5.5); a probe
        #    takes the turn at 6.4
        (4.1, VadStart(stream_pos=64_000, audio_ns=audio_s(4.0))),
        (5.0, AsrFinal(text=" so", utterance=1, words=words(("so", 4.1, 4.9)))),
        (5.2, VadEnd(stream_pos=80_000, audio_ns=audio_s(5.0))),
        (5.2, step("armed", 500, turn=1)),
        (5.5, VadStart(stream_pos=86_400, audio_ns=audio_s(5.4))),
        (5.5, step("disarmed", turn=1)),
        (6.1, AsrFinal(text=" well", utterance=2, words=words(("well", 5.5, 5.9)))),
        (6.2, VadEnd(stream_pos=96_000, audio_ns=audio_s(6.0))),
        (6.4, cycle("switch")),
        *chunk(2, 0, 6.4, [(" right", 0.5)], start=6.6),
        # 3: the user speaks 8.0–9.0 s, armed at 9.2 with no pause reaching the threshold; the final
        #    at 9.4 is decided by a probe at 9.5
        (8.1, VadStart(stream_pos=128_000, audio_ns=audio_s(8.0))),
        (9.2, VadEnd(stream_pos=144_000, audio_ns=audio_s(9.0))),
        (9.2, step("armed", turn=2)),
        (9.4, AsrFinal(text=" bye", utterance=3, words=words(("bye", 8.1, 8.9)))),
        (9.5, cycle("switch")),
        *chunk(3, 0, 9.5, [(" bye", 0.5)], start=9.7),
    ])
    return tmp_path


def test_each_transfer_says_what_the_switch_schedule_did(scheduled):
    report = analyze(read_events(scheduled)[0])
    assert report["fto_ms"] == [600.0, 600.0, 700.0]  # 2.6 - 2.0; 6.6 - 6.0 (the user's speech end after resuming); 9.7 - 9.0
    signals = [t["signals_ms"] for t in report["transfers"]]
    assert [(s["vad_end"], s["armed"], s["fired"], s["decision"], s["audio"]) for s in signals] == [
        (200.0, 200.0, 500.0, 500.0, 600.0),
        (200.0, None, None, 400.0, 600.0),  # the schedule armed at 5.2 was disarmed: none in force
        (200.0, 200.0, None, 500.0, 700.0),
    ]
    assert [t["schedule"] for t in report["transfers"]] == [
        {"taken_by": "schedule", "fire_after_ms": 300.0, "fired_pause_ms": 300.0, "disarmed": 0},
        {"taken_by": "probe", "fire_after_ms": None, "fired_pause_ms": None, "disarmed": 1},
        {"taken_by": "probe", "fire_after_ms": None, "fired_pause_ms": None, "disarmed": 0},
    ]
    assert report["signal_p50_ms"]["armed"] == 200.0 and report["signal_p50_ms"]["fired"] == 500.0
    assert report["signal_n"]["armed"] == 2 and report["signal_n"]["fired"] == 1
    assert report["schedule_fired_rate"] == pytest.approx(0.333) and report["schedule_disarmed"] == 1
    # the steps on the picture's axis (origin: the user's first onset, 1.0 s); planned steps are not listed
    assert report["schedule_list"] == [
        {"at_s": 1.2, "action": "armed", "fire_after_ms": 300.0},
        {"at_s": 1.5, "action": "fired", "fire_after_ms": 300.0},
        {"at_s": 4.2, "action": "armed", "fire_after_ms": 500.0},
        {"at_s": 4.5, "action": "disarmed", "fire_after_ms": None},
        {"at_s": 8.2, "action": "armed", "fire_after_ms": None},
    ]


def test_the_timeline_picture_marks_the_schedule(scheduled):
    import matplotlib.pyplot as plt

    report = analyze(read_events(scheduled)[0])
    fig = timeline_figure(report)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["vad end", "schedule armed", "final", "schedule fired", "decision", "audio", "schedule disarmed"]
    disarmed = next(h for h, label in zip(fig.axes[0].get_legend().legend_handles, labels, strict=True)
                    if label == "schedule disarmed")
    assert disarmed.get_markerfacecolor() == "none"  # hollow, where the user resumed
    plt.close(fig)
    timeline_png(report, scheduled / "t.png")
    assert (scheduled / "t.png").stat().st_size > 5000


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
    for key in ("turns", "fto_ms", "fto_p50_ms", "fto_p90_ms", "overlaps", "stage_latency_ms", "signal_p50_ms"):
        assert key in report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_refuses_a_directory_without_a_log(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "analyze", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no event log" in r.stderr


def test_timeline_png_with_no_speech_still_draws(tmp_path):
    write(tmp_path / "events.rtlog", [])
    timeline_png(analyze(read_events(tmp_path)[0]), tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
