"""What a restarted audio node takes over from the process that was killed (``node.py`` says
what it does with it).

Two sources in the run dir:

- ``audio.state.json``, the facts the event log does not hold: the timeline's origin, where the
  user stream sits on it, how far a WAV input lags the stream (the silence put in for earlier
  outages), when the current process started its stream and where the input ended. The core
  hands a new ``AudioState`` to ``save_state`` when one of them changes — a few times per
  process, never per frame — and it is written atomically (``configs.write_atomic``). Only a
  node of the same session takes it over (``Owner``: the same ``run.id``, rate and launcher
  process), so a later session that reuses the run id starts anew.
- ``events.rtlog``, what really reached the bus: the node's own ``audio.in`` frames, read from
  the end of the log (``eventlog.read_since``) in windows growing ×4 from ``LOOKBACK_NS`` until
  one holds a frame with ``REWIND_NS`` of frames before it, or reaches back to where the killed
  process started its stream. A live stream sends a frame every ``frame_ms`` (a WAV's end is
  followed by silence frames, or the session stops ``audio.tail_s`` after it), so the cost
  follows the outage, not the session's length.

The stream goes on after the last frame the log holds: a frame the killed process had not yet
handed to the bus (or that the bus lost with it) is sent again, none that arrived is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from rtchat.bus.eventlog import LOG_FILE_NAME, LogError, read_messages_since
from rtchat.bus.events import AudioIn
from rtchat.common.files import write_atomic

log = logging.getLogger(__name__)

NS = 1_000_000_000
STATE_FILE = "audio.state.json"
LOOKBACK_NS = 10 * NS  # the first window of the log read back from now; it grows ×4 as needed
REWIND_NS = 3 * NS  # frames this long before the last one are read too: the recording's unflushed tail
SOURCE = "audio"  # the envelope src of the node's own frames (the web page's are not ours)


class StateError(ValueError):
    """The state file exists but cannot be read; the message names it and what was wrong."""


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """Whose state a state file is: a node restarted by the same launcher in the same run."""

    run: str  # run.id
    sr_hz: int  # audio.sr_hz: sample indices mean nothing at another rate
    parent_pid: int  # the launcher (the process that restarts the node)


@dataclasses.dataclass(frozen=True, slots=True)
class AudioState:
    """The audio node's state file: what a restarted node needs that the log does not hold."""

    t0_ns: int  # the timeline's origin (core.py's module doc)
    stream_offset: int | None = None  # timeline index of stream_pos 0 of the user stream; None until it started
    wav_lag: int = 0  # stream_pos − WAV sample index: the silence put in for outages
    anchor_ns: int | None = None  # when the current process started (or took over) the user stream
    anchor_pos: int = 0  # the stream_pos it started at
    eof_pos: int | None = None  # the stream_pos of audio.eof, once it was sent


@dataclasses.dataclass(frozen=True, slots=True)
class Resume:
    """What a restarted core starts from."""

    state: AudioState
    stream_pos: int  # samples of the user stream that reached the bus: the next frame's stream_pos
    frames: tuple[AudioIn, ...] = ()  # the last of them, to put back what the recording lost


def save_state(run_dir: Path, owner: Owner, state: AudioState) -> None:
    body = dataclasses.asdict(owner) | dataclasses.asdict(state)
    write_atomic(Path(run_dir) / STATE_FILE, json.dumps(body) + "\n")


def load_state(run_dir: Path, owner: Owner) -> AudioState | None:
    """The state a killed process of this session left, or None (none, or another session's)."""
    path = Path(run_dir) / STATE_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: cannot read the audio node's state ({exc}); remove it to start the "
                         "input and session.wav anew") from None
    owned = {f.name for f in dataclasses.fields(Owner)}
    if not isinstance(body, dict) or {k: body.get(k) for k in owned} != dataclasses.asdict(owner):
        log.info("%s is another session's (%s), not this one's: starting anew", path,
                 {k: body.get(k) for k in owned} if isinstance(body, dict) else body)
        return None
    fields = {f.name for f in dataclasses.fields(AudioState)}
    values = {k: v for k, v in body.items() if k in fields}
    if set(body) - fields - owned or not all(
        v is None or type(v) is int for v in values.values()
    ) or type(values.get("t0_ns")) is not int:
        raise StateError(f"{path}: not an audio node state (expected integer fields {', '.join(fields)}); "
                         "remove it to start the input and session.wav anew")
    return AudioState(**values)


def _own_frames(messages, run_id: str) -> list[tuple[int, AudioIn]]:
    return [(t, msg.event) for t, msg in messages
            if isinstance(msg.event, AudioIn) and msg.env.src == SOURCE and msg.env.session == run_id]


def logged_frames(log_path: Path, run_id: str, state: AudioState, now_ns: int) -> list[AudioIn]:
    """The node's last user frames in the log (oldest first), or [] when there is none to read."""
    if state.anchor_ns is None or not log_path.is_file():
        return []
    back = LOOKBACK_NS
    while True:
        since = max(state.anchor_ns, now_ns - back)
        try:
            frames = _own_frames(read_messages_since(log_path, since, ("audio.in",)), run_id)
        except (OSError, LogError) as exc:
            log.warning("cannot read the event log to resume the input: %s", exc)
            return []
        if frames and frames[-1][0] - REWIND_NS >= since or since == state.anchor_ns:
            return [ev for _, ev in frames]
        back *= 4


def load_resume(run_dir: Path, owner: Owner, now_ns: int) -> Resume | None:
    """What to take over in ``run_dir``, or None for a first start."""
    state = load_state(run_dir, owner)
    if state is None:
        return None
    frames = logged_frames(Path(run_dir) / LOG_FILE_NAME, owner.run, state, now_ns)
    reached = max((f.stream_pos + f.n_samples for f in frames), default=0)
    return Resume(state=state, stream_pos=max(reached, state.anchor_pos, state.eof_pos or 0), frames=tuple(frames))
