"""The audio node's shell: device choice and loss through a fake sounddevice module (this machine
has no audio devices), the real PortAudio with no devices, and the node as a real process on a
real bus playing an espeak-ng WAV as the user."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import zmq
from conftest import missing_install
from nodeproc import reap, stop

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock, ms
from rtchat.bus.core import StartError
from rtchat.bus.events import AudioEof, AudioIn, AudioPlayed, Live, NodeError, NodeLoading, NodeReady, TtsAudio
from rtchat.configs import load
from rtchat.nodes.audio.devices import NO_PORTAUDIO
from rtchat.nodes.audio.node import make_core
from rtchat.nodes.audio.wavio import read_wav

T0 = 1_700_000_000_000_000_000


class FakeStatus:
    input_overflow = False
    output_underflow = False


class FakeStream:
    def __init__(self, sd, kind, *, device, samplerate, channels, dtype, callback, finished_callback, blocksize=0):
        self.kind, self.device, self.samplerate, self.channels, self.dtype = kind, device, samplerate, channels, dtype
        self.callback, self.finished_callback = callback, finished_callback
        self.active = False
        self.closed = False
        sd.streams.append(self)

    def start(self):
        self.active = True

    def close(self):
        self.active, self.closed = False, True

    def unplug(self):  # what PortAudio does when the device goes away: the stream stops itself
        self.active = False
        self.finished_callback()


class FakeSounddevice:
    """The part of sounddevice the node uses, over a fixed device list."""

    class PortAudioError(Exception):
        pass

    def __init__(self, devices: list[dict]):
        self.devices = [dict(d, index=i) for i, d in enumerate(devices)]
        self.streams: list[FakeStream] = []

    def query_devices(self, device=None, kind=None):
        if kind is None:
            return self.devices
        channels = f"max_{kind}_channels"
        if device is None:
            found = [d for d in self.devices if d[channels] > 0][:1]
            if not found:
                raise self.PortAudioError("Error querying device -1")
            return found[0]
        if isinstance(device, int):
            if device >= len(self.devices):
                raise self.PortAudioError(f"Error querying device {device}")
            return self.devices[device]
        found = [d for d in self.devices if device.lower() in d["name"].lower()]
        if len(found) != 1:
            raise ValueError(f"No {kind} device matching {device!r}")
        return found[0]

    def InputStream(self, **kw):  # noqa: N802 - sounddevice's name
        return FakeStream(self, "input", **kw)

    def OutputStream(self, **kw):  # noqa: N802
        return FakeStream(self, "output", **kw)


SPEAKER_ONLY = [{"name": "HDA Intel PCH: ALC892 Analog", "max_input_channels": 0, "max_output_channels": 2}]
HEADSET = [{"name": "USB Headset", "max_input_channels": 1, "max_output_channels": 2}]


@pytest.fixture
def fake_sd(monkeypatch):
    def install(devices):
        sd = FakeSounddevice(devices)
        monkeypatch.setitem(sys.modules, "sounddevice", sd)
        return sd

    return install


def build(tmp_path, *overrides, notes=None):
    cfg = load("cpu", ["audio.record=false", *overrides])
    return make_core(cfg, tmp_path, lambda stage, fraction=None: notes.append(stage) if notes is not None else None)


# ---------------------------------------------------------------- choosing devices


def test_input_mic_without_a_microphone_stops_the_node_listing_the_devices(fake_sd, tmp_path):
    fake_sd(SPEAKER_ONLY)
    with pytest.raises(StartError, match=r"audio.input=mic: no default input device found; "
                                         r"devices: 0: HDA Intel PCH: ALC892 Analog \(0 in, 2 out\); set audio.input_device"):
        build(tmp_path, "audio.input=mic", "audio.output=none")
    with pytest.raises(StartError, match=r"no input device 'Blue Yeti' found"):
        build(tmp_path, "audio.input=mic", "audio.input_device=Blue Yeti", "audio.output=none")


def test_this_machines_real_portaudio_with_no_devices(tmp_path):
    try:
        import sounddevice
    except OSError:
        missing_install("libportaudio2 is not installed here (the fake-module tests cover that case)")
    if len(sounddevice.query_devices()):
        pytest.skip("this machine has audio devices (the fake-module tests cover the no-device message)")
    with pytest.raises(StartError, match=r"audio.input=mic: no default input device found; devices: none"):
        build(tmp_path, "audio.input=mic", "audio.output=none")
    with pytest.raises(StartError, match=r"audio.output=speaker: no default output device found; devices: none"):
        build(tmp_path, "audio.input=none", "audio.output=speaker")


def test_auto_without_devices_falls_back_to_none_and_says_so(fake_sd, tmp_path):
    fake_sd([])
    notes = []
    core = build(tmp_path, "audio.input=auto", "audio.output=auto", notes=notes)
    assert core.mic is None and core.speaker is None and core.in_done
    assert notes == ["input: no microphone: no default input device found; devices: none; typed input only",
                     "output: no speaker: no default output device found; devices: none; agent audio runs on virtual time"]


def test_auto_opens_the_default_devices(fake_sd, tmp_path):
    sd = fake_sd(HEADSET)
    core = build(tmp_path, "audio.input=auto", "audio.output=auto")
    assert core.mic is not None and core.speaker is not None
    assert [(s.kind, s.device, s.samplerate, s.channels, s.dtype) for s in sd.streams] == [
        ("input", 0, 16000, 1, "int16"), ("output", 0, 16000, 1, "int16")]
    assert all(s.active for s in sd.streams)
    core.close()
    assert all(s.closed for s in sd.streams)


class _NoPortAudio(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import sounddevice`` fail the way it does without libportaudio2."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "sounddevice" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("PortAudio library not found")


def test_without_portaudio_mic_is_a_clear_start_error_and_auto_is_none(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(StartError, match=NO_PORTAUDIO):
        build(tmp_path, "audio.input=mic", "audio.output=none")
    notes = []
    core = build(tmp_path, "audio.input=auto", "audio.output=none", notes=notes)
    assert core.mic is None and notes[0].startswith(f"input: no microphone: {NO_PORTAUDIO}")


def test_a_wav_that_cannot_be_read_is_a_start_error_naming_it(tmp_path):
    bad = tmp_path / "user.mp3"
    bad.write_bytes(b"ID3" + bytes(100))
    with pytest.raises(StartError, match=r"user\.mp3: not a readable audio file.*allowed: a WAV file"):
        build(tmp_path, f"audio.input={bad}", "audio.output=none")


# ---------------------------------------------------------------- devices at run time


def test_the_microphone_delivers_frames_and_its_loss_ends_the_input_while_the_node_goes_on(fake_sd, tmp_path):
    sd = fake_sd(HEADSET)
    core = build(tmp_path, "audio.input=mic", "audio.output=none")
    mic_stream = sd.streams[0]
    assert core.on_tick(T0) == []
    block = np.arange(320, dtype=np.int16).reshape(-1, 1)
    mic_stream.callback(block, 320, None, FakeStatus())
    mic_stream.callback(block, 320, None, FakeStatus())
    out = core.on_tick(T0 + ms(40))
    assert [(type(e), e.stream_pos) for e in out] == [(AudioIn, 0), (AudioIn, 320)]
    assert np.frombuffer(out[1].pcm, dtype=np.int16).tolist() == list(range(320))
    mic_stream.unplug()
    out = core.on_tick(T0 + ms(60))
    assert out == [AudioEof(stream_pos=640, reason="device lost: the input stream stopped")]
    core.on_event(TtsAudio(turn=1, gen=0, chunk=0, text="still here", pcm=bytes(640), sr_hz=16000,
                           n_samples=320, last=True), T0 + ms(60))
    out = core.on_tick(T0 + ms(100))
    assert [(type(e), e.text) for e in out] == [(AudioPlayed, "still here")]
    core.close()


def test_the_speaker_plays_scheduled_audio_then_silence_and_its_loss_falls_back_to_virtual_time(fake_sd, tmp_path):
    sd = fake_sd(HEADSET)
    core = build(tmp_path, "audio.input=none", "audio.output=speaker")
    out_stream = sd.streams[0]
    core.on_tick(T0)
    pcm = np.arange(1, 201, dtype=np.int16)
    core.on_event(TtsAudio(turn=1, gen=0, chunk=0, text="a", pcm=pcm.tobytes(), sr_hz=16000, n_samples=200,
                           last=True), T0)
    buf = np.full((128, 1), -1, dtype=np.int16)
    out_stream.callback(buf, 128, None, FakeStatus())
    assert buf[:, 0].tolist() == list(range(1, 129))
    out_stream.callback(buf, 128, None, FakeStatus())
    assert buf[:72, 0].tolist() == list(range(129, 201)) and (buf[72:] == 0).all()
    out_stream.unplug()
    assert core.on_tick(T0 + ms(5)) == [] and core.stats()["output_lost"] == 1
    assert [e.end_ns for e in core.on_tick(T0 + ms(20))] == [T0 + ms(12.5)]
    core.close()
    assert out_stream.closed


# ---------------------------------------------------------------- the node as a process


def receive_until(probe, got, proc, done, what, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline and proc.poll() is None, f"no {what} from the audio node"
        if probe.data.poll(200, zmq.POLLIN):
            got.append(probe.decode(probe.data.recv_multipart()).event)


@pytest.mark.slow
def test_the_node_process_plays_a_wav_as_the_user_reports_played_audio_and_records_the_session(real_bus, tmp_path):
    from rtchat.nodes.tts.espeak import synthesize

    speech, speech_sr = synthesize("Hello there.")
    user_wav = tmp_path / "user.wav"
    sf.write(user_wav, speech, speech_sr, subtype="PCM_16")
    expected = read_wav(user_wav, 16000)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtchat.nodes.audio", "--config", "cpu", "--run-dir", str(run_dir),
         f"bus.pub_endpoint={real_bus.pub_endpoint}", f"bus.sub_endpoint={real_bus.sub_endpoint}",
         "bus.heartbeat_interval_s=0.5", f"audio.input={user_wav}", "audio.output=none"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    probe = BusClient(real_bus, src="test", session="t", clock=Clock(), topics=("node.", "audio."))
    try:
        probe.handshake(int(5e9))
        got = []
        receive_until(probe, got, proc, lambda g: any(isinstance(e, NodeReady) for e in g), "node.ready")
        live_ns = time.time_ns()
        probe.publish(Live(run="t"))
        receive_until(probe, got, proc, lambda g: any(isinstance(e, AudioEof) for e in g), "audio.eof")
        assert any(isinstance(e, NodeReady) and e.node == "audio" for e in got)
        assert any(isinstance(e, NodeLoading) and e.stage.startswith("input: ") and "user.wav" in e.stage for e in got)
        frames = [e for e in got if isinstance(e, AudioIn)]
        assert [e.stream_pos for e in frames] == list(range(0, len(expected), 320))
        assert all(e.t_capture_ns - frames[0].t_capture_ns == k * ms(20) for k, e in enumerate(frames))
        assert frames[0].t_capture_ns >= live_ns  # the WAV waited for the session to be live
        assert (np.concatenate([np.frombuffer(e.pcm, dtype=np.int16) for e in frames]) == expected).all()
        eof = next(e for e in got if isinstance(e, AudioEof))
        assert eof == AudioEof(stream_pos=len(expected), reason="end of file")

        agent_sr = 22050
        tone = (0.5 * 32767 * np.sin(2 * np.pi * 300 * np.arange(agent_sr * 3 // 10) / agent_sr)).astype(np.int16)
        probe.publish(TtsAudio(turn=1, gen=0, chunk=0, text=" Hi!", pcm=tone.tobytes(), sr_hz=agent_sr,
                               n_samples=len(tone), last=True))
        receive_until(probe, got, proc, lambda g: any(isinstance(e, AudioPlayed) for e in g), "audio.played")
        played = next(e for e in got if isinstance(e, AudioPlayed))
        assert (played.turn, played.gen, played.chunk, played.text, played.sr_hz) == (1, 0, 0, " Hi!", 16000)
        assert abs(played.n_samples - 4800) <= 2 and played.end_ns - played.start_ns == played.n_samples * 62_500
        assert played.stream_pos > len(expected)  # it played after the user's audio, on the same timeline
        assert not [e for e in got if isinstance(e, NodeError)]
        stop(probe, proc)
    finally:
        reap(probe, proc)
    x, sr = sf.read(run_dir / "session.wav", dtype="int16")
    assert sr == 16000 and x.ndim == 2 and x.shape[1] == 2
    # the WAV started at ctl.live, some time after the origin: find that place in the recording
    off = int(np.flatnonzero(x[:, 0])[0]) - int(np.flatnonzero(expected)[0])
    assert off > 0
    assert (x[off : off + len(expected), 0] == expected).all() and (x[off + len(expected) :, 0] == 0).all()
    assert (x[:off, 0] == 0).all()
    loud = np.flatnonzero(np.abs(x[:, 1]) > 3000)
    assert abs(loud[0] - played.stream_pos) <= 20 and abs(loud[-1] - (played.stream_pos + played.n_samples)) <= 20
