"""The wire codec: every catalogued event survives a round trip, and decoding untrusted frames
is strict — anything malformed raises WireError naming the problem, and nothing else."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtchat.bus import wire
from rtchat.bus.events import (
    REGISTRY,
    WIRE_VERSION,
    AudioIn,
    Envelope,
    Event,
    Word,
)
from rtchat.bus.wire import MAX_FRAMES, WireError, WireLimits, decode, encode

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = (-(2**63), 2**63 - 1)  # what msgpack carries as a signed integer

ENV = Envelope(v=WIRE_VERSION, src="asr", seq=41, t_ns=1_700_000_000_123_456_789, session="run-1")


# ---------------------------------------------------------------- values from type hints


def sample(tp: Any) -> Any:
    """One deterministic, non-default value of an annotated type (nested records included)."""
    if tp is int:
        return -(2**40) - 7
    if tp is float:
        return 0.1
    if tp is str:
        return "héllo wörld ✓"
    if tp is bool:
        return True
    if tp is bytes:
        return bytes(range(256)) * 3  # every byte value, an even length like int16 PCM
    if dataclasses.is_dataclass(tp):
        return build(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return args[-1]  # not the first: a default-ish first choice would hide a mix-up
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return (sample(args[0]), sample(args[0]))
    if origin is dict and args[0] is str:
        is_union = typing.get_origin(args[1]) in (typing.Union, types.UnionType)
        values = typing.get_args(args[1]) if is_union else (args[1],)  # one entry per member type
        return {f"k{i}": (None if v is type(None) else sample(v)) for i, v in enumerate(values)}
    raise TypeError(f"no sample for {tp!r}: teach tests/test_wire.py this annotation")


def build(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name]) for f in dataclasses.fields(cls)})


def strategy(tp: Any) -> st.SearchStrategy:
    """A hypothesis strategy for any annotation the catalogue uses."""
    if tp is int:
        return st.integers(*INT64)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)  # the codec accepts finite numbers only
    if tp is str:
        return st.text(max_size=40)
    if tp is bool:
        return st.booleans()
    if tp is bytes:
        return st.binary(max_size=256)
    if tp is type(None):
        return st.none()
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return st.builds(tp, **{f.name: strategy(hints[f.name]) for f in dataclasses.fields(tp)})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy(args[0]), max_size=4).map(tuple)
    if origin is dict and args[0] is str:
        return st.dictionaries(st.text(max_size=12), strategy(args[1]), max_size=4)
    raise TypeError(f"no strategy for {tp!r}: teach tests/test_wire.py this annotation")


events = st.sampled_from(sorted(REGISTRY)).flatmap(lambda tag: strategy(REGISTRY[tag].cls))
envelopes = st.builds(
    Envelope,
    v=st.just(WIRE_VERSION),
    src=st.text(max_size=20),
    seq=st.integers(0, INT64[1]),
    t_ns=st.integers(*INT64),
    session=st.text(max_size=20),
)


def typed(value: Any) -> Any:
    """A value with every scalar's type made explicit, so 1 == True == 1.0 cannot pass for equal."""
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, tuple((f.name, typed(getattr(value, f.name))) for f in dataclasses.fields(value)))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(typed(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, typed(v)) for k, v in value.items())))
    return (type(value).__name__, value)


def assert_round_trip(event: Event, env: Envelope) -> None:
    frames = encode(event, env)
    assert all(type(f) is bytes for f in frames)
    msg = decode(frames)
    assert msg.env == env
    assert msg.event == event
    assert typed(msg.event) == typed(event)


# ---------------------------------------------------------------- round trips


SAMPLES = {tag: build(spec.cls) for tag, spec in REGISTRY.items()}


def test_every_registered_event_type_has_a_sample():
    assert set(SAMPLES) == set(REGISTRY)
    assert len(REGISTRY) >= 20  # the catalogue did not silently shrink to nothing


@pytest.mark.parametrize("tag", sorted(REGISTRY))
def test_every_event_type_round_trips(tag):
    event = SAMPLES[tag]
    assert event.TYPE == tag
    assert_round_trip(event, ENV)


@pytest.mark.parametrize("tag", sorted(REGISTRY))
def test_topic_is_the_tag_and_bytes_fields_travel_raw_in_declaration_order(tag):
    event, spec = SAMPLES[tag], REGISTRY[tag]
    frames = encode(event, ENV)
    assert frames[0] == tag.encode("ascii")
    assert frames[2:] == [getattr(event, name) for name in spec.payload_fields]
    header = msgpack.unpackb(frames[1], raw=False)
    assert set(header) == {"v", "src", "seq", "t_ns", "session"} | {name for name, _ in spec.header_fields}
    assert not any(isinstance(v, bytes) for v in header.values())  # no base64, no bin in the header


def test_audio_frames_carry_pcm_as_a_separate_frame():
    pcm = b"\x01\x00\xff\x7f" * 160
    frames = encode(AudioIn(pcm=pcm, sr_hz=16_000, n_samples=320, stream_pos=640, t_capture_ns=5), ENV)
    assert len(frames) == 3 and frames[2] == pcm


@PROPERTY
@given(event=events, env=envelopes)
def test_round_trip_holds_for_random_field_values(event, env):
    assert_round_trip(event, env)


# ---------------------------------------------------------------- strict decoding


def frames_with(tag: str, **changes: Any) -> list[bytes]:
    """A valid encoding of the sample event with header fields replaced (or removed by ...)."""
    frames = encode(SAMPLES[tag], ENV)
    header = msgpack.unpackb(frames[1], raw=False)
    for key, value in changes.items():
        if value is ...:
            del header[key]
        else:
            header[key] = value
    return [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]


def test_unknown_event_type_is_rejected():
    frames = encode(SAMPLES["user.text"], ENV)
    with pytest.raises(WireError, match=r"unknown event type 'user\.nope'"):
        decode([b"user.nope", *frames[1:]])


@pytest.mark.parametrize("v", [WIRE_VERSION + 1, 0, True, 1.0, "1", None, ...])
def test_unknown_wire_version_is_rejected(v):
    with pytest.raises(WireError, match=r"user\.text: unknown wire version .*speaks v1"):
        decode(frames_with("user.text", v=v))


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"src": 3}, r"envelope src/session must be strings"),
        ({"session": ...}, r"envelope src/session must be strings"),
        ({"seq": -1}, r"envelope seq/t_ns must be integers, got int -1"),
        ({"seq": True}, r"envelope seq/t_ns must be integers, got bool True"),
        ({"t_ns": 1.5}, r"envelope seq/t_ns must be integers.*float 1\.5"),
    ],
)
def test_malformed_envelope_is_rejected(changes, pattern):
    with pytest.raises(WireError, match=pattern):
        decode(frames_with("user.text", **changes))


def test_missing_field_is_named():
    with pytest.raises(WireError, match=r"agent\.say: field 'text' missing"):
        decode(frames_with("agent.say", text=...))


def test_missing_field_that_has_a_default_is_still_rejected():
    # the encoder always writes every field, so a missing one means a foreign or broken sender
    with pytest.raises(WireError, match=r"asr\.final: field 'words' missing"):
        decode(frames_with("asr.final", words=...))


def test_unknown_field_is_named():
    with pytest.raises(WireError, match=r"user\.text: unknown field 'colour'"):
        decode(frames_with("user.text", colour="red"))


@pytest.mark.parametrize(
    "tag, changes, pattern",
    [
        ("user.text", {"text": 5}, r"user\.text\.text: expected a string, got int 5"),
        ("agent.say", {"turn": True}, r"agent\.say\.turn: expected an integer, got bool True"),
        ("agent.say", {"gen": 2.0}, r"agent\.say\.gen: expected an integer, got float 2\.0"),
        ("node.loading", {"fraction": "0.5"}, r"node\.loading\.fraction: expected a finite number, got str '0\.5'"),
        ("node.loading", {"fraction": False}, r"node\.loading\.fraction: expected a finite number, got bool False"),
        ("tts.audio", {"last": 1}, r"tts\.audio\.last: expected true or false, got int 1"),
        ("node.error", {"kind": "oops"}, r"node\.error\.kind: got str 'oops'; allowed: 'decode', 'handler', 'fatal'"),
        ("agent.state", {"floor": "both"}, r"agent\.state\.floor: .*allowed: 'none', 'user', 'agent'"),
        ("asr.final", {"words": "a b"}, r"asr\.final\.words: expected a list, got str"),
        ("asr.final", {"words": [["a", 0, 1]]}, r"asr\.final\.words\[0\]: expected a mapping for Word"),
        (
            "asr.final",
            {"words": [{"text": "a", "start_ns": 0, "end_ns": 1}, {"text": "b", "start_ns": "0", "end_ns": 1}]},
            r"asr\.final\.words\[1\]\.start_ns: expected an integer, got str '0'",
        ),
        ("asr.final", {"words": [{"text": "a", "end_ns": 1}]}, r"asr\.final\.words\[0\]\.start_ns: missing"),
        (
            "asr.final",
            {"words": [{"text": "a", "start_ns": 0, "end_ns": 1, "conf": 0.5}]},
            r"asr\.final\.words\[0\]\.conf: unknown key; allowed: text, start_ns, end_ns, prob",
        ),
        (
            "asr.partial",
            {"words": [{"text": "a", "start_ns": 0, "end_ns": 1, "prob": "high"}]},
            r"asr\.partial\.words\[0\]\.prob: expected a finite number, got str 'high'",
        ),
        ("agent.cycle", {"timings_ns": {"llm": 1.5}}, r"agent\.cycle\.timings_ns\.llm: expected an integer, got float"),
        ("agent.cycle", {"timings_ns": [1]}, r"agent\.cycle\.timings_ns: expected a mapping, got list"),
        ("ctl.config", {"changes": {"a": [1]}}, r"ctl\.config\.changes\.a: expected an integer or a number or"),
        ("node.heartbeat", {"stats": {"rx": "9"}}, r"node\.heartbeat\.stats\.rx: expected an integer or a number"),
    ],
)
def test_wrong_field_type_is_named(tag, changes, pattern):
    with pytest.raises(WireError, match=pattern):
        decode(frames_with(tag, **changes))


def test_non_string_map_keys_in_a_field_are_rejected():
    with pytest.raises(WireError, match=r"agent\.cycle\.timings_ns: keys must be strings"):
        decode(frames_with("agent.cycle", timings_ns={b"llm": 1}))


def test_union_fields_keep_the_type_they_were_sent_with():
    msg = decode(frames_with("ctl.config", changes={"a": 1, "b": 1.0, "c": True, "d": "x", "e": None}))
    assert typed(msg.event.changes) == typed({"a": 1, "b": 1.0, "c": True, "d": "x", "e": None})


def test_word_records_decode_to_word_instances():
    words = [{"text": "hi", "start_ns": 10, "end_ns": 20, "prob": 0.5}, {"text": "yo", "start_ns": 30, "end_ns": 40}]
    msg = decode(frames_with("asr.final", words=words))
    assert msg.event.words == (
        Word(text="hi", start_ns=10, end_ns=20, prob=0.5),
        Word(text="yo", start_ns=30, end_ns=40),
    )


@pytest.mark.parametrize("n_payload", [0, 2])
def test_wrong_number_of_payload_frames_is_rejected(n_payload):
    frames = encode(SAMPLES["audio.in"], ENV)
    with pytest.raises(WireError, match=rf"audio\.in: expected 1 payload frame\(s\), got {n_payload}"):
        decode(frames[:2] + [b"\x00\x00"] * n_payload)


def test_payload_frame_on_an_event_without_bytes_fields_is_rejected():
    frames = encode(SAMPLES["user.text"], ENV)
    with pytest.raises(WireError, match=r"user\.text: expected 0 payload frame\(s\), got 1"):
        decode([*frames, b"stray"])


@pytest.mark.parametrize("frames", [[], [b"user.text"]])
def test_too_few_frames_are_rejected(frames):
    with pytest.raises(WireError, match=r"expected \[topic, header, \*payload\] frames, got \d frame"):
        decode(frames)


def test_too_many_frames_are_rejected():
    frames = encode(SAMPLES["audio.in"], ENV)
    with pytest.raises(WireError, match=rf"{MAX_FRAMES + 1} frames exceeds the limit of {MAX_FRAMES}"):
        decode(frames + [b""] * (MAX_FRAMES + 1 - len(frames)))


def test_message_over_max_message_bytes_is_rejected():
    limits = WireLimits(max_message_bytes=4096)
    frames = encode(AudioIn(pcm=b"\x00" * 4096, sr_hz=16_000, n_samples=2048, stream_pos=0, t_capture_ns=0), ENV)
    size = sum(map(len, frames))
    with pytest.raises(WireError, match=rf"message of {size} bytes exceeds max_message_bytes=4096"):
        decode(frames, limits)


def test_message_exactly_at_max_message_bytes_is_accepted():
    header_only = encode(AudioIn(pcm=b"", sr_hz=16_000, n_samples=1000, stream_pos=0, t_capture_ns=0), ENV)
    pcm = b"\x00" * (4096 - sum(map(len, header_only)))
    frames = encode(AudioIn(pcm=pcm, sr_hz=16_000, n_samples=1000, stream_pos=0, t_capture_ns=0), ENV)
    assert sum(map(len, frames)) == 4096
    assert decode(frames, WireLimits(max_message_bytes=4096)).event.pcm == pcm


def test_default_limit_rejects_a_message_over_eight_mebibytes():
    pcm = b"\x00" * wire.DEFAULT_MAX_MESSAGE_BYTES
    frames = encode(AudioIn(pcm=pcm, sr_hz=48_000, n_samples=len(pcm) // 2, stream_pos=0, t_capture_ns=0), ENV)
    with pytest.raises(WireError, match=r"exceeds max_message_bytes=8388608"):
        decode(frames)


def test_non_ascii_topic_is_rejected():
    frames = encode(SAMPLES["asr.final"], ENV)
    with pytest.raises(WireError, match=r"topic is not ascii"):
        decode(["asr.finål".encode(), *frames[1:]])


@pytest.mark.parametrize("header", [[1, 2], "v", 7, None, True])
def test_header_that_is_not_a_map_is_rejected(header):
    with pytest.raises(WireError, match=r"user\.text: header must be a map, got"):
        decode([b"user.text", msgpack.packb(header)])


def test_truncated_header_bytes_are_rejected():
    frames = encode(SAMPLES["asr.final"], ENV)
    with pytest.raises(WireError, match=r"asr\.final: header is not valid msgpack"):
        decode([frames[0], frames[1][:-1]])


def test_trailing_bytes_after_the_header_are_rejected():
    frames = encode(SAMPLES["user.text"], ENV)
    with pytest.raises(WireError, match=r"user\.text: header is not valid msgpack \(ExtraData"):
        decode([frames[0], frames[1] + b"\x00"])


def test_msgpack_extension_types_are_rejected():
    header = msgpack.unpackb(encode(SAMPLES["user.text"], ENV)[1])
    header["text"] = msgpack.ExtType(1, b"ab")
    with pytest.raises(WireError, match=r"header is not valid msgpack .*max_ext_len"):
        decode([b"user.text", msgpack.packb(header)])


def test_value_nested_as_deep_as_msgpack_allows_is_a_wire_error_not_a_recursion_error():
    # msgpack's unpacker accepts 1024 levels; describing the bad value must not recurse that deep
    header = b"\x81\xa1v" + b"\x91" * 1022 + b"\x00"
    with pytest.raises(WireError, match=r"user\.text: unknown wire version list"):
        decode([b"user.text", header])


def test_decoding_accepts_memoryviews_as_zeromq_frames_give_them():
    frames = encode(SAMPLES["tts.audio"], ENV)
    msg = decode([memoryview(f) for f in frames])
    assert msg.event == SAMPLES["tts.audio"] and type(msg.event.pcm) is bytes


# ---------------------------------------------------------------- properties over untrusted input


def decodes_or_wire_error(frames: list[bytes]) -> None:
    """The only failure decode may show to a node's loop is WireError."""
    try:
        decode(frames, WireLimits(max_message_bytes=64 * 1024, max_header_bytes=16 * 1024))
    except WireError:
        pass


@PROPERTY
@given(st.lists(st.binary(max_size=80), max_size=MAX_FRAMES + 2))
def test_random_frames_raise_nothing_but_wire_error(frames):
    decodes_or_wire_error(frames)


@PROPERTY
@given(
    tag=st.sampled_from(sorted(REGISTRY)),
    header=st.binary(max_size=200),
    payload=st.lists(st.binary(max_size=8), max_size=2),
)
def test_random_header_bytes_under_a_known_topic_raise_nothing_but_wire_error(tag, header, payload):
    decodes_or_wire_error([tag.encode(), header, *payload])


plain = st.recursive(
    st.none() | st.booleans() | st.integers(*INT64) | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@PROPERTY
@given(data=st.data(), tag=st.sampled_from(sorted(REGISTRY)))
def test_well_formed_msgpack_with_random_values_raises_nothing_but_wire_error(data, tag):
    header = msgpack.unpackb(encode(SAMPLES[tag], ENV)[1], raw=False)
    for key in data.draw(st.lists(st.sampled_from(sorted(header)), unique=True, max_size=3)):
        if data.draw(st.booleans()):
            header[key] = data.draw(plain)
        else:
            del header[key]
    frames = [tag.encode(), msgpack.packb(header, use_bin_type=True)]
    decodes_or_wire_error(frames + [b"\x00\x00"] * len(REGISTRY[tag].payload_fields))


@PROPERTY
@given(data=st.data(), event=events)
def test_corrupted_valid_encodings_raise_nothing_but_wire_error(data, event):
    frames = encode(event, ENV)
    header = bytearray(frames[1])
    for _ in range(data.draw(st.integers(1, 4))):
        header[data.draw(st.integers(0, len(header) - 1))] = data.draw(st.integers(0, 255))
    decodes_or_wire_error([frames[0], bytes(header), *frames[2:]])


@PROPERTY
@given(event=events, env=envelopes)
def test_every_truncation_of_a_header_is_a_wire_error(event, env):
    topic, header, *payload = encode(event, env)
    for cut in range(len(header)):
        with pytest.raises(WireError):
            decode([topic, header[:cut], *payload])
    assert decode([topic, header, *payload]) == wire.Message(env, event)


def test_samples_reach_nested_records_and_literals():
    # guards the generic sample builder: it must reach the interesting corners of the catalogue
    assert SAMPLES["asr.final"].words and isinstance(SAMPLES["asr.final"].words[0], Word)
    assert SAMPLES["node.error"].kind == "fatal"
    assert SAMPLES["agent.state"].floor == "agent"
    assert None in SAMPLES["ctl.config"].changes.values()
