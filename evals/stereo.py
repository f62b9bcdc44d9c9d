"""The agent's speech as the session recording holds it: ``session.wav`` read back, not the log.

``session.wav`` (``nodes/audio/wavio.py``) is 16 kHz stereo int16 on the audio node's timeline:
sample i is the instant t0 + i / sr on both channels (``nodes/audio/core.py``). The left channel
holds the user's recording as it was played in, sample for sample, from timeline index
``stream_offset`` on (the playhead when ``ctl.live`` came); the right channel holds the agent's
audio as the playhead passed it, so audio cut by a barge-in is not in it.

- ``read_session(path)``: the recording as an (n, 2) int16 array; a file that is not stereo at
  ``SR_HZ`` raises ``WavError`` naming what it holds and what is allowed.
- ``user_offset(left, user)``: samples from the user's recording to the recording's timeline —
  where the first sound lies on the left channel minus where it lies in the user's recording.
  Exact (to the sample) because the left channel copies the recording unchanged; a restarted
  audio node puts silence in for its outage (``wav_lag``), after which the sound lies later by
  the outage, which this does not follow.
- ``speech_spans(channel)``: speech by short-time energy: ``FRAME_MS`` frames whose level is
  within ``RELATIVE_DB`` of the channel's own loud level (its ``LOUD_QUANTILE`` frame level) and
  above ``FLOOR_DBFS``; runs of such frames closer than ``analyze.MERGE_GAP_NS`` (300 ms, as
  ``rtchat analyze`` merges the agent's chunks into IPUs) are one span. Times in ns of the
  recording; an onset is the start of its first loud frame, so within one frame of the sound.
  For TTS at its usual loud level (about -10 dBFS) the threshold is near the -45 dBFS at which
  ``simulate_user`` trims the user's words, so the script's word ends and the agent's onsets are
  measured alike; a TTS's quiet lead-in (tens of ms below it) is not an onset.
- ``agent_spans(recording, user)``: the right channel's speech spans in ns of the user's
  recording — the script's time base (``simulate_user.render``'s segments).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from rtchat.common.audio import SR_HZ, window_levels_dbfs
from rtchat.common.stats import percentile
from rtchat.evals.analyze import MERGE_GAP_NS, Span, merge
from rtchat.nodes.audio.wavio import WavError

NS = 1_000_000_000
FRAME_MS = 20  # the energy detector's frames
FRAME_N = SR_HZ * FRAME_MS // 1000  # 320 samples
FRAME_NS = FRAME_MS * 1_000_000
LOUD_QUANTILE = 0.95  # the channel's loud level: this quantile of its sounding frames' levels
RELATIVE_DB = 35.0  # a frame this far below the loud level or closer is speech: about simulate_user.TRIM_DBFS for TTS
FLOOR_DBFS = -50.0  # ... and only above this, so a silent channel's dither is not speech
SOUND_MIN = 1  # |sample| at least this is sound (the user's first sound, for the offset)
ALLOWED = f"a session recording: a WAV with 2 channels (user left, agent right) at {SR_HZ} Hz"


def read_session(path: str | Path) -> np.ndarray:
    """``session.wav`` as an (n, 2) int16 array (user, agent)."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise WavError(f"{path}: not a readable WAV ({exc}); allowed: {ALLOWED}") from exc
    if info.channels != 2 or info.samplerate != SR_HZ:
        raise WavError(f"{path}: {info.channels} channel(s) at {info.samplerate} Hz; allowed: {ALLOWED}")
    x, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return x


def first_sound(x: np.ndarray) -> int | None:
    """The index of the first sample at least ``SOUND_MIN`` loud; None for silence."""
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) >= SOUND_MIN)
    return int(loud[0]) if len(loud) else None


def user_offset(left: np.ndarray, user: np.ndarray) -> int | None:
    """Recording index of the user's sample 0 (module doc); None when either holds no sound."""
    on_left, in_user = first_sound(left), first_sound(user)
    return None if on_left is None or in_user is None else on_left - in_user


def frame_levels_dbfs(x: np.ndarray) -> np.ndarray:
    """The level of each whole ``FRAME_N``-sample frame, dBFS (RMS re full scale)."""
    return window_levels_dbfs(x, FRAME_N)


def speech_frames(levels: np.ndarray) -> np.ndarray:
    """Which frames are speech: above the floor and within ``RELATIVE_DB`` of the loud level."""
    sounding = levels[levels > FLOOR_DBFS]
    if len(sounding) == 0:
        return np.zeros(len(levels), dtype=bool)
    loud = percentile(sounding.tolist(), LOUD_QUANTILE, ndigits=None)
    return levels > max(FLOOR_DBFS, loud - RELATIVE_DB)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last + 1) of each run of True."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def speech_spans(channel: np.ndarray) -> list[Span]:
    """One channel's speech, in ns of the recording, merged as ``rtchat analyze`` merges IPUs."""
    spans = [Span(a * FRAME_NS, b * FRAME_NS) for a, b in runs(speech_frames(frame_levels_dbfs(channel)))]
    return merge(spans, MERGE_GAP_NS)


def agent_spans(recording: np.ndarray, user: np.ndarray) -> tuple[list[Span], int] | None:
    """The agent's speech spans in ns of the user's recording and the offset used (samples);
    None when the left channel or the user's recording holds no sound to align them by."""
    offset = user_offset(recording[:, 0], user)
    if offset is None:
        return None
    shift = offset * NS // SR_HZ
    return [Span(s.start_ns - shift, s.end_ns - shift) for s in speech_spans(recording[:, 1])], offset
