"""``rtchat log export RUN --to textgrid|eaf|cha|jsonl|mcap --out FILE``: a run in the formats that
Praat, ELAN, CLAN, Foxglove and any JSON reader open (docs/export.md has what each holds).

- ``textgrid`` (Praat; written with praatio) and ``eaf`` (ELAN; pympi-ling): the tiers ``TIERS`` —
  the user's final words with their times, the agent's words as played (one interval per
  ``audio.played`` chunk, its silent edges trimmed: what the user heard, not what was generated),
  the VAD's user speech, who held the floor (``agent.state``) and the agent's decisions
  (``agent.cycle`` other than listen, ``agent.cancel``; a point tier in Praat, 1 ms annotations in
  ELAN, which has none). The EAF links ``session.wav``.
- ``cha`` (CLAN; ``datasets/cha.py``): the conversation as a CA transcript, user ``USR`` (S1),
  agent ``AGT`` (S2), with timing bullets, overlap brackets and timed pauses, the participants'
  names, ages and sexes from the agent's transcript; ``rtchat data talkbank --from DIR`` reads it
  back into transcript lines. The agent's words are spread evenly over each played chunk. CHAT
  names the media after the transcript, so ``--out DIR/session.cha`` goes with ``session.wav``.
- ``jsonl``: one event per line, in log order: ``recv_ns`` (the logger's receive time), ``type``,
  the envelope (``v, src, seq, t_ns, session``) and the fields, bytes as base64.
- ``mcap`` (Foxglove; the mcap package): every event on its topic (the event type), JSON-encoded
  as in ``jsonl`` with a JSON schema per topic; log time = receive time, publish time = the bus
  timestamp ``t_ns``, sequence = ``seq``; plus ``session.wav`` on the topic ``session.audio`` as
  ``foxglove.RawAudio`` (stereo int16: user left, agent right) in ``AUDIO_BLOCK_MS`` blocks.

Time: the tiers and bullets count seconds (ms in CHAT and EAF) from the first sample of
``session.wav``: the audio node's timeline origin ``t0`` (nodes/audio/core.py: sample i plays at
t0 + i / sr), read from ``audio.state.json`` in the run, else from an ``audio.played`` (its
``start_ns`` − ``stream_pos`` / sr), else the first event (no recording: a note says so).
Undecodable records are left out and counted; every file is written atomically.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path

from rtchat.bus.events import (
    ENVELOPE_FIELDS,
    REGISTRY,
    AgentCancel,
    AgentCycle,
    AgentState,
    AsrFinal,
    AudioPlayed,
    Event,
    Message,
    UserText,
)
from rtchat.common.files import replacing, write_atomic
from rtchat.common.schema import to_plain
from rtchat.evals.analyze import AudioClock, Span, Timed, agent_chunks, merge, read_events, spread_words, vad_spans

FORMATS = ("textgrid", "eaf", "cha", "jsonl", "mcap")
TIERS = ("user words", "agent words", "user speech", "floor", "agent decisions")  # the last is a point tier
AUDIO_BLOCK_MS = 200  # session.wav in MCAP: foxglove.RawAudio messages of this length
NS = 1_000_000_000


class ExportError(ValueError):
    """A run that cannot be exported as asked; the message says what was wrong."""


# ---------------------------------------------------------------- the session as tiers


@dataclasses.dataclass
class Tiers:
    origin_ns: int  # the bus time of session.wav's first sample
    origin_from: str  # where origin_ns came from
    wav: Path | None  # the run's session.wav, if any
    wav_s: float  # its length (0 without one)
    intervals: dict[str, list[Span]]  # tier → spans on the bus clock, label in .text
    points: list[tuple[int, str]]  # agent decisions: (bus time, label)
    user_words: list[Span]
    agent_words: list[Span]
    identities: dict  # S1, S2 → Identity, from the agent's last transcript that has them (agent.state)

    def seconds(self, ns: int) -> float:
        return (ns - self.origin_ns) / NS

    def end_s(self) -> float:
        ends = [self.seconds(s.end_ns) for spans in self.intervals.values() for s in spans]
        ends += [self.seconds(t) for t, _ in self.points]
        return max([self.wav_s, *ends, 0.0])


def run_dir_of(run: str | os.PathLike) -> Path:
    p = Path(run)
    return p if p.is_dir() else p.parent


def recording_origin(run_dir: Path, events: list[Timed]) -> tuple[int, str]:
    """(the bus time of session.wav's first sample, where it came from): module doc."""
    from rtchat.nodes.audio.resume import STATE_FILE

    try:
        t0 = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8")).get("t0_ns")
        if type(t0) is int:
            return t0, STATE_FILE
    except (OSError, ValueError, AttributeError):
        pass  # no state file (an older run, or not launched): the log tells it too
    played = next((e.event for e in events if isinstance(e.event, AudioPlayed) and e.event.sr_hz > 0), None)
    if played is not None:
        return played.start_ns - played.stream_pos * NS // played.sr_hz, "audio.played"
    return (events[0].t_ns if events else 0), "the first event (the run has no recording timing)"


def _no_overlaps(spans: list[Span]) -> list[Span]:
    """In time order, each starting no earlier than the one before ends (tiers hold no overlaps)."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        start = max(s.start_ns, out[-1].end_ns) if out else s.start_ns
        if s.end_ns > start:
            out.append(Span(start, s.end_ns, s.text))
    return out


def user_words(events: list[Timed], clock: AudioClock) -> list[Span]:
    """Final words with their times; a final without word times, and typed words, at their arrival."""
    out = []
    for e in events:
        ev = e.event
        if isinstance(ev, AsrFinal) and ev.words and clock.offset_ns is not None:
            out += [Span(clock(w.start_ns), clock(w.end_ns), w.text.strip()) for w in ev.words if w.text.strip()]
        elif isinstance(ev, AsrFinal | UserText):
            out += [Span(e.t_ns, e.t_ns, w) for w in ev.text.split()]
    return sorted(out, key=lambda s: s.start_ns)


def floor_spans(events: list[Timed], end_ns: int) -> list[Span]:
    """Who held the floor, as the agent said in agent.state, from each change to the next."""
    changes: list[tuple[int, str]] = []
    for e in events:
        if isinstance(e.event, AgentState) and (not changes or changes[-1][1] != e.event.floor):
            changes.append((e.t_ns, e.event.floor))
    if not changes:
        return []
    bounds = [t for t, _ in changes[1:]] + [max(end_ns, changes[-1][0])]
    return [Span(t, b, floor) for (t, floor), b in zip(changes, bounds, strict=True)]


def decisions(events: list[Timed]) -> list[tuple[int, str]]:
    out = []
    for e in events:
        if isinstance(e.event, AgentCycle) and e.event.decision != "listen":
            out.append((e.t_ns, e.event.decision))
        elif isinstance(e.event, AgentCancel):
            out.append((e.t_ns, f"cancel gen {e.event.gen}"))
    return out


def _identities(sequence: str) -> dict:
    from rtchat.datasets.lines import LineError, parse_line

    try:
        return parse_line(sequence).identities
    except LineError:
        return {}


def tiers(run: str | os.PathLike, events: list[Timed]) -> Tiers:
    import soundfile

    run_dir = run_dir_of(run)
    clock = AudioClock(events)
    chunks = [c for c, _ in agent_chunks(events)]
    origin, origin_from = recording_origin(run_dir, events)
    wav = run_dir / "session.wav"
    wav_s = soundfile.info(str(wav)).duration if wav.is_file() else 0.0
    words = user_words(events, clock)
    played = [Span(c.start_ns, c.end_ns, " ".join(w.text for w in spread_words([c]))) for c in chunks]
    speech = merge(vad_spans(events, clock), 0)
    last = max([s.end_ns for s in words + played + speech] + [e.t_ns for e in events[-1:]], default=origin)
    states = [e.event.sequence for e in events if isinstance(e.event, AgentState)]
    identities = next((ids for seq in reversed(states) if (ids := _identities(seq))), {})
    return Tiers(
        origin_ns=origin, origin_from=origin_from, wav=wav if wav.is_file() else None, wav_s=wav_s,
        intervals={"user words": _no_overlaps([w for w in words if w.end_ns > w.start_ns]),
                   "agent words": _no_overlaps(played), "user speech": [Span(s.start_ns, s.end_ns, "speech") for s in speech],
                   "floor": floor_spans(events, last)},
        points=decisions(events), user_words=words, agent_words=spread_words(chunks), identities=identities,
    )


def _seconds_spans(t: Tiers, spans: list[Span]) -> list[tuple[float, float, str]]:
    """Spans as seconds on the recording, cut at its start (nothing is before sample 0)."""
    out = []
    for s in spans:
        a, b = max(0.0, t.seconds(s.start_ns)), t.seconds(s.end_ns)
        if b > a:
            out.append((round(a, 6), round(b, 6), s.text))
    return out


def _ms_points(t: Tiers) -> list[tuple[int, str]]:
    """Decisions in whole ms from the recording's start; those in the same ms joined."""
    out: list[tuple[int, str]] = []
    for ns, label in sorted(t.points):
        ms = round(t.seconds(ns) * 1000)
        if ms < 0:
            continue
        if out and out[-1][0] == ms:
            out[-1] = (ms, f"{out[-1][1]}; {label}")
        else:
            out.append((ms, label))
    return out


# ---------------------------------------------------------------- Praat, ELAN, CLAN


def write_textgrid(t: Tiers, out: Path) -> None:
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier
    from praatio.data_classes.point_tier import PointTier

    end = max(t.end_s(), 0.001)
    tg = textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=end)
    for name in TIERS[:-1]:
        tg.addTier(IntervalTier(name, _seconds_spans(t, t.intervals[name]), 0.0, end))
    tg.addTier(PointTier(TIERS[-1], [(ms / 1000, label) for ms, label in _ms_points(t)], 0.0, end))
    with replacing(out) as tmp:
        tg.save(str(tmp), format="long_textgrid", includeBlankSpaces=True)


def write_eaf(t: Tiers, out: Path) -> None:
    from pympi.Elan import Eaf

    eaf = Eaf(author="rtchat")
    if t.wav is not None:
        eaf.add_linked_file(t.wav.resolve().as_uri(), relpath=os.path.relpath(t.wav.resolve(), out.resolve().parent),
                            mimetype="audio/x-wav")
    for name in TIERS[:-1]:
        eaf.add_tier(name)
        for a, b, label in _seconds_spans(t, t.intervals[name]):
            start = round(a * 1000)
            eaf.add_annotation(name, start, max(start + 1, round(b * 1000)), label)
    eaf.add_tier(TIERS[-1])
    for ms, label in _ms_points(t):
        eaf.add_annotation(TIERS[-1], ms, ms + 1, label)
    eaf.remove_tier("default")
    with replacing(out) as tmp:
        tmp.unlink()  # pympi keeps an existing file as a .bak beside it: write where nothing is
        eaf.to_file(str(tmp))


def write_cha(t: Tiers, out: Path, run_id: str) -> None:
    from rtchat.datasets.cha import Speaker, TimedWord, write_chat
    from rtchat.datasets.lines import Identity

    speakers = [Speaker("USR", t.identities.get("S1", Identity())), Speaker("AGT", t.identities.get("S2", Identity()))]
    words = [TimedWord(code, round(max(0.0, t.seconds(w.start_ns)) * 1000), round(max(0.0, t.seconds(w.end_ns)) * 1000), w.text)
             for code, spans in (("USR", t.user_words), ("AGT", t.agent_words)) for w in spans if t.seconds(w.end_ns) >= 0]
    note = (f"rtchat run {run_id}: the user is USR, the agent AGT (words as played); bullets in ms from the first "
            f"sample of the run's session.wav (origin from {t.origin_from}), which CLAN plays as {out.stem}.wav beside this file")
    # CHAT names the media after the transcript (readers check it): session.cha goes with session.wav
    write_atomic(out, write_chat(speakers, words, media=out.stem, comments=(note,)))


# ---------------------------------------------------------------- JSON lines and MCAP


def event_json(msg: Message) -> dict:
    """``type``, the envelope and the fields; bytes as base64 (what JSON readers and Foxglove expect)."""
    payload = REGISTRY[msg.event.TYPE].payload_fields
    fields = {k: (base64.b64encode(v).decode("ascii") if k in payload else v) for k, v in to_plain(msg.event).items()}
    return {"type": msg.event.TYPE, **to_plain(msg.env), **fields}


def _schema_of(tp) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    if tp is bytes:
        return {"type": "string", "contentEncoding": "base64"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a) for a in args]}
    if origin is tuple:
        return {"type": "array", "items": _schema_of(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1])}
    if dataclasses.is_dataclass(tp):
        return _object_schema(tp)
    raise TypeError(f"no JSON schema for {tp!r}")


def _object_schema(cls: type, extra: dict | None = None) -> dict:
    hints = typing.get_type_hints(cls)
    props = {**(extra or {}), **{f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(cls)}}
    return {"type": "object", "properties": props, "required": list(props)}


def json_schema(cls: type[Event]) -> dict:
    """The JSON schema of ``event_json``'s objects for one event type."""
    from rtchat.bus.events import Envelope

    envelope = {"type": {"const": cls.TYPE}} | {f: _schema_of(typing.get_type_hints(Envelope)[f]) for f in ENVELOPE_FIELDS}
    return {"title": f"rtchat.{cls.TYPE}", **_object_schema(cls, envelope)}


def _messages(reader, skipped: list[int]):
    """(recv_ns, Message) of every decodable record, in log order; ``skipped[0]`` counts the rest."""
    from rtchat.bus.logcli import LIMITS
    from rtchat.bus.wire import WireError, decode

    for rec in reader:
        try:
            yield rec.recv_ns, decode(rec.frames, LIMITS)
        except WireError:
            skipped[0] += 1


def write_jsonl(run: str | os.PathLike, out: Path, skipped: list[int]) -> int:
    from rtchat.bus.eventlog import LogReader

    n = 0
    with replacing(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for recv_ns, msg in _messages(LogReader(run), skipped):
            f.write(json.dumps({"recv_ns": recv_ns, **event_json(msg)}, ensure_ascii=False) + "\n")
            n += 1
    return n


RAW_AUDIO_SCHEMA = {  # Foxglove's foxglove.RawAudio, JSON encoding (docs.foxglove.dev, "RawAudio")
    "title": "foxglove.RawAudio", "type": "object",
    "properties": {"timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
                   "data": {"type": "string", "contentEncoding": "base64"}, "format": {"type": "string"},
                   "sample_rate": {"type": "integer"}, "number_of_channels": {"type": "integer"}},
}


def _write_audio(writer, wav: Path, origin_ns: int) -> None:
    import soundfile

    data, sr = soundfile.read(str(wav), dtype="int16", always_2d=True)
    schema = writer.register_schema(name="foxglove.RawAudio", encoding="jsonschema", data=json.dumps(RAW_AUDIO_SCHEMA).encode())
    channel = writer.register_channel(topic="session.audio", message_encoding="json", schema_id=schema)
    step = sr * AUDIO_BLOCK_MS // 1000
    for i in range(0, len(data), step):
        t = origin_ns + i * NS // sr
        body = {"timestamp": {"sec": t // NS, "nsec": t % NS}, "data": base64.b64encode(data[i : i + step].tobytes()).decode(),
                "format": "pcm-s16", "sample_rate": sr, "number_of_channels": data.shape[1]}
        writer.add_message(channel, log_time=t, publish_time=t, data=json.dumps(body).encode())


def write_mcap(run: str | os.PathLike, out: Path, skipped: list[int]) -> int:
    from mcap.writer import Writer

    from rtchat import __version__
    from rtchat.bus.eventlog import LogReader

    n, channels, reader = 0, {}, LogReader(run)
    with replacing(out) as tmp, open(tmp, "wb") as f:
        writer = Writer(f)
        writer.start(profile="", library=f"rtchat {__version__}")
        for recv_ns, msg in _messages(reader, skipped):
            topic = msg.event.TYPE
            if topic not in channels:
                schema = writer.register_schema(name=f"rtchat.{topic}", encoding="jsonschema",
                                                data=json.dumps(json_schema(type(msg.event))).encode())
                channels[topic] = writer.register_channel(topic=topic, message_encoding="json", schema_id=schema)
            writer.add_message(channels[topic], log_time=recv_ns, publish_time=msg.env.t_ns, sequence=msg.env.seq & 0xFFFFFFFF,
                               data=json.dumps(event_json(msg), ensure_ascii=False).encode())
            n += 1
        wav = run_dir_of(run) / "session.wav"
        if wav.is_file():
            events, _ = read_events(run)
            _write_audio(writer, wav, recording_origin(run_dir_of(run), events)[0])
        for i, meta in enumerate(reader.metas):  # the log's header records: run id, versions, open time
            strings = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
            writer.add_metadata(f"rtchat.header.{i}", strings)
        writer.finish()
    return n


# ---------------------------------------------------------------- the command


def export(run: str | os.PathLike, fmt: str, out: Path) -> str:
    """Write ``run`` as ``fmt`` to ``out``; a one-line summary of what was written."""
    from rtchat.bus.eventlog import resolve_log_path

    if fmt not in FORMATS:
        raise ExportError(f"--to {fmt}: unknown format; allowed: {', '.join(FORMATS)}")
    log_path = resolve_log_path(run)
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; give the file to write")
    if out.resolve() in (log_path.resolve(), (run_dir_of(run) / "session.wav").resolve()):
        raise ExportError(f"--out {out}: would overwrite the run's own {out.name}; write the export elsewhere")
    skipped = [0]
    if fmt in ("jsonl", "mcap"):
        n = (write_jsonl if fmt == "jsonl" else write_mcap)(run, out, skipped)
        what = f"{n} events"
    else:
        events, notes = read_events(run)
        skipped[0] = notes["undecodable"]
        t = tiers(run, events)
        if fmt == "textgrid":
            write_textgrid(t, out)
        elif fmt == "eaf":
            write_eaf(t, out)
        else:
            write_cha(t, out, run_dir_of(run).name)
        what = f"{len(t.user_words)} user words, {len(t.intervals['agent words'])} agent chunks; time 0 = session.wav's " \
               f"first sample (from {t.origin_from})"
    left_out = f"; {skipped[0]} undecodable record(s) left out" if skipped[0] else ""
    return f"wrote {out} ({fmt}: {what}{left_out})"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="RUN", help="a run directory (runs/<id>) or its events.rtlog")
    parser.add_argument("--to", required=True, choices=FORMATS, metavar="FORMAT",
                        help=f"one of {', '.join(FORMATS)}: Praat TextGrid, ELAN EAF, CLAN CHAT, JSON lines, MCAP (Foxglove)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write (replaced atomically)")
    parser.epilog = ("TextGrid, EAF and CHAT count time from the first sample of the run's session.wav; CHAT names "
                     "its media after the file, so write DIR/session.cha (rtchat data talkbank --from DIR reads it back).")


def run(args: argparse.Namespace) -> int:
    from rtchat.bus.eventlog import LogError

    try:
        print(export(args.log, args.to, args.out))
    except (FileNotFoundError, LogError, ExportError) as exc:
        print(f"rtchat log export: {exc}", file=sys.stderr)
        return 2
    return 0
