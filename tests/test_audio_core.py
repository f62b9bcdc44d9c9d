"""The audio core on virtual time: input pacing, the output timeline, barge-in cuts, the recording."""

from __future__ import annotations

import dataclasses

import numpy as np
import soundfile as sf

from rtchat.bus.clock import ms
from rtchat.bus.events import AgentCancel, AudioEof, AudioIn, AudioPlayed, Live, Reset, TtsAudio
from rtchat.configs.schema import AudioConfig
from rtchat.nodes.audio.core import FAST_BATCH_FRAMES, AudioCore, join_text
from rtchat.nodes.audio.wavio import SessionRecorder

T0 = 1_700_000_000_000_000_000
SR = 16_000
CFG = dataclasses.replace(AudioConfig(), input="none", output="none", record=False)


def at(t_ms: float) -> int:
    return T0 + ms(t_ms)


def piece(n: int, *, turn=1, gen=0, chunk=0, text="", last=True, sr_hz=SR, value=1000) -> TtsAudio:
    pcm = np.full(n, value, dtype=np.int16).tobytes()
    return TtsAudio(turn=turn, gen=gen, chunk=chunk, text=text, pcm=pcm, sr_hz=sr_hz, n_samples=n, last=last)


def played(events) -> list[AudioPlayed]:
    return [e for e in events if isinstance(e, AudioPlayed)]


class FakeSpeaker:
    def __init__(self):
        self.fifo: list[np.ndarray] = []
        self.clears = 0
        self.why: str | None = None
        self.closed = False

    def write(self, samples):
        self.fifo.append(samples)

    def clear(self):
        self.fifo.clear()
        self.clears += 1

    def lost(self):
        return self.why

    def underruns(self):
        return 0

    def close(self):
        self.closed = True


class FakeMic:
    def __init__(self):
        self.blocks: list[tuple[np.ndarray, int]] = []
        self.why: str | None = None

    def read(self):
        out, self.blocks = self.blocks, []
        return out

    def lost(self):
        return self.why

    def close(self):
        pass


def started(core: AudioCore, t_ns: int = T0) -> AudioCore:
    assert core.deadline_ns() == 0  # the first tick comes at once and fixes the origin
    core.on_tick(t_ns)
    return core


# ---------------------------------------------------------------- input


def test_a_wav_is_paced_in_real_time_with_exact_positions_then_eof():
    wav = np.arange(1000, dtype=np.int16)
    core = AudioCore(dataclasses.replace(CFG, input="user.wav", pad_after_eof=False), wav=wav)
    assert core.on_tick(T0) == [] and core.on_event(Live(), T0) == []
    assert core.on_tick(T0) == []  # a frame goes out once all of it has been "captured"
    assert core.deadline_ns() == at(20)
    assert core.on_tick(at(19.9)) == []
    out = core.on_tick(at(20))
    assert [(e.stream_pos, e.n_samples, e.t_capture_ns) for e in out] == [(0, 320, T0)]
    assert core.deadline_ns() == at(40)
    out = core.on_tick(at(40))
    assert [(e.stream_pos, e.t_capture_ns) for e in out] == [(320, at(20))]
    assert core.deadline_ns() == at(60)
    out = core.on_tick(at(62.5))  # late tick for frame 2 (due at 60 ms); the short last frame ends at 62.5 ms
    assert [type(e) for e in out] == [AudioIn, AudioIn, AudioEof]
    assert [(e.stream_pos, e.n_samples, e.t_capture_ns) for e in out[:2]] == [(640, 320, at(40)), (960, 40, at(60))]
    assert out[2] == AudioEof(stream_pos=1000, reason="end of file")
    sent = np.concatenate([np.frombuffer(e.pcm, dtype=np.int16) for e in out[:2]])
    assert (sent == wav[640:]).all()
    assert core.on_tick(at(200)) == [] and core.stats()["frames_in"] == 4


def test_a_wav_waits_for_the_session_to_be_live_and_starts_there_on_the_timeline(tmp_path):
    rec = SessionRecorder(tmp_path / "session.wav", SR)
    wav = np.full(640, 1000, dtype=np.int16)
    core = AudioCore(dataclasses.replace(CFG, input="user.wav", record=True), wav=wav, recorder=rec)
    assert core.on_tick(T0) == []
    assert core.deadline_ns() == at(1000)  # only the recording's flush: no frame is due before ctl.live
    assert core.on_tick(at(500)) == []
    core.on_event(Live(run="r"), at(500))
    core.on_event(Live(run="r"), at(510))  # a second ctl.live (a node restarted) changes nothing
    assert core.deadline_ns() == at(520)
    out = core.on_tick(at(540))
    assert [(e.stream_pos, e.t_capture_ns) for e in out if isinstance(e, AudioIn)] == [(0, at(500)), (320, at(520))]
    assert isinstance(out[-1], AudioEof)
    core.close()
    x, _ = sf.read(tmp_path / "session.wav", dtype="int16")
    assert (x[:8000, 0] == 0).all() and (x[8000:8640, 0] == 1000).all()


def test_after_a_wav_ends_silence_frames_follow_as_from_a_microphone():
    core = AudioCore(dataclasses.replace(CFG, input="user.wav"), wav=np.full(400, 7, np.int16))
    core.on_event(Live(), T0)
    out = core.on_tick(at(25))  # the file: a 320-sample frame and an 80-sample one (ends at 25 ms), then eof
    assert [type(e) for e in out] == [AudioIn, AudioIn, AudioEof]
    assert core.deadline_ns() == at(45)  # the next (silent) frame, 20 ms later
    out = core.on_tick(at(65))
    assert [(e.stream_pos, e.n_samples, e.t_capture_ns) for e in out] == [(400, 320, at(25)), (720, 320, at(45))]
    assert all(np.frombuffer(e.pcm, np.int16).max() == 0 for e in out) and not any(isinstance(e, AudioEof) for e in out)


def test_a_wav_as_fast_as_possible_goes_out_in_bounded_batches_with_capture_times_on_the_timeline():
    n_frames = 2 * FAST_BATCH_FRAMES + 10
    core = AudioCore(dataclasses.replace(CFG, input="user.wav", realtime=False), wav=np.zeros(320 * n_frames, np.int16))
    core.on_event(Live(), T0)
    first = core.on_tick(T0)
    assert len(first) == FAST_BATCH_FRAMES and first[-1].t_capture_ns == at(20 * (FAST_BATCH_FRAMES - 1))
    assert core.deadline_ns() == at(1)  # soon, but after the bus has been read
    rest = core.on_tick(at(1)) + core.on_tick(at(2))
    assert [type(e) for e in rest[-2:]] == [AudioIn, AudioEof]
    assert [e.stream_pos for e in first + rest[:-1]] == [320 * k for k in range(n_frames)]


def test_microphone_blocks_become_frames_and_a_lost_device_ends_the_input():
    mic = FakeMic()
    core = started(AudioCore(dataclasses.replace(CFG, input="mic"), mic=mic))
    assert core.deadline_ns() == at(20)  # the queue is drained every frame
    mic.blocks = [(np.ones(480, np.int16), at(5)), (np.ones(480, np.int16), at(35))]
    out = core.on_tick(at(40))
    assert [(e.stream_pos, e.t_capture_ns) for e in out] == [(0, at(5)), (320, at(25)), (640, at(45))]
    mic.why = "device lost: the input stream stopped"
    out = core.on_tick(at(60))
    assert out == [AudioEof(stream_pos=960, reason="device lost: the input stream stopped")]
    assert core.stats()["input_lost"] == 1
    assert core.on_tick(at(80)) == []  # the node goes on: output still works
    core.on_event(piece(160, last=True), at(80))
    assert len(played(core.on_tick(at(90)))) == 1


# ---------------------------------------------------------------- output timeline


def test_pieces_play_back_to_back_and_each_chunk_is_reported_once_when_it_ends():
    core = started(AudioCore(CFG))
    core.on_event(piece(1600, chunk=0, text=" Hello", last=False), at(10))  # 100 ms from 10 ms
    core.on_event(piece(800, chunk=0, text=" there.", last=True), at(20))  # after it: 110–160 ms
    core.on_event(piece(1600, chunk=1, text=" How are you?"), at(30))  # 160–260 ms
    assert core.deadline_ns() == at(160)
    assert core.on_tick(at(159)) == []
    out = core.on_tick(at(160))
    assert out == [AudioPlayed(turn=1, gen=0, chunk=0, text=" Hello there.", start_ns=at(10), end_ns=at(160),
                               stream_pos=160, n_samples=2400, sr_hz=SR)]
    assert core.deadline_ns() == at(260)
    out = core.on_tick(at(300))
    assert [(e.chunk, e.start_ns, e.end_ns, e.stream_pos, e.n_samples) for e in out] == [(1, at(160), at(260), 2560, 1600)]
    assert core.on_tick(at(400)) == []
    assert core.stats()["chunks_played"] == 2


def test_a_chunk_is_reported_only_after_its_last_piece_arrived():
    core = started(AudioCore(CFG))
    core.on_event(piece(320, chunk=0, text="Hi", last=False), at(0))
    assert core.on_tick(at(100)) == []  # its audio ended, but more of it may come
    out = core.on_event(piece(320, chunk=0, text="there", last=True), at(100))
    assert out == [] and core.stats()["underruns"] == 1
    out = core.on_tick(at(120))
    assert [(e.text, e.start_ns, e.end_ns, e.n_samples) for e in out] == [("Hi there", at(0), at(120), 640)]


def test_cancel_cuts_the_playing_chunk_drops_stale_pieces_and_ignores_late_ones():
    speaker = FakeSpeaker()
    core = started(AudioCore(CFG, speaker=speaker))
    core.on_event(piece(16_000, gen=3, chunk=0, text=" One two"), at(0))  # 0–1000 ms
    core.on_event(piece(8000, gen=3, chunk=1, text=" three"), at(0))  # 1000–1500 ms
    assert len(speaker.fifo) == 2
    out = core.on_event(AgentCancel(turn=1, gen=4), at(300))
    assert out == [AudioPlayed(turn=1, gen=3, chunk=0, text=" One two", start_ns=at(0), end_ns=at(300),
                               stream_pos=0, n_samples=4800, sr_hz=SR)]
    assert speaker.clears == 1 and speaker.fifo == []
    assert core.on_event(piece(800, gen=3, chunk=2, text=" four"), at(310)) == []  # stale: ignored
    core.on_event(piece(800, gen=4, chunk=0, text=" Sorry?"), at(320))  # plays now, not after the old queue
    assert core.deadline_ns() == at(370)
    out = core.on_tick(at(2000))
    assert [(e.gen, e.text, e.start_ns, e.end_ns) for e in out] == [(4, " Sorry?", at(320), at(370))]
    stats = core.stats()
    assert (stats["chunks_cut"], stats["chunks_dropped"], stats["pieces_dropped_stale"]) == (1, 1, 2)


def test_cancel_moves_newer_pieces_up_to_close_the_gap():
    speaker = FakeSpeaker()
    core = started(AudioCore(CFG, speaker=speaker))
    core.on_event(piece(1600, gen=0, chunk=0), at(0))  # 0–100 ms
    core.on_event(piece(1600, gen=0, chunk=1), at(0))  # 100–200 ms, stale after the cancel
    core.on_event(piece(1600, gen=1, chunk=0, text="new"), at(0))  # 200–300 ms, kept
    out = core.on_event(AgentCancel(turn=1, gen=1), at(50))
    assert [(e.gen, e.chunk, e.n_samples, e.end_ns) for e in out] == [(0, 0, 800, at(50))]
    assert [len(x) for x in speaker.fifo] == [1600]  # the kept piece, rewritten after the clear
    out = core.on_tick(at(150))
    assert [(e.gen, e.text, e.start_ns, e.end_ns) for e in out] == [(1, "new", at(50), at(150))]


def test_reset_drops_all_agent_audio():
    core = started(AudioCore(CFG))
    core.on_event(piece(1600, gen=0, chunk=0, text="a"), at(0))
    core.on_event(piece(1600, gen=0, chunk=1, text="b"), at(0))
    out = core.on_event(Reset(reason="new conversation"), at(0))
    assert out == [] and core.stats()["chunks_dropped"] == 2
    assert core.on_tick(at(500)) == [] and core.stats()["queued_ms"] == 0


def test_engine_audio_at_22050_hz_is_resampled_keeping_its_duration():
    core = started(AudioCore(CFG))
    for i, n in enumerate((7000, 7000, 8050)):  # 1 s at 22050 Hz in three pieces
        core.on_event(piece(n, sr_hz=22_050, last=i == 2, value=8000), at(0))
    out = core.on_tick(at(2000))
    assert len(out) == 1 and abs(out[0].n_samples - SR) <= 2
    assert abs(out[0].end_ns - at(1000)) <= ms(0.2)


def test_malformed_pieces_are_counted_and_dropped():
    core = started(AudioCore(CFG))
    bad = TtsAudio(turn=1, gen=0, chunk=0, text="x", pcm=b"\x00" * 11, sr_hz=SR, n_samples=5, last=True)
    assert core.on_event(bad, at(0)) == [] and core.stats()["bad_pieces"] == 1
    assert core.on_event(piece(10, sr_hz=1000), at(0)) == [] and core.stats()["bad_pieces"] == 2


def test_a_lost_speaker_leaves_the_timeline_running_virtually():
    speaker = FakeSpeaker()
    core = started(AudioCore(CFG, speaker=speaker))
    core.on_event(piece(1600, chunk=0), at(0))
    speaker.why = "device lost: the output stream stopped"
    assert core.on_tick(at(50)) == [] and core.stats()["output_lost"] == 1
    core.on_event(piece(1600, chunk=1), at(60))
    assert len(speaker.fifo) == 1  # nothing more written to the lost device
    out = core.on_tick(at(300))
    assert [(e.chunk, e.end_ns) for e in out] == [(0, at(100)), (1, at(200))]
    core.close()
    assert speaker.closed


def test_join_text_adds_a_space_only_where_words_would_touch():
    assert join_text([" Hello", " there."]) == " Hello there."
    assert join_text(["Hello", "there", "", " now"]) == "Hello there now"


# ---------------------------------------------------------------- the recording


def test_the_recording_has_the_user_left_and_what_really_played_right_on_one_timeline(tmp_path):
    rng = np.random.default_rng(0)
    wav = rng.integers(-3000, 3000, 1600, dtype=np.int16)  # 100 ms of user audio
    rec = SessionRecorder(tmp_path / "session.wav", SR)
    core = AudioCore(dataclasses.replace(CFG, input="user.wav", record=True), wav=wav, recorder=rec)
    core.on_tick(T0)
    core.on_event(Live(), T0)
    agent = rng.integers(-3000, 3000, 3200, dtype=np.int16)  # 200 ms, cut after 150 ms
    ev = TtsAudio(turn=1, gen=0, chunk=0, text="hi", pcm=agent.tobytes(), sr_hz=SR, n_samples=3200, last=True)
    core.on_event(ev, at(40))
    for t in range(20, 200, 20):
        core.on_tick(at(t))
    cut = played(core.on_event(AgentCancel(turn=1, gen=1), at(190)))
    assert [(e.stream_pos, e.n_samples) for e in cut] == [(640, 2400)]
    core.on_tick(at(1500))  # a flush happens meanwhile
    core.close()
    x, sr = sf.read(tmp_path / "session.wav", dtype="int16")
    assert sr == SR and x.ndim == 2 and x.shape[1] == 2
    assert (x[:1600, 0] == wav).all() and (x[1600:, 0] == 0).all()
    assert (x[:640, 1] == 0).all() and (x[640:3040, 1] == agent[:2400]).all() and (x[3040:, 1] == 0).all()


def test_browser_frames_are_recorded_at_their_capture_time(tmp_path):
    rec = SessionRecorder(tmp_path / "session.wav", SR)
    core = AudioCore(dataclasses.replace(CFG, input="browser", record=True), recorder=rec)
    assert "audio.in" in core.topics and "audio.in" not in AudioCore.topics
    started(core)
    for k in range(3):  # the page's stream began 100 ms after the origin, at 48 kHz stereo
        pcm = np.full((960, 2), 4000, dtype=np.int16)
        core.on_event(AudioIn(pcm=pcm.tobytes(), sr_hz=48_000, n_samples=960, stream_pos=960 * k,
                              t_capture_ns=at(100 + 20 * k)), at(130 + 20 * k))
    odd = AudioIn(pcm=bytes(7), sr_hz=48_000, n_samples=3, stream_pos=2880, t_capture_ns=at(160))
    assert core.on_event(odd, at(170)) == [] and core.stats()["bad_frames"] == 1
    core.close()
    x, _ = sf.read(tmp_path / "session.wav", dtype="int16")
    assert core.stats()["frames_recorded"] == 3
    voiced = np.flatnonzero(np.abs(x[:, 0]) > 2000)
    assert abs(voiced[0] - 1600) <= 16 and abs(voiced[-1] - 2560) <= 16
    assert (x[:, 1] == 0).all()
