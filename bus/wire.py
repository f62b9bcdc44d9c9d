"""Wire format: an event ⇄ the ZeroMQ multipart ``[topic, header, *payload]``.

``topic`` is the event's tag (ascii), so prefix subscriptions select event families.
``header`` is a msgpack map of the envelope (``v, src, seq, t_ns, session``) and the event's
non-bytes fields. ``payload`` frames carry the event's ``bytes`` fields raw, in declaration
order. Decoding is strict: a frame that is too large, an unknown tag or version, a missing,
unknown or wrongly typed field, or a wrong number of payload frames raises ``WireError`` with a
message naming what was wrong. Nothing is unpickled or imported.
"""

from __future__ import annotations

import dataclasses

import msgpack

from rtchat.bus.events import ENVELOPE_FIELDS, REGISTRY, WIRE_VERSION, Envelope, Event, Message
from rtchat.common.schema import SchemaError, describe, to_plain

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # a 60 s, 48 kHz int16 chunk is 5.8 MB
MAX_HEADER_BYTES = 1024 * 1024  # headers are text and numbers; a transcript fits easily
MAX_FRAMES = 16


class WireError(ValueError):
    """A frame sequence is not a valid event; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class WireLimits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # all frames together
    max_header_bytes: int = MAX_HEADER_BYTES


def encode(event: Event, env: Envelope) -> list[bytes]:
    spec = REGISTRY[event.TYPE]
    header = {
        "v": env.v,
        "src": env.src,
        "seq": env.seq,
        "t_ns": env.t_ns,
        "session": env.session,
    }
    for name, _ in spec.header_fields:
        header[name] = to_plain(getattr(event, name))
    frames = [event.TYPE.encode("ascii"), msgpack.packb(header, use_bin_type=True)]
    frames.extend(getattr(event, name) for name in spec.payload_fields)
    return frames


def decode(frames: list[bytes], limits: WireLimits = WireLimits()) -> Message:
    """Frames → Message, or WireError naming the fault."""
    if len(frames) < 2:
        raise WireError(f"expected [topic, header, *payload] frames, got {len(frames)} frame(s)")
    if len(frames) > MAX_FRAMES:
        raise WireError(f"{len(frames)} frames exceeds the limit of {MAX_FRAMES}")
    size = sum(len(f) for f in frames)
    if size > limits.max_message_bytes:
        raise WireError(f"message of {size} bytes exceeds max_message_bytes={limits.max_message_bytes}")
    topic_raw, header_raw = bytes(frames[0]), frames[1]
    try:
        topic = topic_raw.decode("ascii")
    except UnicodeDecodeError:
        raise WireError(f"topic is not ascii: {topic_raw[:40]!r}") from None
    spec = REGISTRY.get(topic)
    if spec is None:
        raise WireError(f"unknown event type {topic[:60]!r}")
    if len(header_raw) > limits.max_header_bytes:
        raise WireError(f"{topic}: header of {len(header_raw)} bytes exceeds {limits.max_header_bytes}")
    header = _unpack(topic, header_raw, limits)
    env = _envelope(topic, header)
    expected = len(spec.payload_fields)
    if len(frames) - 2 != expected:
        raise WireError(f"{topic}: expected {expected} payload frame(s), got {len(frames) - 2}")
    known = set(ENVELOPE_FIELDS)
    kwargs = {}
    try:
        for name, conv in spec.header_fields:
            known.add(name)
            if name not in header:
                raise WireError(f"{topic}: field {name!r} missing")
            kwargs[name] = conv(header[name], f"{topic}.{name}")
    except SchemaError as exc:
        raise WireError(str(exc)) from None
    unknown = set(header) - known
    if unknown:
        raise WireError(f"{topic}: unknown field {sorted(map(str, unknown))[0]!r}")
    for name, frame in zip(spec.payload_fields, frames[2:], strict=True):
        kwargs[name] = bytes(frame)
    try:
        event = spec.cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise WireError(f"{topic}: {exc}") from None
    return Message(env, event)


def _unpack(topic: str, raw: bytes, limits: WireLimits) -> dict:
    try:
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_header_bytes,
            max_bin_len=limits.max_header_bytes,
            max_array_len=100_000,
            max_map_len=10_000,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(f"{topic}: header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise WireError(f"{topic}: header must be a map, got {describe(header)}")
    return header


def _envelope(topic: str, header: dict) -> Envelope:
    v = header.get("v")
    if v != WIRE_VERSION or type(v) is not int:
        raise WireError(f"{topic}: unknown wire version {describe(v)}; this node speaks v{WIRE_VERSION}")
    src, seq, t_ns, session = (header.get(k) for k in ("src", "seq", "t_ns", "session"))
    if type(src) is not str or type(session) is not str:
        raise WireError(f"{topic}: envelope src/session must be strings")
    if type(seq) is not int or type(t_ns) is not int or seq < 0:
        raise WireError(f"{topic}: envelope seq/t_ns must be integers, got {describe(seq)}/{describe(t_ns)}")
    return Envelope(v=v, src=src, seq=seq, t_ns=t_ns, session=session)
