"""The audio node as a real process, killed with SIGKILL in the middle of the user's WAV and
started again on the same run dir, as the launcher does: the user's words reach the bus once
each and session.wav holds the whole session on one timeline. The test is the bus's logger
(it writes events.rtlog as the logger node would) and the launcher (ctl.live, the back-off)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import accumulate

import numpy as np
import pytest
import soundfile as sf
import zmq
from nodeproc import stop

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock, s
from rtchat.bus.eventlog import LOG_FILE_NAME, LogWriter
from rtchat.bus.events import AudioEof, AudioIn, AudioPlayed, Live, NodeError, NodeReady, TtsAudio
from rtchat.configs.schema import LauncherConfig
from rtchat.nodes.audio.wavio import read_wav

SR = 16_000
NS_PER_SAMPLE = 1_000_000_000 // SR


class Bus:
    """The test's place on the bus: every message it gets is kept and logged, as the logger does."""

    def __init__(self, cfg, log_path):
        self.client = BusClient(cfg, src="test", session="t", clock=Clock(), topics=("node.", "audio."))
        self.client.handshake(int(5e9))
        self.log = LogWriter(log_path, {"run": "restart"})
        self.got: list = []

    def poll(self, timeout_ms: int) -> None:
        if self.client.data.poll(timeout_ms, zmq.POLLIN):
            frames = self.client.data.recv_multipart()
            self.log.append(time.time_ns(), frames)
            self.log.flush()
            self.got.append(self.client.decode(frames).event)

    def until(self, done, proc, what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.got):
            assert time.monotonic() < deadline and proc.poll() is None, f"no {what} from the audio node"
            self.poll(100)

    def close(self) -> None:
        self.log.close()


def spawn(cfg, run_dir, user_wav) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rtchat.nodes.audio", "--config", "cpu", "--run-dir", str(run_dir), "run.id=restart",
         f"bus.pub_endpoint={cfg.pub_endpoint}", f"bus.sub_endpoint={cfg.sub_endpoint}", "bus.heartbeat_interval_s=0.5",
         f"audio.input={user_wav}", "audio.output=none"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def agent_tone(chunk: int, hz: float) -> TtsAudio:
    tone = (0.4 * 32767 * np.sin(2 * np.pi * hz * np.arange(SR * 3 // 10) / SR)).astype(np.int16)
    return TtsAudio(turn=1, gen=0, chunk=chunk, text=f" chunk {chunk}", pcm=tone.tobytes(), sr_hz=SR,
                    n_samples=len(tone), last=True)


def frames(events) -> list[AudioIn]:
    return [e for e in events if isinstance(e, AudioIn)]


def played(events) -> list[AudioPlayed]:
    return [e for e in events if isinstance(e, AudioPlayed)]


@pytest.mark.slow
def test_a_node_killed_mid_wav_and_restarted_sends_every_frame_once_and_continues_session_wav(real_bus, tmp_path):
    rng = np.random.default_rng(1)
    n = 5 * SR  # 5 s of a "user" with no silent sample
    sf.write(tmp_path / "user.wav", (rng.integers(500, 8000, n) * rng.choice([-1, 1], n)).astype(np.int16), SR,
             subtype="PCM_16")
    wav = read_wav(tmp_path / "user.wav", SR)
    run_dir = tmp_path / "run"
    bus = Bus(real_bus, run_dir / LOG_FILE_NAME)
    procs = []
    try:
        procs.append(first := spawn(real_bus, run_dir, tmp_path / "user.wav"))
        bus.until(lambda g: any(isinstance(e, NodeReady) for e in g), first, "node.ready")
        bus.client.publish(Live(run="restart"))
        bus.until(frames, first, "audio.in")
        bus.client.publish(agent_tone(0, 300))
        bus.until(played, first, "audio.played")
        # mid-WAV, once session.wav has been flushed past the agent's first chunk (every 1 s, 0.5 s behind)
        flushed = played(bus.got)[0].end_ns + s(2)
        bus.until(lambda g: frames(g)[-1].t_capture_ns > flushed, first, "2 s more of the WAV")
        first.kill()
        assert first.wait(timeout=10) == -9
        end = time.monotonic() + LauncherConfig().restart_backoff_s  # the launcher's back-off: what was in flight lands
        while time.monotonic() < end:
            bus.poll(50)
        before = list(bus.got)
        reached = sum(e.n_samples for e in frames(before))
        assert 0 < reached < len(wav)

        procs.append(second := spawn(real_bus, run_dir, tmp_path / "user.wav"))
        bus.until(lambda g: any(isinstance(e, NodeReady) for e in g[len(before) :]), second, "node.ready again")
        bus.client.publish(Live(run="restart"))  # the launcher's ctl.live for a node that is ready again
        bus.until(lambda g: frames(g[len(before) :]), second, "audio.in after the restart")
        bus.client.publish(agent_tone(1, 500))
        bus.until(lambda g: any(isinstance(e, AudioEof) for e in g) and len(played(g)) == 2, second, "audio.eof")
        assert not [e for e in bus.got if isinstance(e, NodeError)]
        stop(bus.client, second)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            out = proc.communicate()[0]
            if proc.returncode not in (0, -9):
                print(out)
        bus.client.close()
        bus.close()

    sent = frames(bus.got)
    assert [e.stream_pos for e in sent] == list(accumulate((e.n_samples for e in sent[:-1]), initial=0))  # none twice
    assert all(e.t_capture_ns - sent[0].t_capture_ns == e.stream_pos * NS_PER_SAMPLE for e in sent)  # one timeline
    eofs = [e for e in bus.got if isinstance(e, AudioEof)]
    gap = eofs[0].stream_pos - len(wav)  # the outage, sent as silence
    assert len(eofs) == 1 and gap > 0
    heard = np.concatenate([np.frombuffer(e.pcm, dtype=np.int16) for e in sent])
    assert (heard[:reached] == wav[:reached]).all() and not heard[reached : reached + gap].any()
    assert (heard[reached + gap : len(wav) + gap] == wav[reached:]).all()  # the rest of the words, each once
    assert [(e.chunk, e.text) for e in played(bus.got)] == [(0, " chunk 0"), (1, " chunk 1")]  # nothing twice

    x, sr = sf.read(run_dir / "session.wav", dtype="int16")
    user, agent = x[:, 0], x[:, 1]
    c = int(np.flatnonzero(user)[0])  # where the WAV started on the timeline
    assert sr == SR and (user[c : c + reached] == wav[:reached]).all()  # before the kill, all of it
    assert not user[c + reached : c + reached + gap].any()  # the outage
    assert (user[c + reached + gap : c + len(wav) + gap] == wav[reached:]).all() and not user[c + len(wav) + gap :].any()
    for p, ev in zip(played(bus.got), (agent_tone(0, 300), agent_tone(1, 500)), strict=True):
        assert p.start_ns - sent[0].t_capture_ns == (p.stream_pos - c) * NS_PER_SAMPLE
        assert (agent[p.stream_pos : p.stream_pos + p.n_samples] == np.frombuffer(ev.pcm, np.int16)).all()
    assert np.count_nonzero(agent) == np.count_nonzero([np.frombuffer(agent_tone(k, hz).pcm, np.int16)
                                                        for k, hz in ((0, 300), (1, 500))])
