"""The event catalogue: every message that travels on the bus, one frozen dataclass each.

Each class names its wire tag (``TYPE``, also the ZeroMQ topic), who sends it and who
consumes it. ``REGISTRY`` maps tags to classes; it is built at import and refuses duplicate
tags, so decoding looks a tag up here and never imports anything the wire names.

Conventions: one time unit, integer nanoseconds (``*_ns``); seconds only for display.
Fields typed ``bytes`` travel as raw payload frames after the header (int16 PCM, never
base64). Facts are past tense or nouns (``AsrFinal``, ``AudioPlayed``); commands are
imperative (``AgentCancel``, ``Shutdown``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import ClassVar, Literal

from rtchat.common.schema import Converter, fields_of

WIRE_VERSION = 1
ENVELOPE_FIELDS = ("v", "src", "seq", "t_ns", "session")

Scalar = int | float | str | bool | None
Floor = Literal["none", "user", "agent"]


class Event:
    """Base of every bus event. Subclasses are made with ``@event("topic.tag")``."""

    __slots__ = ()
    TYPE: ClassVar[str]


@dataclasses.dataclass(frozen=True, slots=True)
class EventSpec:
    """What the codec needs to know about one event class, computed once at registration."""

    cls: type[Event]
    header_fields: tuple[tuple[str, Converter], ...]
    payload_fields: tuple[str, ...]


REGISTRY: dict[str, EventSpec] = {}


def event(tag: str):
    """Class decorator: make a frozen, slotted, keyword-only dataclass and register its tag."""

    def wrap(cls: type) -> type[Event]:
        if tag in REGISTRY:
            raise ValueError(f"duplicate event tag {tag!r}: {REGISTRY[tag].cls.__name__} and {cls.__name__}")
        if not tag or not tag.isascii() or " " in tag:
            raise ValueError(f"bad event tag {tag!r}: use ascii 'area.name'")
        cls.TYPE = tag
        dc = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
        hints = typing.get_type_hints(dc)
        header, payload = [], []
        for name, (conv, _) in fields_of(dc).items():
            if name in ENVELOPE_FIELDS:
                raise ValueError(f"{cls.__name__}.{name} clashes with an envelope field")
            if hints[name] is bytes:
                payload.append(name)
            else:
                header.append((name, conv))
        REGISTRY[tag] = EventSpec(dc, tuple(header), tuple(payload))
        return dc

    return wrap


def record(cls: type) -> type:
    """A nested value type inside events (e.g. a word with its times)."""
    return dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """Stamped on every event by its publisher."""

    v: int  # wire version, WIRE_VERSION
    src: str  # publishing node's name
    seq: int  # per publisher, +1 each event; gaps reveal loss
    t_ns: int  # publish time, integer ns since the epoch, from the publisher's clock
    session: str  # run id


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One decoded bus message."""

    env: Envelope
    event: Event


# ---------------------------------------------------------------- records


@record
class Word:
    text: str
    start_ns: int  # audio time (from stream_pos) where the word starts
    end_ns: int
    prob: float | None = None  # recogniser confidence, when it gives one


# ---------------------------------------------------------------- audio


@event("audio.in")
class AudioIn(Event):
    """One frame of user audio (mono int16). audio → asr, logger."""

    pcm: bytes
    sr_hz: int
    n_samples: int
    stream_pos: int  # index of the first sample since the stream started
    t_capture_ns: int  # when the device delivered the first sample


@event("audio.eof")
class AudioEof(Event):
    """The user's input ended (end of the WAV file, the device gone). audio → launcher, analysis."""

    stream_pos: int  # samples of audio.in sent, at the frames' rate
    reason: str  # "end of file", "device lost: …"


@event("audio.played")
class AudioPlayed(Event):
    """A chunk of agent audio really reached the speaker (sent once it ended or was cut by
    ``agent.cancel``; start/end are when its first and last sample played). audio → asr, agent, analysis."""

    turn: int
    gen: int
    chunk: int
    text: str  # the words this chunk carries
    start_ns: int
    end_ns: int
    stream_pos: int  # output sample index of the chunk's first sample
    n_samples: int
    sr_hz: int


# ---------------------------------------------------------------- asr


@event("vad.start")
class VadStart(Event):
    """User speech began. asr → agent, analysis."""

    stream_pos: int
    audio_ns: int  # audio time of the onset
    at_ns: int = 0  # the onset on the capture clock (the frames' t_capture_ns); 0 = unknown


@event("vad.end")
class VadEnd(Event):
    """User speech ended. asr → agent, analysis."""

    stream_pos: int
    audio_ns: int
    at_ns: int = 0  # the speech end on the capture clock; 0 = unknown


@event("vad.pause")
class VadPause(Event):
    """The user fell silent inside speech (``asr.silence_hop_ms`` of it): the speech may end in this
    silence (``vad.end`` once it reaches ``asr.vad_min_silence_ms``) or go on (``vad.resume``).
    ``stream_pos``/``audio_ns``/``at_ns`` are where ``vad.end`` would place the end. asr → agent, analysis."""

    stream_pos: int
    audio_ns: int
    at_ns: int = 0  # on the capture clock; 0 = unknown


@event("vad.resume")
class VadResume(Event):
    """The user speaks again after a ``vad.pause``, before ``vad.end``. asr → agent, analysis."""

    stream_pos: int
    audio_ns: int
    at_ns: int = 0  # on the capture clock; 0 = unknown


@event("asr.partial")
class AsrPartial(Event):
    """The current, revisable hypothesis; replaces the previous one. asr → agent, ui."""

    text: str
    rev: int  # increases with every new hypothesis of the same utterance
    utterance: int
    words: tuple[Word, ...] = ()
    spoken_until_ns: int = 0  # when the last word ended, on the capture clock; 0 = unknown


@event("asr.final")
class AsrFinal(Event):
    """Committed words with their audio times. asr → agent, ui."""

    text: str
    utterance: int
    words: tuple[Word, ...] = ()
    spoken_until_ns: int = 0  # when the last word ended, on the capture clock; 0 = unknown


@event("user.text")
class UserText(Event):
    """Typed words; same meaning as asr.final. terminal/web → agent."""

    text: str


# ---------------------------------------------------------------- agent


@event("agent.say")
class AgentSay(Event):
    """Words the agent speaks now (may hold pause tokens such as ``(0.5)``). agent → tts, ui."""

    turn: int
    gen: int
    text: str
    chunk: int = 0  # running index of the agent's output chunks in this turn; audio.played echoes it


@event("agent.pause")
class AgentPause(Event):
    """The agent holds the floor silently. agent → tts."""

    turn: int
    gen: int
    duration_ns: int


@event("agent.prerender")
class AgentPrerender(Event):
    """A predicted reply to render ahead of time, in release chunks; replaces any earlier one. agent → tts."""

    turn: int
    gen: int
    chunks: tuple[str, ...]  # each with its leading space; released in order by agent.release


@event("agent.release")
class AgentRelease(Event):
    """Play the next n_chunks pre-rendered chunks (render ``text`` if they are missing). agent → tts."""

    turn: int
    gen: int
    n_chunks: int
    text: str
    chunk: int = 0  # the index (as in agent.say) of the first released chunk


@event("agent.cancel")
class AgentCancel(Event):
    """Drop everything of a generation older than gen, at once (barge-in). agent → tts, audio."""

    turn: int
    gen: int


@event("agent.state")
class AgentState(Event):
    """The transcript the agent sees and who holds the floor. agent → ui."""

    turn: int
    gen: int
    sequence: str
    floor: Floor


@event("agent.cycle")
class AgentCycle(Event):
    """One decision cycle: what went in, what was predicted, how long it took. agent → logger."""

    turn: int
    gen: int
    input_text: str
    prediction: str
    decision: str
    timings_ns: dict[str, int] = dataclasses.field(default_factory=dict)
    forwards: dict[str, int] = dataclasses.field(default_factory=dict)  # model forward passes by kind


@event("agent.schedule")
class AgentSchedule(Event):
    """The switch schedule (nodes/agent/schedule.py): ``planned`` (the probabilities after each
    pause, from new words), ``armed`` (the VAD heard the speech stop), ``fired`` (the agent took
    the turn on it), ``disarmed`` (the user spoke again first). agent → logger, analysis."""

    turn: int
    gen: int
    action: Literal["planned", "armed", "fired", "disarmed"]
    fire_after_ns: int  # the pause after which the agent takes the turn (fired: the pause it took it on); -1: none
    pauses_ns: tuple[int, ...] = ()  # planned: the pauses the schedule covers (0: the transcript as it stands)
    probs: tuple[float, ...] = ()  # planned: P(the agent's tag next) after each


# ---------------------------------------------------------------- tts


@event("tts.audio")
class TtsAudio(Event):
    """Synthesized PCM (mono int16) for one piece of one agent chunk. tts → audio.

    A chunk (``agent.say`` / a released chunk) streams as one or more pieces in order, so its
    first sound can play before the rest is rendered; ``last`` marks its final piece, after
    which the audio node reports the whole chunk in one ``audio.played``."""

    turn: int
    gen: int
    chunk: int  # the agent's chunk index (agent.say.chunk, or agent.release.chunk + i)
    text: str  # the words this piece carries ("" for a silence piece)
    pcm: bytes
    sr_hz: int
    n_samples: int
    last: bool  # the final piece of this chunk


# ---------------------------------------------------------------- evaluations


@event("eval.progress")
class EvalProgress(Event):
    """A long ``rtchat eval`` advanced by one shard (a transcript line). rtchat eval --bus → ui."""

    name: str  # the evaluation: "all", "pred"
    done: int
    total: int


@event("eval.result")
class EvalResult(Event):
    """An ``rtchat eval`` finished; its tables as JSON text (NaN written as null). rtchat eval --bus → ui."""

    name: str
    result_json: str


# ---------------------------------------------------------------- control


@event("ctl.reset")
class Reset(Event):
    """Start a new conversation. launcher, ui → all."""

    reason: str = ""


@event("ctl.live")
class Live(Event):
    """Every node is ready: the session starts now (a WAV input begins playing). Sent again when
    a restarted node becomes ready. launcher → all."""

    run: str = ""


@event("ctl.config")
class ConfigChange(Event):
    """Change settings live: dotted keys to new values. ui → all."""

    changes: dict[str, Scalar]


@event("ctl.shutdown")
class Shutdown(Event):
    """Stop now. launcher → the nodes named (all when empty)."""

    reason: str = ""
    nodes: tuple[str, ...] = ()

    def applies_to(self, node: str) -> bool:
        return not self.nodes or node in self.nodes


# ---------------------------------------------------------------- node lifecycle


@event("node.ping")
class NodePing(Event):
    """A node's probe of its own route through the proxy (the ready handshake). node → itself."""

    node: str
    nonce: int


@event("node.loading")
class NodeLoading(Event):
    """Progress while a node starts (loading a model…). node → launcher."""

    node: str
    stage: str
    fraction: float | None = None


@event("node.ready")
class NodeReady(Event):
    """Models loaded and subscriptions live. node → launcher, logger."""

    node: str
    pid: int
    load_ns: int  # from the node's start (after imports) to ready
    device: str = "cpu"


@event("node.heartbeat")
class NodeHeartbeat(Event):
    """Liveness, progress and counters, from a thread of the node's own. node → launcher, logger, ui."""

    node: str
    pid: int
    uptime_ns: int
    stats: dict[str, int | float]  # the counters as the loop last took them
    loops: int = 0  # passes of the node's loop so far: it grows while the loop makes progress
    busy_ns: int = 0  # how long the loop has been inside one call (a model run); 0 = it is waiting


@event("node.error")
class NodeError(Event):
    """A fault the node survived (bad frame, failing handler) or one that ends it. node → launcher, logger."""

    node: str
    kind: Literal["decode", "handler", "fatal"]
    detail: str
    count: int  # faults of this kind so far, this one included


@event("node.restarted")
class NodeRestarted(Event):
    """The launcher restarted a node. launcher → logger, ui."""

    node: str
    reason: str  # "exited with -9", "missed 3 heartbeats"
    attempt: int
    backoff_ns: int
    pid: int


def spec(tag: str) -> EventSpec | None:
    return REGISTRY.get(tag)
