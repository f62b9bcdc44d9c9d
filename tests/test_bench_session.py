"""``rtchat bench session``: its summary by hand, and the command end to end (--quick: one scripted
user, with and without lookahead, through full sessions on the embedded models)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from session_log import at, chunk, pcm, write

from rtchat.bus.events import AudioIn
from rtchat.evals.bench_session import USERS, is_backchannel, measure, script_turns, summarize, user_voices
from rtchat.evals.simulate_user import ENGINES


def session(fto, answered, user_turns, overlap, fdb=None, gaps=(), cut_ins=0, backchannels=0):
    stages = {"vad_end": 100.0, "tts_first_audio": None}
    return {"fto_ms": fto, "turns": len(fto), "answered": answered, "user_turns": user_turns,
            "agent_started_in_overlap": overlap, "stage_latency_ms": stages, "fdb_samples": fdb or {},
            "gaps_ms": list(gaps), "cut_ins": cut_ins, "backchannels": backchannels}


def test_summary_by_hand():
    got = summarize([session([-400.0, 300.0, 500.0], 3, 4, 1, gaps=[300.0, 600.0], cut_ins=1, backchannels=2),
                     session([700.0, 100.0], 2, 2, 0, gaps=[1200.0, 100.0, 900.0, 200.0], cut_ins=2)])
    assert got["fto_p50_ms"] == 300.0  # offsets -400 100 300 500 700
    # gaps sorted: 100 200 300 600 900 1200 (n 6): p50 at rank 0.5 * 5 = 2.5, (300 + 600) / 2 = 450;
    # p90 at rank 0.9 * 5 = 4.5, (900 + 1200) / 2 = 1050
    assert got["gap_p50_ms"] == 450.0 and got["gap_p90_ms"] == 1050.0
    assert got["answered_rate"] == pytest.approx(5 / 6, abs=1e-3)
    assert got["overlap_start_rate"] == 0.2 and got["transfers"] == 5
    assert got["cut_in_rate"] == 0.5 and got["backchannel_rate"] == 0.333  # 3 and 2 of 6 user turns
    assert got["stage_latency_ms"] == {"vad_end": 100.0, "tts_first_audio": None}
    assert got["fdb_smooth_tor"] is None and got["fdb_n"]["turn_ends"] == 0  # no Full-Duplex-Bench samples


def test_full_duplex_bench_samples_pool_over_sessions():
    a = {"pause": [0, 1], "smooth": [1, 1], "smooth_latency_ms": [300.0, 500.0], "user_turn_s": 10.0, "backchannels": 2}
    b = {"pause": [0], "smooth": [0], "interruption": [1], "interruption_latency_ms": [200.0], "user_turn_s": 5.0}
    got = summarize([session([300.0], 1, 1, 0, a), session([], 0, 1, 0, b)])
    assert got["fdb_pause_tor"] == 0.333  # 1 of 3 pauses taken over
    assert got["fdb_smooth_tor"] == 0.667 and got["fdb_smooth_latency_ms"] == 400.0  # 2 of 3; (300 + 500) / 2
    assert got["fdb_interruption_tor"] == 1.0 and got["fdb_interruption_latency_ms"] == 200.0
    assert got["fdb_backchannel_rate"] == 0.133  # 2 backchannels / 15 s of user turns


def test_script_lines_count_their_utterances():
    assert script_turns(["[0.5] hi [pause 1] there", "[5] yes"]) == [2, 1]


@pytest.mark.parametrize("text, backchannel", [
    ("mm-hmm", True), (" (0.3) Yeah.", True), ("oh yeah", True), ("I see.", True), ("yeah, right", True),
    ("okay then", False), ("yeah yeah yeah", False), ("that sounds fun", False), ("(0.5)", False),
])
def test_backchannels_are_short_and_from_the_list(text, backchannel):
    assert is_backchannel(text) is backchannel


# One script, rendered: line 1 "and then i [pause 0.9] i went" (0.5–1.2, 2.1–2.6 s), line 2
# "okay" (6.0–6.4 s), line 3 "so what now" (9.0–9.6 s).
SEGMENTS = [[0.5, 1.2, "and then i"], [2.1, 2.6, "i went"], [6.0, 6.4, "okay"], [9.0, 9.6, "so what now"]]
PER_LINE = [2, 1, 1]


def agent_log(tmp_path):
    """The agent's played chunks (audible spans in s of the user's recording: the audio clock's
    first frame is captured at bus time 0):
    1.4–1.8 "what happened"        in line 1's hesitation: a cut-in
    2.9–4.0 "that sounds like fun" the user started "i went" (2.1) since: a new turn, 2.9 - 2.6 = 300 ms after line 1
    4.5–5.0 "did you like it"      after a 0.3 s leading pause; no user onset since 4.0: the same turn
    6.2–6.5 "mm-hmm"               over "okay": a backchannel, not a cut-in
    7.0–7.8 "okay then"            after line 2: 7.0 - 6.4 = 600 ms (the backchannel does not join it)
    9.3–9.9 "wait what"            over "so what now": a cut-in
    10.4–10.7 "yeah"               after line 3 (0.5 s after "wait what": its own IPU): a backchannel, not a gap."""
    data, n = pcm(0.02, 16_000)
    write(tmp_path / "events.rtlog", [
        (0.0, AudioIn(pcm=data, sr_hz=16_000, n_samples=n, stream_pos=0, t_capture_ns=at(0.0))),
        *chunk(1, 0, 1.3, [(" what happened", 0.4)], start=1.4),
        *chunk(2, 0, 2.8, [(" that sounds like fun", 1.1)], start=2.9),
        *chunk(2, 1, 4.1, [("", 0.3), (" did you like it", 0.5)], start=4.2),
        *chunk(3, 0, 6.1, [(" mm-hmm", 0.3)], start=6.2),
        *chunk(4, 0, 6.9, [(" okay then", 0.8)], start=7.0),
        *chunk(5, 0, 9.2, [(" wait what", 0.6)], start=9.3),
        *chunk(6, 0, 10.3, [(" yeah", 0.3)], start=10.4),
    ])
    return tmp_path


def test_turn_taking_is_measured_on_the_script_times(tmp_path):
    got = measure(agent_log(tmp_path), SEGMENTS, PER_LINE)
    assert got["user_turns"] == 3 and got["answered"] == 3
    assert got["cut_ins"] == 2 and got["cut_in_at_s"] == [1.4, 9.3]  # in a hesitation, and over words
    assert got["backchannels"] == 2  # 6.2 (over words) and 10.4 (after them): neither a cut-in nor a gap
    assert got["gaps_ms"] == [300.0, 600.0]  # line 3 has no answer after it but the backchannel
    summary = summarize([{**got, "stage_latency_ms": {}}])
    assert summary["cut_in_rate"] == 0.667 and summary["backchannel_rate"] == 0.667  # 2 of 3 user turns each
    assert summary["gap_p50_ms"] == 450.0 and summary["gap_p90_ms"] == 570.0  # 300 + 0.9 * (600 - 300)


def test_every_user_speaks_in_every_voice_and_quick_takes_turns():
    assert user_voices(["a", "b", "c"], list(ENGINES), quick=False) == {n: ["piper", "espeak"] for n in "abc"}
    assert user_voices(["a", "b", "c"], list(ENGINES), quick=True) == {"a": ["piper"], "b": ["espeak"], "c": ["piper"]}


def test_the_report_has_every_user_in_each_voice_and_the_new_keys(tmp_path, monkeypatch):
    """run() with the sessions, the voices and the TTS benchmark faked: its shape, not its figures."""
    from rtchat.evals import bench_session

    runs = iter(range(100))
    def synth(text):
        return np.full(1600 * len(text.split()), 3000, np.int16), 16_000  # 0.1 s per word

    monkeypatch.setattr(bench_session, "engine_synth", lambda voice: synth)
    monkeypatch.setattr(bench_session, "run_session", lambda *a: agent_log(tmp_path / f"run{next(runs)}"))
    monkeypatch.setattr(bench_session, "bench_tts", lambda quick: {})
    out = tmp_path / "session.json"
    args = argparse.Namespace(json=str(out), quick=False, unseen=False, users=["trip", "story"], voices=None, tail=1.0,
                              keep=str(tmp_path / "keep"), overrides=[])
    assert bench_session.run(args) == 0
    report = json.loads(out.read_text())
    assert report["voices"] == {"trip": ["piper", "espeak"], "story": ["piper", "espeak"]}
    for sessions in report["sessions"].values():
        assert [(s["user"], s["voice"]) for s in sessions] == [("trip", "piper"), ("trip", "espeak"), ("story", "piper"),
                                                               ("story", "espeak")]
    for key in ("cut_in_rate", "backchannel_rate", "gap_p50_ms", "gap_p90_ms"):
        assert key in report and key in report["policies"]["no_lookahead"] and f"``{key}``" in report["definitions"]


def test_users_hesitate_inside_clauses():
    hesitant = [line for lines in USERS.values() for line in lines if "[pause" in line]
    assert any("and then i [pause" in line for line in hesitant) and any("so we [pause" in line for line in hesitant)


@pytest.mark.model
@pytest.mark.slow
def test_the_quick_benchmark_writes_its_keys(tmp_path):
    out = tmp_path / "session.json"
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "bench", "session", "--json", str(out), "--quick"],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("fto_p50_ms", "fto_p90_ms", "answered_rate", "overlap_start_rate", "gap_p50_ms", "gap_p90_ms", "cut_in_rate",
                "backchannel_rate", "fdb_smooth_tor", "fdb_pause_tor", "fdb_interruption_tor", "fdb_backchannel_rate"):
        assert key in report and key in report["policies"]["no_lookahead"]
    assert 0 <= report["answered_rate"] <= 1 and 0 <= report["overlap_start_rate"] <= 1
    assert set(report["tts_ttfa_ms"]) == {"piper", "espeak"} and all(v > 0 for v in report["tts_rtf"].values())
    assert set(report["policies"]) == {"lookahead", "no_lookahead"}
    assert all(len(s) == 1 and s[0]["user_turns"] == 5 and s[0]["voice"] == "piper" for s in report["sessions"].values())
