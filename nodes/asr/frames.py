"""Incoming audio frames → one contiguous 16 kHz mono float32 stream with its sample position.

``AudioIn`` frames carry int16 mono PCM at the capture rate and ``stream_pos``, the index of
their first sample since the stream started. Browsers and files also deliver stereo and
float32, at 8, 11.025, 22.05, 24, 32, 44.1 or 48 kHz. The recogniser wants 16 kHz mono.

Defined behaviour, each case counted in ``FrameStats``:
- non-finite samples (NaN, ±Inf) become 0;
- samples at or beyond full scale are clamped to [-1, 1] and counted as clipped;
- a frame that starts after the expected position: the gap is filled with silence when it is
  at most ``max_gap_s``; a longer gap is a *resync*: the stream restarts at the frame's
  position (a ``Chunk`` whose ``start`` is not the previous chunk's ``end``);
- a frame that starts before the expected position: a duplicate (same position as the
  previous frame) or late frame wholly before it is dropped; one that overlaps it keeps only
  its new samples;
- a change of sample rate continues the 16 kHz timeline where the old rate ended.

Resampling is libsoxr's (``soxr.ResampleStream``, high quality): its filter state carries
across frames, so 20 ms frames give the same samples as one long array, and output sample k is
at time k / 16 kHz (the filter delay is compensated).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from rtchat.common.audio import SR_HZ, SUPPORTED_RATES_HZ  # noqa: F401 (the recogniser's rate; the rates it resamples)

NS_PER_SAMPLE = 1_000_000_000 // SR_HZ  # 62_500: 16 kHz sample indices convert to ns exactly
CLIP_LEVEL = 32_767 / 32_768  # int16 full scale; a float sample this loud counts as clipped

SampleFormat = Literal["int16", "float32"]


def samples_to_ns(n: int) -> int:
    """A 16 kHz sample index (or count) as integer nanoseconds of audio time."""
    return n * NS_PER_SAMPLE


def decode(data: bytes | np.ndarray, channels: int = 1, sample_format: SampleFormat = "int16") -> np.ndarray:
    """PCM (bytes, or an array of that format) → mono float32 in [-32768/32768, …].

    int16 is scaled by 1/32768; float32 is taken as is. Interleaved channels are averaged.
    Raises ValueError when the data is not a whole number of frames of ``channels`` samples.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if sample_format not in ("int16", "float32"):
        raise ValueError(f"sample_format {sample_format!r}: allowed int16, float32")
    dtype = np.int16 if sample_format == "int16" else np.float32
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) % (np.dtype(dtype).itemsize * channels):
            raise ValueError(f"{len(data)} bytes is not a whole number of {channels}-channel {sample_format} frames")
        x = np.frombuffer(data, dtype=dtype)
    else:
        x = np.asarray(data, dtype=dtype).reshape(-1)
        if x.size % channels:
            raise ValueError(f"{x.size} samples is not a whole number of {channels}-channel frames")
    x = x.astype(np.float32)
    if sample_format == "int16":
        x /= 32_768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x


def sanitize(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Replace NaN/±Inf by 0 and clamp to [-1, 1]. Returns (audio, n_nonfinite, n_clipped)."""
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        x = np.where(bad, np.float32(0), x)
    loud = np.abs(x) >= CLIP_LEVEL
    n_clipped = int(loud.sum())
    if n_clipped:
        x = np.clip(x, -1.0, 1.0)
    return x.astype(np.float32, copy=False), n_bad, n_clipped


class Resampler:
    """Streaming resampler from ``sr_in_hz`` to ``sr_out_hz`` (libsoxr); counts samples in and out."""

    def __init__(self, sr_in_hz: int, sr_out_hz: int = SR_HZ):
        import soxr

        self.same = sr_in_hz == sr_out_hz
        self.stream = None if self.same else soxr.ResampleStream(sr_in_hz, sr_out_hz, 1, dtype="float32", quality="HQ")
        self.n_in = 0
        self.n_out = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Append input samples; return the output samples that are ready."""
        return self._count(x, last=False)

    def flush(self) -> np.ndarray:
        """The remaining output samples (the input has ended)."""
        return self._count(np.zeros(0, dtype=np.float32), last=True)

    def _count(self, x: np.ndarray, last: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.n_in += len(x)
        y = x.copy() if self.same else self.stream.resample_chunk(x, last=last)
        self.n_out += len(y)
        return y


def resample(x: np.ndarray, sr_in_hz: int, sr_out_hz: int = SR_HZ) -> np.ndarray:
    """One-shot resampling of a whole signal (the streaming resampler, pushed once and flushed)."""
    r = Resampler(sr_in_hz, sr_out_hz)
    return np.concatenate([r.push(x), r.flush()])


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """Contiguous 16 kHz mono float32 audio starting at 16 kHz sample index ``start``."""

    start: int
    audio: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


@dataclasses.dataclass
class FrameStats:
    frames: int = 0
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    gaps: int = 0  # gaps filled with silence
    gap_samples: int = 0  # silence inserted, in source samples
    resyncs: int = 0  # gaps longer than max_gap_s: the stream restarted at the new position
    late_frames: int = 0  # wholly before the expected position, dropped
    duplicate_frames: int = 0  # same position as the previous frame, dropped
    overlap_samples: int = 0  # head samples of overlapping frames, dropped
    rate_changes: int = 0


class FrameAssembler:
    """Turns AudioIn-like frames into contiguous 16 kHz ``Chunk``s (module doc for the rules)."""

    def __init__(self, max_gap_s: float = 2.0):
        if max_gap_s < 0:
            raise ValueError(f"max_gap_s must be >= 0, got {max_gap_s}")
        self.max_gap_s = max_gap_s
        self.stats = FrameStats()
        self.sr_hz: int | None = None
        self.resampler: Resampler | None = None
        self.expected = 0  # next source stream_pos
        self.last_pos: int | None = None
        self.base16 = 0  # 16 kHz index of the resampler's first output

    @property
    def end(self) -> int:
        """16 kHz index just after the last emitted sample."""
        return self.base16 + (self.resampler.n_out if self.resampler else 0)

    def push(
        self,
        pcm: bytes | np.ndarray,
        sr_hz: int,
        n_samples: int,
        stream_pos: int,
        channels: int = 1,
        sample_format: SampleFormat = "int16",
    ) -> list[Chunk]:
        """One frame in; zero, one or (at a resync or rate change) two chunks out."""
        if sr_hz not in SUPPORTED_RATES_HZ:
            raise ValueError(f"sr_hz {sr_hz}: allowed {', '.join(map(str, SUPPORTED_RATES_HZ))}")
        x = decode(pcm, channels, sample_format)
        if len(x) != n_samples:
            raise ValueError(f"n_samples {n_samples} but the pcm holds {len(x)} {channels}-channel frames")
        self.stats.frames += 1
        out: list[Chunk] = []
        if self.resampler is None or sr_hz != self.sr_hz:
            if self.resampler is not None:
                self.stats.rate_changes += 1
                out += self._restart(sr_hz, stream_pos, self.end)
            else:
                self._restart(sr_hz, stream_pos, round(stream_pos * SR_HZ / sr_hz))
        x = self._align(x, stream_pos, out)
        if x is None:
            return out
        x, n_bad, n_clip = sanitize(x)
        self.stats.nonfinite_samples += n_bad
        self.stats.clipped_samples += n_clip
        self.last_pos = stream_pos
        self.expected += len(x)
        start = self.end
        y = self.resampler.push(x)
        if len(y):
            out.append(Chunk(start, y))
        return out

    def _align(self, x: np.ndarray, stream_pos: int, out: list[Chunk]) -> np.ndarray | None:
        """Fit the frame to the expected position: fill, resync, trim or drop (None)."""
        gap = stream_pos - self.expected
        if gap > self.max_gap_s * self.sr_hz:
            self.stats.resyncs += 1
            out += self._restart(self.sr_hz, stream_pos, round(stream_pos * SR_HZ / self.sr_hz))
        elif gap > 0:
            self.stats.gaps += 1
            self.stats.gap_samples += gap
            x = np.concatenate([np.zeros(gap, dtype=np.float32), x])
        elif gap < 0:
            if stream_pos == self.last_pos:
                self.stats.duplicate_frames += 1
                return None
            if stream_pos + len(x) <= self.expected:
                self.stats.late_frames += 1
                return None
            self.stats.overlap_samples += -gap
            x = x[-gap:]
        return x

    def _restart(self, sr_hz: int, stream_pos: int, start16: int) -> list[Chunk]:
        """Flush the current resampler (its tail as a chunk) and start a new timeline."""
        tail: list[Chunk] = []
        if self.resampler is not None:
            end = self.end
            rest = self.resampler.flush()
            if len(rest):
                tail.append(Chunk(end, rest))
            start16 = max(start16, self.end)
        self.sr_hz = sr_hz
        self.resampler = Resampler(sr_hz)
        self.expected = stream_pos
        self.last_pos = None
        self.base16 = start16
        return tail
