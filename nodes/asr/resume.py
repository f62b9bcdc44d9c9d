"""A restarted ASR resumes the utterance in progress, from what the run's event log holds.

When the asr process dies (SIGKILL, a crash) the launcher restarts it, and the user may be in
mid-sentence. The logger has kept every event meanwhile: the ``audio.in`` frames, including those
sent while no asr ran, and what the killed process published. From the last ``RESUME_MAX_S`` of
them (``previous``) the new core learns what was already said on the bus — the committed words
of its ``asr.final``s, whether an utterance is open (a ``vad.start`` without its ``vad.end``),
the utterance number and partial revision — and is fed, on the logged times, the audio nobody
has transcribed yet (``resume``):

- an open utterance is heard again from its ``vad.start`` less the preroll, or from the end of
  its last committed word when words of it were committed (the audio of committed words is not
  heard again, so they cannot come out twice; they are the prompt instead). No second
  ``vad.start`` is published for it;
- otherwise the audio after the last ``vad.end`` (or the oldest logged), as a fresh stream: an
  utterance that started while the asr was down gets its ``vad.start`` and its words.

While it catches up the core transcribes only every half ``max_buffer_s`` (``AsrCore.catching_up``)
and at each ``vad.end``, so the catch-up costs a few calls, not one per hop. What it produces —
the words of an utterance that ended while the asr was down, its ``vad.end`` — is published once
the node is live (``Resumed``, the core the shell runs); the first live frame then transcribes
the backlog of the open utterance (a partial, then finals).

Between the last logged frame read at start-up and the first live frame some audio is missing:
the logger writes its file every ``logger.flush_interval_ms`` and the node was not yet
subscribed. At the first live frame ``Resumed`` reads those frames from the log (an injected
``read``), holding the live frames until the log has them, at most ``GAP_WAIT_NS``; a gap it
cannot fill is filled with silence by the frame assembler, as any gap is. Pure apart from that
reader: tests drive it with scripted models, logged events and a fake reader.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from rtchat.bus.core import Core, serve
from rtchat.bus.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    AudioPlayed,
    Event,
    NodeHeartbeat,
    NodeReady,
    Reset,
    VadEnd,
    VadStart,
    Word,
)
from rtchat.nodes.asr.core import AsrCore
from rtchat.nodes.asr.frames import SR_HZ, samples_to_ns

log = logging.getLogger(__name__)

RESUME_MAX_S = 30  # a restarted node reads (and may transcribe) at most this much of the log
GAP_WAIT_NS = 1_000_000_000  # live audio waits this long at most for the logger to write the gap
GAP_POLL_NS = 50_000_000  # how often the log is read again meanwhile

Logged = tuple[int, Event]  # (the logger's receive time, the event)


@dataclasses.dataclass(frozen=True)
class Previous:
    """What the previous process of the node had published, as the log shows it."""

    open_since: int | None  # 16 kHz index of the vad.start of an utterance still open
    last_end: int | None  # 16 kHz index of the last vad.end
    committed: tuple[Word, ...]  # the words of its asr.finals, oldest first
    utterance: int  # the utterance its next words belong to
    rev: int  # the last partial revision of that utterance
    partial_shown: bool  # a partial of that utterance with words is showing
    resume_cut_ns: int | None  # where the open utterance's uncommitted audio starts
    reset_ns: int = 0  # receive time of the last ctl.reset: the audio logged before it was dropped


def previous(logged: Sequence[Logged], node: str = "asr") -> Previous | None:
    """The state the log shows, or None when no earlier process of ``node`` appears in it."""
    ran = False
    open_since = last_end = None
    committed: list[Word] = []
    utterance = 0  # the policy's counter as its outputs show it: +1 at every flush (vad.end, reset)
    partial: AsrPartial | None = None  # the last partial of the open utterance, after its last final
    reset_ns = 0
    for t, ev in logged:
        if isinstance(ev, NodeReady | NodeHeartbeat):
            ran |= ev.node == node
        elif isinstance(ev, VadStart):
            ran, open_since, partial = True, ev.stream_pos, None
        elif isinstance(ev, VadEnd):
            ran, open_since, last_end, partial = True, None, ev.stream_pos, None
            utterance += 1
        elif isinstance(ev, AsrFinal | AsrPartial):  # (a flush's final follows its vad.end)
            ran, utterance = True, max(utterance, ev.utterance)
            if isinstance(ev, AsrFinal):
                committed += ev.words
                partial = None
            else:
                partial = ev
        elif isinstance(ev, Reset):  # a new conversation: the open utterance and the prompt went
            open_since, partial, committed, reset_ns = None, None, [], t
            utterance += 1
    if not ran:
        return None
    cut = None
    if open_since is not None and committed and committed[-1].end_ns > samples_to_ns(open_since):
        cut = committed[-1].end_ns  # the live policy cuts there too, or at the next word if earlier
        if partial is not None and partial.words:
            cut = min(cut, partial.words[0].start_ns)
    return Previous(
        open_since=open_since,
        last_end=last_end,
        committed=tuple(committed),
        utterance=utterance,
        rev=partial.rev if partial is not None else 0,
        partial_shown=bool(partial is not None and partial.words),
        resume_cut_ns=cut,
        reset_ns=reset_ns,
    )


def _span16(ev: AudioIn) -> tuple[int, int]:
    """A frame's first and end 16 kHz sample index (how the frame assembler places it)."""
    return round(ev.stream_pos * SR_HZ / ev.sr_hz), round((ev.stream_pos + ev.n_samples) * SR_HZ / ev.sr_hz)


def _start_from(prev: Previous, preroll: int) -> int:
    """The 16 kHz index from which the logged audio has not been transcribed."""
    if prev.open_since is not None:
        if prev.resume_cut_ns is not None:
            return prev.resume_cut_ns // samples_to_ns(1)
        return prev.open_since - preroll
    return prev.last_end if prev.last_end is not None else 0


@dataclasses.dataclass(frozen=True)
class Fed:
    """Where the fed log audio ended: the next expected frame, at the rate it came."""

    sr_hz: int
    next_pos: int  # stream_pos the next frame should have
    recv_ns: int  # receive time of the last frame fed


def resume(core: AsrCore, logged: Sequence[Logged], read: Callable[[int], list[Logged]] | None = None) -> Resumed | None:
    """Bring a new core up to date with the log (module doc); None for a fresh session.

    ``logged``: the last ``RESUME_MAX_S`` of the log, oldest first. ``read(since_ns)``: the logged
    events received at or after ``since_ns``, for the frames logged after ``logged`` was read."""
    prev = previous(logged, core.name)
    if prev is None:
        return None
    want = max(_start_from(prev, core.preroll), 0)
    first = next((i for i, (t, ev) in enumerate(logged) if isinstance(ev, AudioIn) and ev.sr_hz > 0
                  and _span16(ev)[1] > want and t >= prev.reset_ns), None)
    core.catching_up = True
    if first is None:  # nothing logged since: the next live frame starts the stream (and the VAD
        core.policy.resume(prev.committed, prev.utterance)  # finds the open utterance again)
        return Resumed(core, [], None, read)
    t_first, frame = logged[first]
    start = _span16(frame)[0]
    core.resume_at(start, prev.open_since, prev.committed, prev.utterance, prev.rev, prev.partial_shown)
    played_before = [(t, ev) for t, ev in logged[:first] if isinstance(ev, AudioPlayed)]
    out = serve(core, frame, t_first)
    for t, ev in [*played_before, *logged[first + 1 :]]:  # played audio needs the capture clock of a frame
        if isinstance(ev, AudioIn | AudioPlayed | Reset):
            out += serve(core, ev, t)
    frames = [(t, ev) for t, ev in logged[first:] if isinstance(ev, AudioIn)]
    t_last, last = frames[-1]
    fed = Fed(last.sr_hz, last.stream_pos + last.n_samples, t_last)
    core.counts["resumed_frames"] = len(frames)
    log.info("resumed from the log: %d frames from 16 kHz index %d (%s), %d events to publish",
             len(frames), start, "open utterance" if prev.open_since is not None else "no open utterance", len(out))
    return Resumed(core, out, fed, read)


class Resumed(Core):
    """The resumed core as the node runs it: first what the catch-up produced, then, at the first
    live frame, the logged frames between the catch-up and it (module doc), then the live stream."""

    def __init__(self, core: AsrCore, backlog: list[Event], fed: Fed | None, read: Callable[[int], list[Logged]] | None):
        self.core = core
        self.name, self.topics, self.control_topics = core.name, core.topics, core.control_topics
        self.backlog = backlog
        self.fed = fed
        self.read = read
        self.held: list[tuple[Event, int]] | None = None  # live events waiting for the gap
        self.give_up_ns = self.next_poll_ns = 0
        self.joined = False
        core.counts.setdefault("resumed_frames", 0)
        core.counts.update(gap_frames=0, gap_unfilled=0)

    @property
    def device(self) -> str:
        return self.core.device

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        out, self.backlog = self.backlog, []
        if self.held is not None:
            self.held.append((ev, now_ns))
            return out
        if self.joined or not isinstance(ev, AudioIn):
            return out + self.core.on_event(ev, now_ns)
        self.held, self.give_up_ns = [(ev, now_ns)], now_ns + GAP_WAIT_NS
        return out + self._join(now_ns)

    def on_tick(self, now_ns: int) -> list[Event]:
        out, self.backlog = self.backlog, []
        if self.held is not None and now_ns >= self.next_poll_ns:
            out += self._join(now_ns)
        return out + self.core.on_tick(now_ns)

    def deadline_ns(self) -> int | None:
        if self.backlog:
            return 0
        if self.held is not None:
            return self.next_poll_ns
        return self.core.deadline_ns()

    def stats(self) -> dict[str, int | float]:
        return self.core.stats()

    def close(self) -> None:
        self.core.close()

    def _join(self, now_ns: int) -> list[Event]:
        """Feed the logged frames between the catch-up and the first live frame, once the log
        has them all (or GAP_WAIT_NS has passed), then the held live events."""
        gap, complete = self._gap(self.held[0][0])
        if not complete and now_ns < self.give_up_ns:
            self.next_poll_ns = now_ns + GAP_POLL_NS
            return []
        if not complete:
            self.core.counts["gap_unfilled"] += 1
            log.warning("the log did not hold all the audio before the first live frame: the rest is silence")
        self.core.counts["gap_frames"] += len(gap)
        out: list[Event] = []
        for t, ev in gap:
            out += serve(self.core, ev, t)
        self.core.catching_up = False
        held, self.held, self.joined = self.held, None, True
        for ev, t in held:
            out += serve(self.core, ev, t)
        return out

    def _gap(self, live: AudioIn) -> tuple[list[Logged], bool]:
        """The logged frames (and played audio) between the catch-up and ``live``, up to the
        first one missing, and whether none is."""
        fed = self.fed
        if fed is None or live.sr_hz != fed.sr_hz or live.stream_pos <= fed.next_pos:
            return [], True
        logged = self.read(fed.recv_ns + 1) if self.read is not None else []
        frames = {ev.stream_pos: (t, ev) for t, ev in reversed(logged)
                  if isinstance(ev, AudioIn) and ev.sr_hz == fed.sr_hz and fed.next_pos <= ev.stream_pos < live.stream_pos}
        out, pos = [], fed.next_pos
        while pos in frames:
            out.append(frames[pos])
            pos += frames[pos][1].n_samples
        played = [(t, ev) for t, ev in logged if isinstance(ev, AudioPlayed) and out and t <= out[-1][0]]
        return sorted(out + played, key=lambda te: te[0]), pos == live.stream_pos
