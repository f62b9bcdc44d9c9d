"""The wire test vectors (tests/vectors/*.json, described in docs/wire.md) against the real codec:
each vector's frames decode to its event, its event encodes to its frames byte for byte, and
every event type in the catalogue has a vector."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import msgpack
import pytest

from rtchat.bus.events import REGISTRY, Envelope, Event
from rtchat.bus.wire import decode, encode
from rtchat.common.schema import to_plain

VECTORS = Path(__file__).resolve().parent / "vectors"
FILES = sorted(VECTORS.glob("[0-9][0-9]-*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def frames_of(vec: dict) -> list[bytes]:
    return [bytes.fromhex(h) for h in vec["frames_hex"]]


def event_from_json(kind: str, fields: dict) -> Event:
    """The vector's JSON event → the catalogue's typed event, with the schema's own converters
    (lists → tuples, maps → records) and hex strings → bytes for the payload fields."""
    spec = REGISTRY[kind]
    kwargs = {name: conv(fields[name], f"{kind}.{name}") for name, conv in spec.header_fields}
    kwargs.update({name: bytes.fromhex(fields[name]) for name in spec.payload_fields})
    assert set(kwargs) == set(fields), f"{kind}: vector fields {sorted(fields)} vs catalogue {sorted(kwargs)}"
    return spec.cls(**kwargs)


def event_to_json(event: Event) -> dict:
    payload = REGISTRY[event.TYPE].payload_fields
    return {k: (v.hex() if k in payload else v) for k, v in to_plain(event).items()}


def test_vectors_exist():
    assert len(FILES) >= len(REGISTRY)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_decode(path):
    vec = load(path)
    msg = decode(frames_of(vec))
    assert msg.event.TYPE == vec["type"]
    assert to_plain(msg.env) == vec["envelope"]
    decoded = event_to_json(msg.event)
    assert decoded == vec["event"]
    assert list(decoded) == list(vec["event"])  # declaration order, as documented
    assert [type(v) for v in decoded.values()] == [type(v) for v in vec["event"].values()]  # 1.0 stays a float


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_encode_byte_for_byte(path):
    vec = load(path)
    event = event_from_json(vec["type"], vec["event"])
    frames = [bytes(f) for f in encode(event, Envelope(**vec["envelope"]))]
    assert [f.hex() for f in frames] == vec["frames_hex"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_layout_as_documented(path):
    """The frame layout docs/wire.md describes: topic = the type in ascii, a msgpack map with the
    envelope keys first then the header fields in declaration order, then one raw frame per
    payload field."""
    vec = load(path)
    spec = REGISTRY[vec["type"]]
    frames = frames_of(vec)
    assert frames[0] == vec["type"].encode("ascii")
    header = msgpack.unpackb(frames[1], raw=False)
    assert header == vec["header"]
    assert list(header) == ["v", "src", "seq", "t_ns", "session", *(name for name, _ in spec.header_fields)]
    assert list(vec["payload_fields"]) == list(spec.payload_fields)
    assert frames[2:] == [bytes.fromhex(vec["event"][name]) for name in spec.payload_fields]


def test_every_event_type_has_a_vector():
    covered = {load(p)["type"] for p in FILES}
    missing = sorted(set(REGISTRY) - covered)
    assert not missing, f"event types without a vector in tests/vectors/ (add one to make_vectors.py): {missing}"
    assert covered <= set(REGISTRY), f"vectors for unknown types: {sorted(covered - set(REGISTRY))}"


def test_edge_cases_are_covered():
    vecs = [load(p) for p in FILES]
    assert any(v["payload_fields"] and v["event"][v["payload_fields"][0]] == "" for v in vecs)  # an empty raw frame
    assert {v["type"] for v in vecs if len(v["frames_hex"]) > 2} == {k for k, s in REGISTRY.items() if s.payload_fields}
    ints = [x for v in vecs for x in v["envelope"].values() if type(x) is int]
    assert max(ints) == 2**64 - 1 and min(ints) == -(2**63)
    assert any(not s.isascii() for v in vecs for s in v["event"].values() if isinstance(s, str))


def test_generator_reproduces_the_files(tmp_path):
    """make_vectors.py is deterministic and the committed files are what it writes today."""
    write = runpy.run_path(str(VECTORS / "make_vectors.py"))["write"]
    written = sorted(write(tmp_path))
    assert [p.name for p in written] == [p.name for p in FILES]
    for new, old in zip(written, FILES, strict=True):
        assert new.read_bytes() == old.read_bytes(), f"{old.name} differs from what make_vectors.py writes"
