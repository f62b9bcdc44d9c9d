"""A whole voice session, headless, with the real embedded models: a scripted user (Piper) is
played in real time into proxy, logger, audio, asr, agent and tts (``rtchat run --ui none --in
USER.wav --out SESSION.wav``); the run is then analysed from its log alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

SCRIPT = "[0.5] hi there how are you doing today\n[6.0] i just got back from a trip to the mountains\n"


def rtchat(*args: str, cwd, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtchat.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.model
@pytest.mark.slow
def test_a_headless_session_from_a_wav_is_answered_recorded_and_analysed(tmp_path):
    (tmp_path / "user.txt").write_text(SCRIPT)
    r = rtchat("simulate-user", "user.txt", "--out", "user.wav", "--segments", "user.json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    user, sr = sf.read(tmp_path / "user.wav", dtype="int16")
    segments = json.loads((tmp_path / "user.json").read_text())

    r = rtchat("run", "--ui", "none", "--in", "user.wav", "--out", "session.wav", "audio.output=none", "audio.tail_s=4",
               cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the input ended (end of file)" in r.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    for name in ("events.rtlog", "config.yaml", "run.json", "session.wav"):
        assert (run_dir / name).is_file(), name

    # the stereo recording: the user's words on the left, the agent's voice on the right
    x, rate = sf.read(tmp_path / "session.wav", dtype="int16")
    assert rate == 16000 and x.ndim == 2 and x.shape[1] == 2
    assert len(x) >= len(user)
    assert np.abs(x[:, 0]).max() > 1000 and np.abs(x[:, 1]).max() > 1000

    r = rtchat("analyze", str(run_dir), "--json", "report.json", "--png", "timeline.png", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["log"] == {"undecodable": 0, "damage": None}
    # the user was heard (under load the VAD may join the two utterances into one span) and the
    # words recognised are the script's; the agent answered
    assert 1 <= len(report["spans"]["user"]) <= len(segments)
    heard = {w.strip(".,?!").lower() for s in report["spans"]["user"] for w in s[2].split()}
    said = {w for s in segments for w in s[2].split()}
    assert len(heard & said) >= 5, (heard, said)
    assert report["turns"] >= 1 and report["user_turns_answered"] >= 1
    # timing fields present and sane: offsets within a few seconds, each stage measured
    assert all(-5000 < f < 8000 for f in report["fto_ms"])
    assert report["fto_p50_ms"] is not None and report["fto_p90_ms"] >= report["fto_p50_ms"]
    stages = report["stage_latency_ms"]
    for stage in ("vad_start", "vad_end", "asr_partial", "asr_final", "tts_first_audio", "played"):
        assert stages[stage] is not None and -2000 < stages[stage] < 5000, (stage, stages)
    assert 0 <= stages["tts_first_audio"] < 2000 and 0 <= stages["played"] < 2000
    assert (tmp_path / "timeline.png").stat().st_size > 5000
