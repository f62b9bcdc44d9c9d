"""``rtchat simulate-user``: the script syntax, exact timing of the rendered speech, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from rtchat.evals.simulate_user import SR_HZ, At, Pause, Say, ScriptError, parse, render
from rtchat.nodes.tts.espeak import synthesize


def espeak(text: str):
    return synthesize(text)


def test_parse_reads_times_pauses_words_and_comments():
    script = "# a user\n[0.5] hello how are you [pause 1.2] i was\nthinking [6] mm-hmm\n"
    assert parse(script) == [At(0.5), Say("hello how are you"), Pause(1.2), Say("i was thinking"), At(6.0), Say("mm-hmm")]


@pytest.mark.parametrize("bad, message", [
    ("[0.5 hello", "unbalanced"),
    ("hello ] there", "unbalanced"),
    ("[soon] hello", "allowed: [T]"),
    ("[pause -1] hello", "allowed: [T]"),
    ("[1.0] [pause 2]", "no words"),
])
def test_bad_scripts_are_refused_with_what_is_allowed(bad, message):
    with pytest.raises(ScriptError, match=message.replace("[", r"\[")):
        parse(bad)


def test_render_puts_speech_exactly_where_the_script_says():
    pcm, segments = render(parse("[0.5] hello there [pause 1.0] how are you [4.0] fine"), espeak, tail_s=0.5)
    (s1, e1, t1), (s2, e2, _), (s3, e3, t3) = segments
    assert (s1, t1, t3) == (0.5, "hello there", "fine")
    assert s2 == pytest.approx(e1 + 1.0, abs=1e-3) and s3 == 4.0
    assert len(pcm) == pytest.approx((e3 + 0.5) * SR_HZ, abs=2)
    x = pcm.astype(np.float64)
    loud = lambda a, b: np.sqrt(np.mean(x[int(a * SR_HZ):int(b * SR_HZ)] ** 2))  # noqa: E731
    assert loud(0, 0.5) == 0 and loud(e1 + 0.01, s2 - 0.01) == 0 and loud(s1, e1) > 300 and loud(s3, e3) > 300


def test_a_time_that_goes_back_is_refused():
    with pytest.raises(ScriptError, match="goes back in time"):
        render(parse("[0.0] hello there how are you today [0.5] hi"), espeak)


def test_cli_writes_a_16k_wav_and_the_segments(tmp_path):
    script = tmp_path / "user.txt"
    script.write_text("[0.3] hello how are you [pause 0.8] good\n")
    out, seg = tmp_path / "user.wav", tmp_path / "user.json"
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "simulate-user", str(script), "--out", str(out),
                        "--segments", str(seg), "--engine", "espeak"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (SR_HZ, 1, "PCM_16")
    segments = json.loads(seg.read_text())
    assert [s[2] for s in segments] == ["hello how are you", "good"] and segments[0][0] == 0.3


def test_cli_reports_a_bad_script_without_writing(tmp_path):
    script = tmp_path / "user.txt"
    script.write_text("[later] hello")
    r = subprocess.run([sys.executable, "-m", "rtchat.cli", "simulate-user", str(script), "--out", str(tmp_path / "u.wav"),
                        "--engine", "espeak"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "[later]" in r.stderr and not (tmp_path / "u.wav").exists()
