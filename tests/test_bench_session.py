"""``rtchat bench session``: its summary by hand, and the command end to end (--quick: one scripted
user, with and without lookahead, through full sessions on the embedded models)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtchat.evals.bench_session import script_turns, summarize


def session(fto, answered, user_turns, overlap, fdb=None):
    stages = {"vad_end": 100.0, "tts_first_audio": None}
    return {"fto_ms": fto, "turns": len(fto), "answered": answered, "user_turns": user_turns,
            "agent_started_in_overlap": overlap, "stage_latency_ms": stages, "fdb_samples": fdb or {}}


def test_summary_by_hand():
    got = summarize([session([-400.0, 300.0, 500.0], 3, 4, 1), session([700.0, 100.0], 2, 2, 0)])
    assert got["fto_p50_ms"] == 300.0 and got["gap_p50_ms"] == 400.0  # gaps: 100 300 500 700
    assert got["answered_rate"] == pytest.approx(5 / 6, abs=1e-3)
    assert got["overlap_start_rate"] == 0.2 and got["transfers"] == 5
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


@pytest.mark.model
@pytest.mark.slow
def test_the_quick_benchmark_writes_its_keys(tmp_path):
    out = tmp_path / "session.json"
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "bench", "session", "--json", str(out), "--quick"],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("fto_p50_ms", "fto_p90_ms", "answered_rate", "overlap_start_rate", "gap_p50_ms", "fdb_smooth_tor",
                "fdb_pause_tor", "fdb_interruption_tor", "fdb_backchannel_rate"):
        assert key in report
    assert 0 <= report["answered_rate"] <= 1 and 0 <= report["overlap_start_rate"] <= 1
    assert set(report["tts_ttfa_ms"]) == {"piper", "espeak"} and all(v > 0 for v in report["tts_rtf"].values())
    assert set(report["policies"]) == {"lookahead", "no_lookahead"}
    assert all(len(s) == 1 and s[0]["user_turns"] == 5 for s in report["sessions"].values())
