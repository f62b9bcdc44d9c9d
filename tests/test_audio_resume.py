"""A killed audio node's successor takes over, on virtual time: the same timeline, the user stream
going on after the last frame the bus got, session.wav continued; and what it reads to do so
(the state file, the end of the event log)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from rtchat.bus.clock import ms, s
from rtchat.bus.eventlog import LogWriter
from rtchat.bus.events import AgentCancel, AudioEof, AudioIn, AudioPlayed, Envelope, Live, NodeReady, TtsAudio
from rtchat.bus.wire import encode
from rtchat.configs.schema import AudioConfig
from rtchat.nodes.audio.core import AudioCore
from rtchat.nodes.audio.resume import (
    STATE_FILE,
    AudioState,
    Owner,
    Resume,
    StateError,
    load_resume,
    load_state,
    save_state,
)
from rtchat.nodes.audio.wavio import SessionRecorder

T0 = 1_700_000_000_000_000_000
SR = 16_000
CFG = dataclasses.replace(AudioConfig(), input="user.wav", output="none", record=True)
OWNER = Owner(run="run-1", sr_hz=SR, parent_pid=4242)


def at(t_ms: float) -> int:
    return T0 + ms(t_ms)


def user_wav(n: int, seed: int = 0) -> np.ndarray:
    """Noise with no zero sample, so silence is never mistaken for the user."""
    rng = np.random.default_rng(seed)
    return (rng.integers(500, 8000, n) * rng.choice([-1, 1], n)).astype(np.int16)


def frames_of(events) -> list[AudioIn]:
    return [e for e in events if isinstance(e, AudioIn)]


def pcm(frames: list[AudioIn]) -> np.ndarray:
    return np.concatenate([np.frombuffer(e.pcm, dtype=np.int16) for e in frames])


def run_ticks(core: AudioCore, start_ms: int, end_ms: int, step_ms: int = 20) -> list:
    out = []
    for t in range(start_ms, end_ms + 1, step_ms):
        out += core.on_tick(at(t))
    return out


def agent_piece(chunk: int, value: int, n: int = 1600) -> TtsAudio:
    return TtsAudio(turn=1, gen=0, chunk=chunk, text=f" chunk {chunk}", pcm=np.full(n, value, np.int16).tobytes(),
                    sr_hz=SR, n_samples=n, last=True)


# ---------------------------------------------------------------- a WAV input across a kill


def test_a_restarted_node_goes_on_with_the_wav_after_the_outage_on_the_same_timeline(tmp_path):
    wav = user_wav(32_000)  # 2 s of the scripted user
    path = tmp_path / "session.wav"
    saved: list[AudioState] = []
    first = AudioCore(CFG, wav=wav, recorder=SessionRecorder(path, SR), save_state=saved.append)
    first.on_tick(T0)
    first.on_event(Live(), at(100))  # the WAV starts at timeline index 1600
    first.on_event(agent_piece(0, 5000), at(200))  # the agent, 200–300 ms
    before = run_ticks(first, 120, 1600)
    assert len(frames_of(before)) == 75 and [e.chunk for e in before if isinstance(e, AudioPlayed)] == [0]
    # SIGKILL at 1.6 s: the recording was last flushed at 1 s; the bus got 73 of the 75 frames
    # (the last two were still in the dead process's socket)
    reached = frames_of(before)[:73]
    assert saved[-1] == AudioState(t0_ns=T0, stream_offset=1600, anchor_ns=at(100), anchor_pos=0)

    # restarted at 3 s: what it reads (resume.py) is the state file and the frames in the log
    resume = Resume(state=saved[-1], stream_pos=73 * 320, frames=tuple(reached[-60:]))
    saved_again: list[AudioState] = []
    second = AudioCore(CFG, wav=wav, recorder=SessionRecorder(path, SR, resume=True), resume=resume,
                       save_state=saved_again.append)
    assert second.deadline_ns() == 0
    outage = second.on_tick(at(3000))  # the outage, 23,360 → 48,000 on the timeline, is silence at once
    assert [(e.stream_pos, e.t_capture_ns) for e in frames_of(outage)] == [
        (73 * 320 + 320 * k, at(100 + 1460 + 20 * k)) for k in range(72)]
    assert not pcm(frames_of(outage)).any()
    second.on_event(agent_piece(1, -7000), at(3100))  # the agent again, 3.1–3.2 s
    after = outage + run_ticks(second, 3020, 5000)
    second.close()

    sent = reached + frames_of(after)
    assert [e.stream_pos for e in sent] == [320 * k for k in range(len(sent))]  # none twice, none skipped
    assert all(e.t_capture_ns == at(100) + e.stream_pos * 62_500 for e in sent)  # one timeline
    gap = 72 * 320
    heard = pcm(sent)
    assert (heard[: 73 * 320] == wav[: 73 * 320]).all() and not heard[73 * 320 : 73 * 320 + gap].any()
    assert (heard[73 * 320 + gap : 32_000 + gap] == wav[73 * 320 :]).all()  # every word, each once
    assert [e for e in after if isinstance(e, AudioEof)] == [AudioEof(stream_pos=32_000 + gap, reason="end of file")]
    assert [e.chunk for e in after if isinstance(e, AudioPlayed)] == [1]  # what played before does not again
    assert saved_again[0] == AudioState(t0_ns=T0, stream_offset=1600, wav_lag=gap, anchor_ns=at(3000),
                                        anchor_pos=73 * 320)
    assert saved_again[-1].eof_pos == 32_000 + gap

    x, sr = sf.read(path, dtype="int16")
    user, agent = x[:, 0], x[:, 1]
    assert sr == SR and not user[:1600].any()
    assert (user[1600 : 1600 + 73 * 320] == wav[: 73 * 320]).all()  # the unflushed part came back from the log
    assert not user[1600 + 73 * 320 : 48_000].any()  # the outage
    assert (user[48_000 : 48_000 + 32_000 - 73 * 320] == wav[73 * 320 :]).all() and not user[56_640:].any()
    assert (agent[3200:4800] == 5000).all() and (agent[49_600:51_200] == -7000).all()
    assert np.count_nonzero(agent) == 3200


def test_a_node_killed_before_the_session_went_live_waits_for_ctl_live_on_the_same_origin(tmp_path):
    wav = user_wav(640)
    path = tmp_path / "session.wav"
    saved: list[AudioState] = []
    AudioCore(CFG, wav=wav, recorder=SessionRecorder(path, SR), save_state=saved.append).on_tick(T0)
    assert saved == [AudioState(t0_ns=T0)]
    second = AudioCore(CFG, wav=wav, recorder=SessionRecorder(path, SR, resume=True),
                       resume=Resume(state=saved[0], stream_pos=0))
    assert second.on_tick(at(2000)) == [] and second.deadline_ns() == at(3000)  # only the flush: no frame before live
    second.on_event(Live(), at(2500))
    out = second.on_tick(at(2540))
    assert [(e.stream_pos, e.t_capture_ns) for e in frames_of(out)] == [(0, at(2500)), (320, at(2520))]
    second.close()
    x, _ = sf.read(path, dtype="int16")
    assert not x[:40_000, 0].any() and (x[40_000:40_640, 0] == wav).all()


def test_a_wav_that_had_ended_sends_no_second_eof_and_its_padding_goes_on_where_it_stopped():
    wav = user_wav(640)
    state = AudioState(t0_ns=T0, stream_offset=1600, anchor_ns=at(100), eof_pos=640)
    quiet = AudioCore(dataclasses.replace(CFG, record=False, pad_after_eof=False), wav=wav,
                      resume=Resume(state=state, stream_pos=640))
    assert quiet.on_tick(at(5000)) == [] and quiet.in_done and quiet.deadline_ns() == at(6000)
    padded = AudioCore(dataclasses.replace(CFG, record=False), wav=wav, resume=Resume(state=state, stream_pos=1600))
    out = padded.on_tick(at(300))  # the padding had reached stream_pos 1600 (at 200 ms); back at 300 ms
    assert [(e.stream_pos, e.t_capture_ns) for e in out] == [(1600 + 320 * k, at(200 + 20 * k)) for k in range(5)]
    assert not pcm(out).any() and not any(isinstance(e, AudioEof) for e in out)
    assert [e.stream_pos for e in padded.on_tick(at(320))] == [3200]


# ---------------------------------------------------------------- a microphone across a kill


class FakeMic:
    def __init__(self):
        self.blocks: list[tuple[np.ndarray, int]] = []

    def read(self):
        out, self.blocks = self.blocks, []
        return out

    def lost(self):
        return None

    def close(self):
        pass


def test_a_restarted_microphone_stream_goes_on_after_silence_for_the_outage():
    cfg = dataclasses.replace(CFG, input="mic", record=False)
    mic = FakeMic()
    saved: list[AudioState] = []
    first = AudioCore(cfg, mic=mic, save_state=saved.append)
    first.on_tick(T0)
    mic.blocks = [(np.full(640, 9, np.int16), at(50))]
    assert [e.stream_pos for e in first.on_tick(at(100))] == [0, 320]
    assert saved[-1].stream_offset == 800  # the first frame was captured at 50 ms

    mic = FakeMic()
    second = AudioCore(cfg, mic=mic, resume=Resume(state=saved[-1], stream_pos=640))
    assert second.on_tick(at(1000)) == []
    mic.blocks = [(np.full(320, 4, np.int16), at(1010))]  # the device's first block after the restart
    out = second.on_tick(at(1040))
    silence, spoken = out[:-1], out[-1]
    assert [e.stream_pos for e in out] == [640 + 320 * k for k in range(len(out))]
    assert not pcm(silence).any() and all(e.t_capture_ns == at(50) + e.stream_pos * 62_500 for e in silence)
    assert np.frombuffer(spoken.pcm, np.int16).max() == 4 and spoken.t_capture_ns == at(1010)
    assert 800 + spoken.stream_pos - 16_160 in range(0, 320)  # placed on the timeline within a frame of its capture


# ---------------------------------------------------------------- agent audio across a restart


def test_chunks_a_restarted_tts_was_streaming_are_reported_once_what_they_played_has_played():
    core = AudioCore(dataclasses.replace(CFG, input="none", record=False))
    core.on_tick(T0)
    half = dataclasses.replace(agent_piece(0, 100), last=False)  # 0–100 ms; the rest never comes
    core.on_event(half, at(0))
    core.on_event(agent_piece(1, 100), at(0))  # 100–200 ms, complete
    assert core.on_event(NodeReady(node="asr", pid=1, load_ns=0), at(50)) == []  # not the tts: nothing closes
    assert core.on_event(NodeReady(node="tts", pid=2, load_ns=0), at(60)) == []
    out = core.on_tick(at(300))
    assert [(e.chunk, e.text, e.start_ns, e.end_ns) for e in out] == [(0, " chunk 0", at(0), at(100)),
                                                                     (1, " chunk 1", at(100), at(200))]
    assert core.on_tick(at(400)) == [] and core.stats()["chunks_closed"] == 1


def test_a_restarted_node_takes_a_generation_above_zero_as_it_comes():
    state = AudioState(t0_ns=T0)
    core = AudioCore(dataclasses.replace(CFG, input="none", record=False), resume=Resume(state=state, stream_pos=0))
    core.on_tick(at(10_000))
    core.on_event(dataclasses.replace(agent_piece(0, 100), gen=7, turn=9), at(10_000))
    cut = core.on_event(AgentCancel(turn=9, gen=8), at(10_050))
    assert [(e.turn, e.gen, e.n_samples, e.start_ns, e.end_ns) for e in cut] == [(9, 7, 800, at(10_000), at(10_050))]
    assert core.on_event(dataclasses.replace(agent_piece(1, 100), gen=7, turn=9), at(10_060)) == []
    core.on_event(dataclasses.replace(agent_piece(2, 100), gen=8, turn=9), at(10_060))
    assert [(e.gen, e.chunk) for e in core.on_tick(at(10_200))] == [(8, 2)]


# ---------------------------------------------------------------- what a restarted node reads


def log_frames(writer: LogWriter, events, *, src="audio", session="run-1", recv_ns) -> None:
    for seq, (ev, t) in enumerate(zip(events, recv_ns, strict=True)):
        writer.append(t, encode(ev, Envelope(v=1, src=src, seq=seq, t_ns=t, session=session)))


def frame(stream_pos: int, value: int = 3) -> AudioIn:
    return AudioIn(pcm=np.full(320, value, np.int16).tobytes(), sr_hz=SR, n_samples=320, stream_pos=stream_pos,
                   t_capture_ns=T0 + stream_pos * 62_500)


def test_the_stream_goes_on_after_the_last_frame_of_this_node_and_run_in_the_log(tmp_path):
    state = AudioState(t0_ns=T0, stream_offset=0, anchor_ns=T0, anchor_pos=0)
    save_state(tmp_path, OWNER, state)
    writer = LogWriter(tmp_path / "events.rtlog", {"run": "run-1"})
    now = T0 + s(60)
    log_frames(writer, [frame(320 * k) for k in range(100)], recv_ns=[now - s(25) + ms(20 * k) for k in range(100)])
    log_frames(writer, [frame(64_000, 1)], src="web", recv_ns=[now - s(20)])  # the web page's stream, not ours
    log_frames(writer, [frame(96_000, 2)], session="run-0", recv_ns=[now - s(20)])  # another run's
    writer.close()
    resume = load_resume(tmp_path, OWNER, now)  # the last frame is older than the first window: read further
    assert resume.state == state and resume.stream_pos == 32_000
    assert [f.stream_pos for f in resume.frames][-1] == 320 * 99 and all(f.pcm[0] == 3 for f in resume.frames)
    assert len(resume.frames) == 100  # with the frames before it that the recording may have lost


def test_without_a_log_the_stream_goes_on_where_the_state_last_stood(tmp_path):
    save_state(tmp_path, OWNER, AudioState(t0_ns=T0, stream_offset=0, anchor_ns=T0, anchor_pos=4800, eof_pos=6400))
    resume = load_resume(tmp_path, OWNER, T0 + s(5))
    assert (resume.stream_pos, resume.frames) == (6400, ())


def test_only_the_same_sessions_state_is_taken_over_and_a_damaged_one_is_refused(tmp_path):
    assert load_resume(tmp_path, OWNER, T0) is None  # a first start
    save_state(tmp_path, OWNER, AudioState(t0_ns=T0))
    assert load_state(tmp_path, OWNER) == AudioState(t0_ns=T0)
    assert load_state(tmp_path, dataclasses.replace(OWNER, run="run-2")) is None
    assert load_state(tmp_path, dataclasses.replace(OWNER, sr_hz=48_000)) is None
    assert load_state(tmp_path, dataclasses.replace(OWNER, parent_pid=4343)) is None  # a new launcher reusing the id
    body = json.loads((tmp_path / STATE_FILE).read_text())
    (tmp_path / STATE_FILE).write_text(json.dumps(body | {"t0_ns": "soon"}))
    with pytest.raises(StateError, match=r"audio.state.json: not an audio node state .*remove it"):
        load_state(tmp_path, OWNER)
    (tmp_path / STATE_FILE).write_text('{"run": "run-1", "sr_')
    with pytest.raises(StateError, match=r"audio.state.json: cannot read the audio node's state"):
        load_state(tmp_path, OWNER)
