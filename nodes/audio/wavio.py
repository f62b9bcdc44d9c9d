"""WAV files in and out: the user's recording as mono int16, and the session recording.

``read_wav(path, sr_hz)`` reads any WAV libsndfile understands (8-bit unsigned, 16/24/32-bit
int, 32/64-bit float; plain RIFF, WAVE_FORMAT_EXTENSIBLE, RF64, W64), at any rate (resampled
with soxr) and with any number of channels (averaged to mono). Anything else raises
``WavError`` naming the file, what it holds and what is allowed.

``SessionRecorder`` writes ``session.wav``: stereo int16, left = the user, right = the agent,
both placed by sample index on one timeline (``core.py`` says where sample 0 is). It is crash
safe in the simple way: every ``flush`` appends the finished samples, then rewrites the sizes in
the 44-byte RIFF header and hands the bytes to the OS, so a crash loses at most what came after
the last flush and the file on disk always parses as a complete WAV. ``resume=True`` (a
restarted audio node) reopens the file and appends to it: sample i stays sample i. It keeps
every whole stereo sample on disk — also ones a crash left after the header's count, between
the data and the header's update — and refuses a file with another layout (``WavError``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

WAV_FORMATS = ("WAV", "WAVEX", "RF64", "W64")  # libsndfile's names for the WAV family
ALLOWED = "a WAV file (8-bit, 16/24/32-bit int or float samples, any rate, any number of channels)"
# session.wav's header: RIFF, size, WAVE, "fmt " (16 bytes: PCM, 2 channels, rate, byte rate,
# block align 4, 16 bits), "data", size — 44 bytes, the data right after it
HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
FRAME_BYTES = 4  # one stereo int16 sample


class WavError(ValueError):
    """A file that cannot be used as user audio; the message names it and says what is allowed."""


def to_int16(x: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] → int16, clipped."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def resample(x: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Mono float32 audio at ``from_hz`` → ``to_hz`` (soxr, high quality); same length in time."""
    if from_hz == to_hz or len(x) == 0:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x.astype(np.float32, copy=False), from_hz, to_hz, quality="HQ")


def read_wav(path: str | Path, sr_hz: int) -> np.ndarray:
    """The file's audio as mono int16 at ``sr_hz``."""
    path = Path(path)
    if not path.is_file():
        raise WavError(f"{path}: no such file; allowed: {ALLOWED}")
    if path.stat().st_size == 0:
        raise WavError(f"{path}: the file is empty (0 bytes); allowed: {ALLOWED}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise WavError(f"{path}: not a readable audio file ({exc}); allowed: {ALLOWED}") from exc
    if info.format not in WAV_FORMATS:
        raise WavError(f"{path}: found {info.format_info} ({info.format}), not a WAV; allowed: {ALLOWED}")
    if info.frames == 0:
        raise WavError(f"{path}: the WAV holds no samples; allowed: {ALLOWED} with at least one sample")
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise WavError(f"{path}: cannot read its {info.subtype_info} samples ({exc}); allowed: {ALLOWED}") from exc
    return to_int16(resample(x.mean(axis=1), rate, sr_hz))


def session_header(sr_hz: int, n_frames: int) -> bytes:
    """The 44-byte header of a stereo int16 WAV holding ``n_frames`` samples."""
    data = n_frames * FRAME_BYTES
    return HEADER.pack(b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 2, sr_hz, sr_hz * FRAME_BYTES, FRAME_BYTES,
                       16, b"data", data)


class SessionRecorder:
    """Stereo int16 ``session.wav``: user samples on the left, agent samples on the right,
    each put at its sample index; silence where nothing was put. Samples before the last flush
    point are final: ones that arrive later for them are dropped and counted (``late_samples``).
    With ``resume``, an existing file is continued (module doc)."""

    def __init__(self, path: str | Path, sr_hz: int, resume: bool = False):
        self.path = Path(path)
        self.sr_hz = sr_hz
        self.written = 0  # samples on disk
        if resume and self.path.exists():
            self._file = open(self.path, "r+b")  # noqa: SIM115 - held open until close()
            self.written = self._check_existing()
            self._file.truncate(HEADER.size + self.written * FRAME_BYTES)
        else:
            self._file = open(self.path, "wb")  # noqa: SIM115
        self._patch_header()  # a new file is an empty but valid WAV from the start
        self.buffer = np.zeros((0, 2), dtype=np.int16)  # samples from `written` on; capacity grows
        self.used = 0  # how much of `buffer` holds samples put so far (the rest is spare capacity)
        self.late_samples = 0
        self.closed = False

    def _check_existing(self) -> int:
        """The whole samples an earlier recorder left in the file; WavError if it wrote no such file."""
        head = self._file.read(HEADER.size)
        size = self._file.seek(0, 2)
        if size == 0:  # killed between creating the file and writing its header
            return 0
        expected = session_header(self.sr_hz, 0)
        if len(head) < HEADER.size or head[:4] + head[8:40] != expected[:4] + expected[8:40]:
            self._file.close()
            raise WavError(f"{self.path}: not a session recording at {self.sr_hz} Hz (stereo int16, 44-byte header) "
                           "to continue; move it away to start a new one")
        return (size - HEADER.size) // FRAME_BYTES

    def _patch_header(self) -> None:
        self._file.seek(0)
        self._file.write(session_header(self.sr_hz, self.written))
        self._file.flush()

    @property
    def end(self) -> int:
        """One past the last sample put so far."""
        return self.written + self.used

    def put(self, channel: int, pos: int, samples: np.ndarray) -> None:
        """Mix int16 ``samples`` into ``channel`` (0 = user, 1 = agent) from sample ``pos`` on."""
        if pos < self.written:
            skip = min(self.written - pos, len(samples))
            self.late_samples += skip
            samples, pos = samples[skip:], pos + skip
        if len(samples) == 0:
            return
        lo, hi = pos - self.written, pos - self.written + len(samples)
        if hi > len(self.buffer):  # grow geometrically: puts are many and small
            grown = np.zeros((max(hi, 2 * len(self.buffer)), 2), dtype=np.int16)
            grown[: self.used] = self.buffer[: self.used]
            self.buffer = grown
        self.used = max(self.used, hi)
        mixed = self.buffer[lo:hi, channel].astype(np.int32) + samples
        self.buffer[lo:hi, channel] = np.clip(mixed, -32768, 32767)

    def flush(self, upto: int | None = None) -> None:
        """Write the samples before index ``upto`` (all put so far when None) and patch the header."""
        n = self.used if upto is None else min(max(upto - self.written, 0), self.used)
        if n <= 0 or self.closed:
            return
        self._file.seek(HEADER.size + self.written * FRAME_BYTES)
        self._file.write(self.buffer[:n].astype("<i2", copy=False).tobytes())
        rest = self.buffer[n : self.used].copy()
        self.buffer = np.zeros((max(len(rest), len(self.buffer) - n), 2), dtype=np.int16)
        self.buffer[: len(rest)] = rest
        self.used = len(rest)
        self.written += n
        self._patch_header()  # after the data: a crash in between leaves the old, smaller count

    def close(self) -> None:
        """Write everything put so far; the file is then a complete WAV."""
        if self.closed:
            return
        self.flush()
        self._file.close()
        self.closed = True
