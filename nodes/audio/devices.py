"""The microphone and the speaker through sounddevice (PortAudio): the audio node's shell side.

``open_input`` / ``open_output`` turn ``audio.input`` / ``audio.output`` into a live source or
sink, or None: ``auto`` falls back to none when there is no device (or no PortAudio) and says
why; ``mic`` / ``speaker`` raise ``DeviceError`` naming the devices that were found.

``MicSource``: PortAudio's callback thread puts each block (one ``frame_ms`` frame) with its
capture time on a thread-safe queue; the core drains it on its ticks. ``SpeakerSink``: the core
writes scheduled samples into a FIFO that the output callback pulls from, silence when empty.
A stream that stops on its own (the device unplugged, a host error) makes ``lost()`` return
``"device lost: …"``; the core then ends the input with ``audio.eof`` or goes on with the
output on virtual time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque

import numpy as np

from rtchat.bus.clock import Clock

log = logging.getLogger(__name__)

NS = 1_000_000_000
NO_PORTAUDIO = "PortAudio library not found: apt-get install libportaudio2"


class DeviceError(RuntimeError):
    """An audio device that was asked for cannot be opened; the message lists what exists."""


def load_sounddevice():
    """The sounddevice module, or DeviceError when PortAudio is missing."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise DeviceError(f"{NO_PORTAUDIO} ({exc})") from exc
    return sounddevice


def describe_devices(sd) -> str:
    """One line per device PortAudio knows, or "none"."""
    try:
        devices = list(sd.query_devices())
    except sd.PortAudioError as exc:
        return f"none (PortAudio: {exc})"
    lines = [f"{i}: {d['name']} ({d['max_input_channels']} in, {d['max_output_channels']} out)"
             for i, d in enumerate(devices)]
    return "; ".join(lines) or "none"


def find_device(sd, kind: str, device: str) -> int | None:
    """The index of the ``kind`` ("input"/"output") device named by ``device`` (a name part or an
    index; "" = the system default), or None when there is no such device."""
    wanted: int | str | None = int(device) if device.strip().isdigit() else (device or None)
    try:
        info = sd.query_devices(wanted, kind=kind)
    except (sd.PortAudioError, ValueError):
        return None
    channels = info["max_input_channels"] if kind == "input" else info["max_output_channels"]
    return info["index"] if channels > 0 else None


def _resolve(mode: str, strict_mode: str, kind: str, device: str):
    """(sd, index) for a device to open, or (None, why there is none) when mode is auto."""
    what = "microphone" if kind == "input" else "speaker"
    try:
        sd = load_sounddevice()
    except DeviceError as exc:
        if mode == strict_mode:
            raise
        return None, f"no {what}: {exc}"
    index = find_device(sd, kind, device)
    if index is not None:
        return sd, index
    name = f"{kind} device {device!r}" if device else f"default {kind} device"
    message = f"no {name} found; devices: {describe_devices(sd)}"
    if mode == strict_mode:
        key = "audio.input_device" if kind == "input" else "audio.output_device"
        raise DeviceError(f"audio.{kind}={strict_mode}: {message}; set {key} to one of them, or audio.{kind}=none")
    return None, f"no {what}: {message}"


class MicSource:
    """The microphone as the core's InputSource."""

    def __init__(self, sd, device: int, sr_hz: int, frame_n: int, clock: Clock):
        self.sr, self.clock = sr_hz, clock
        self.blocks: queue.SimpleQueue[tuple[np.ndarray, int]] = queue.SimpleQueue()
        self.overflows = 0
        self.closing = False
        self._lost: str | None = None
        self.stream = sd.InputStream(device=device, samplerate=sr_hz, channels=1, dtype="int16", blocksize=frame_n,
                                     callback=self._callback, finished_callback=self._finished)
        self.stream.start()

    def _callback(self, indata, frames, time_info, status) -> None:
        t_first = self.clock.now_ns() - frames * NS // self.sr  # the block's first sample, ~one block ago
        if status.input_overflow:
            self.overflows += 1
        self.blocks.put((indata[:, 0].copy(), t_first))

    def _finished(self) -> None:
        if not self.closing:
            self._lost = "device lost: the input stream stopped"

    def read(self) -> list[tuple[np.ndarray, int]]:
        out = []
        while True:
            try:
                out.append(self.blocks.get_nowait())
            except queue.Empty:
                return out

    def lost(self) -> str | None:
        if self._lost is None and not self.closing and not self.stream.active:
            self._lost = "device lost: the input stream is no longer active"
        return self._lost

    def close(self) -> None:
        self.closing = True
        self.stream.close()


class SpeakerSink:
    """The speaker as the core's OutputSink: a FIFO the output callback pulls from."""

    def __init__(self, sd, device: int, sr_hz: int):
        self.lock = threading.Lock()
        self.fifo: deque[np.ndarray] = deque()
        self._underruns = 0
        self.closing = False
        self._lost: str | None = None
        self.stream = sd.OutputStream(device=device, samplerate=sr_hz, channels=1, dtype="int16",
                                      callback=self._callback, finished_callback=self._finished)
        self.stream.start()

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self._underruns += 1
        filled = 0
        with self.lock:
            while filled < frames and self.fifo:
                block = self.fifo[0]
                take = min(len(block), frames - filled)
                outdata[filled : filled + take, 0] = block[:take]
                if take == len(block):
                    self.fifo.popleft()
                else:
                    self.fifo[0] = block[take:]
                filled += take
        outdata[filled:] = 0

    def _finished(self) -> None:
        if not self.closing:
            self._lost = "device lost: the output stream stopped"

    def write(self, samples: np.ndarray) -> None:
        with self.lock:
            self.fifo.append(samples)

    def clear(self) -> None:
        with self.lock:
            self.fifo.clear()

    def lost(self) -> str | None:
        if self._lost is None and not self.closing and not self.stream.active:
            self._lost = "device lost: the output stream is no longer active"
        return self._lost

    def underruns(self) -> int:
        return self._underruns

    def close(self) -> None:
        self.closing = True
        self.stream.close()


def open_input(mode: str, device: str, sr_hz: int, frame_n: int, clock: Clock) -> tuple[MicSource | None, str]:
    """audio.input auto|mic → (the microphone or None, what was chosen and why)."""
    sd, found = _resolve(mode, "mic", "input", device)
    if sd is None:
        return None, f"{found}; typed input only"
    try:
        return MicSource(sd, found, sr_hz, frame_n, clock), f"microphone {found} at {sr_hz} Hz"
    except sd.PortAudioError as exc:
        message = f"cannot open input device {found} at {sr_hz} Hz mono: {exc}; devices: {describe_devices(sd)}"
        if mode == "mic":
            raise DeviceError(message) from exc
        return None, f"no microphone: {message}; typed input only"


def open_output(mode: str, device: str, sr_hz: int) -> tuple[SpeakerSink | None, str]:
    """audio.output auto|speaker → (the speaker or None, what was chosen and why)."""
    sd, found = _resolve(mode, "speaker", "output", device)
    if sd is None:
        return None, f"{found}; agent audio runs on virtual time"
    try:
        return SpeakerSink(sd, found, sr_hz), f"speaker {found} at {sr_hz} Hz"
    except sd.PortAudioError as exc:
        message = f"cannot open output device {found} at {sr_hz} Hz mono: {exc}; devices: {describe_devices(sd)}"
        if mode == "speaker":
            raise DeviceError(message) from exc
        return None, f"no speaker: {message}; agent audio runs on virtual time"
