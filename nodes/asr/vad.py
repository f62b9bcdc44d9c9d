"""Streaming voice activity detection: 16 kHz chunks in, speech start/end sample indices out.

The model (Silero VAD, the ``silero-vad`` package's ONNX export) scores one 512-sample window
(32 ms at 16 kHz) at a time; it is injected as a ``SpeechProb`` so tests can script it.
Hysteresis turns the scores into events: speech *starts* at the first window scoring at least
``start_threshold``; it *ends* once the windows have scored below ``end_threshold`` for
``min_silence_ms`` in a row (a window between the two thresholds neither starts nor ends
speech, and breaks a silence run). A start is placed ``speech_pad_ms`` before its window, an end
``speech_pad_ms`` after the last window that was still speech — the same convention as Silero's
own ``VADIterator``, so a word's soft onset and tail stay inside the span. With ``pause_ms``, a
silence run inside speech that reaches it is reported once as a ``pause``, placed where an end in
it would be (speech goes on; it may end in that silence ``min_silence_ms`` later), and the first
window that breaks that run as a ``resume`` (the speech went on after the pause).

Events are decided ``min_silence_ms`` late for an end (that is what the hysteresis means) and up
to one window late for a start; their sample indices are still the true positions, and ``at``
says where the audio that decided them ended (the end of the deciding window). ``Chunk``s
must be contiguous: a chunk that does not start where the last one ended (a stream resync)
ends any open speech where the old stream ended and restarts the model's state.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

import numpy as np

from rtchat.nodes.asr.frames import SR_HZ, Chunk

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms): the only size its 16 kHz model takes


class SpeechProb(Protocol):
    """A streaming speech detector: one 512-sample 16 kHz float32 window → P(speech)."""

    def __call__(self, window: np.ndarray) -> float: ...

    def reset(self) -> None:
        """Forget the recurrent state (a new stream)."""


class SileroProb:
    """``SpeechProb`` over the Silero model object from ``silero_vad.load_silero_vad``."""

    def __init__(self, model):
        import torch

        self.model = model
        self.torch = torch

    def __call__(self, window: np.ndarray) -> float:
        return float(self.model(self.torch.from_numpy(window), SR_HZ).item())

    def reset(self) -> None:
        self.model.reset_states()


def load_silero() -> SileroProb:
    """The Silero VAD that ships inside the ``silero-vad`` wheel (ONNX; nothing is downloaded)."""
    from silero_vad import load_silero_vad

    return SileroProb(load_silero_vad(onnx=True))


@dataclasses.dataclass(frozen=True)
class VadConfig:
    start_threshold: float = 0.5  # a window this likely to be speech starts speech
    end_threshold: float = 0.35  # windows below this count as silence
    min_silence_ms: int = 500  # this much silence in a row ends speech
    speech_pad_ms: int = 30  # start this much earlier, end this much later
    pause_ms: int = 0  # this much silence in a row inside speech is a pause (0: none reported)

    def __post_init__(self):
        if not 0 < self.end_threshold <= self.start_threshold < 1:
            raise ValueError(f"need 0 < end_threshold <= start_threshold < 1, got {self.end_threshold}, {self.start_threshold}")
        if self.min_silence_ms <= 0 or self.speech_pad_ms < 0:
            raise ValueError(f"need min_silence_ms > 0 and speech_pad_ms >= 0, got {self.min_silence_ms}, {self.speech_pad_ms}")
        if not 0 <= self.pause_ms < self.min_silence_ms:
            raise ValueError(f"need 0 <= pause_ms < min_silence_ms, got {self.pause_ms}, {self.min_silence_ms}")


@dataclasses.dataclass(frozen=True, slots=True)
class VadEvent:
    """Speech started or ended at 16 kHz sample index ``sample``, decided on the audio up to ``at``;
    or (``pause``) has been silent since ``sample`` (where an end would be placed) for about
    ``pause_ms``, up to ``at``, and goes on; or (``resume``) speaks again at ``sample`` after a pause."""

    kind: Literal["start", "end", "pause", "resume"]
    sample: int
    at: int


class StreamingVad:
    """Hysteresis over per-window speech probabilities (module doc). Pure apart from the model."""

    def __init__(self, model: SpeechProb, cfg: VadConfig | None = None):
        self.model = model
        self.cfg = cfg or VadConfig()
        self.pad = self.cfg.speech_pad_ms * SR_HZ // 1000
        self.min_silence = self.cfg.min_silence_ms * SR_HZ // 1000
        self.pause = self.cfg.pause_ms * SR_HZ // 1000
        self.paused = False  # the current silence run was reported as a pause
        self.paused_at = 0  # where that pause was placed
        self._rest = np.zeros(0, dtype=np.float32)  # samples not yet forming a whole window
        self.pos = 0  # 16 kHz index of the first sample of _rest
        self.started = False  # whether any chunk has arrived
        self.in_speech = False
        self.speech_start = 0
        self.last_speech_end = 0  # end of the last window scoring >= end_threshold
        self.silence_from: int | None = None  # start of the current run of silent windows
        self.floor = 0  # no event before this index (the previous event's sample)
        self.windows = 0

    def push(self, chunk: Chunk) -> list[VadEvent]:
        """Feed contiguous audio; return the events decided by it, in order."""
        out: list[VadEvent] = []
        if self.started and chunk.start != self.pos + len(self._rest):
            out += self.restart(chunk.start)
        elif not self.started:
            self.pos = self.floor = chunk.start
        self.started = True
        x = np.concatenate([self._rest, np.asarray(chunk.audio, dtype=np.float32)])
        n = len(x) // WINDOW
        for i in range(n):
            ev = self._window(x[i * WINDOW : (i + 1) * WINDOW], self.pos + i * WINDOW)
            if ev is not None:
                out.append(ev)
        self._rest = x[n * WINDOW :]
        self.pos += n * WINDOW
        return out

    def start_in_speech(self, start: int, speech_from: int) -> None:
        """The stream starts at ``start`` inside speech that began at ``speech_from`` (a restarted
        node resuming an open utterance): no start event; the speech ends as usual, after
        ``min_silence_ms`` of silence, and not before ``speech_from``."""
        self.started, self.pos, self.floor = True, start, speech_from
        self._rest = np.zeros(0, dtype=np.float32)
        self.in_speech, self.last_speech_end, self.silence_from, self.paused = True, max(start, speech_from), None, False

    def restart(self, start: int) -> list[VadEvent]:
        """The stream jumps to ``start``: end open speech where the old stream ended, reset the model."""
        out = self.close()
        self.model.reset()
        self._rest = np.zeros(0, dtype=np.float32)
        self.pos = self.floor = max(start, self.floor)
        self.silence_from = None
        return out

    def close(self) -> list[VadEvent]:
        """End open speech now (end of stream, reset): at the end of the audio pushed so far."""
        self.paused = False
        if not self.in_speech:
            return []
        self.in_speech = False
        return [self._event("end", self.pos + len(self._rest), self.pos + len(self._rest))]

    def silence_begun(self) -> bool:
        """A silence run inside speech has begun that is not (yet) a pause (``pause_ms``; False
        when pauses are not reported)."""
        return bool(self.pause) and self.in_speech and self.silence_from is not None and not self.paused

    def _window(self, window: np.ndarray, start: int) -> VadEvent | None:
        p = self.model(window)
        self.windows += 1
        end = start + WINDOW
        resumed = None
        if p >= self.cfg.end_threshold:
            self.last_speech_end = end
            self.silence_from = None
            if self.paused and self.in_speech:  # placed as a start is, not before the pause
                self.paused = False
                resumed = VadEvent("resume", max(start - self.pad, self.paused_at), end)
        if not self.in_speech:
            if p >= self.cfg.start_threshold:
                self.in_speech = True
                return self._event("start", start - self.pad, end)
            return None
        if p < self.cfg.end_threshold:
            if self.silence_from is None:
                self.silence_from, self.paused = start, False
            if end - self.silence_from >= self.min_silence:
                self.in_speech = self.paused = False
                self.silence_from = None
                return self._event("end", min(self.last_speech_end + self.pad, end), end)
            if self.pause and not self.paused and end - self.silence_from >= self.pause:
                self.paused, self.paused_at = True, min(self.last_speech_end + self.pad, end)
                return VadEvent("pause", self.paused_at, end)
        return resumed

    def _event(self, kind: Literal["start", "end"], sample: int, at: int) -> VadEvent:
        sample = max(sample, self.floor)
        self.floor = sample
        return VadEvent(kind, sample, at)
