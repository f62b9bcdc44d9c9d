"""Bus security: endpoints that leave the machine need CURVE keys; a CURVE proxy admits only
authorized keys; msgpack headers are bounded before and while they are unpacked."""

from __future__ import annotations

import dataclasses
import shutil
import socket
from pathlib import Path

import msgpack
import pytest
import zmq

from rtchat.bus import wire
from rtchat.bus.client import BusClient, HandshakeTimeout
from rtchat.bus.clock import Clock, s
from rtchat.bus.events import WIRE_VERSION, Envelope, UserText
from rtchat.bus.sockets import check_security, generate_keys
from rtchat.bus.wire import WireError, WireLimits, decode, encode
from rtchat.configs import ConfigError
from rtchat.configs.schema import BusConfig, CurveConfig

ENV = Envelope(v=WIRE_VERSION, src="t", seq=0, t_ns=0, session="s")
ADMISSION_WINDOW_MS = 1500  # a loopback CURVE handshake takes milliseconds; this is generous


def endpoints(pub: str, sub: str | None = None, keys_dir: Path | str = "", client_name: str = "client") -> BusConfig:
    return BusConfig(
        pub_endpoint=pub,
        sub_endpoint=sub or pub,
        curve=CurveConfig(keys_dir=str(keys_dir), client_name=client_name),
    )


# ---------------------------------------------------------------- check_security


@pytest.mark.parametrize(
    "endpoint",
    [
        "ipc:///tmp/rtchat-test/bus.ipc",
        "tcp://127.0.0.1:5555",
        "tcp://127.0.0.2:5555",
        "tcp://localhost:5555",
        "tcp://[::1]:5555",
        "inproc://bus",
    ],
)
def test_local_endpoints_need_no_keys(endpoint):
    check_security(endpoints(endpoint))


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://0.0.0.0:5555", "tcp://192.0.2.7:5555", "tcp://*:5555", "tcp://[::]:5555", "tcp://example.org:5555"],
)
def test_endpoints_reachable_from_other_hosts_are_refused_without_keys(endpoint):
    with pytest.raises(ConfigError, match=r"bus\.pub_endpoint: .*reachable from other hosts; set bus\.curve\.keys_dir"):
        check_security(endpoints(endpoint, "ipc:///tmp/x.ipc"))


def test_a_public_subscriber_endpoint_is_refused_too():
    with pytest.raises(ConfigError, match=r"bus\.sub_endpoint: tcp://0\.0\.0\.0:5556 .*curve"):
        check_security(endpoints("tcp://127.0.0.1:5555", "tcp://0.0.0.0:5556"))


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://192.0.2.7:5555", "tcp://*:5555"])
def test_public_endpoints_are_accepted_with_keys(tmp_path, endpoint):
    generate_keys(tmp_path / "keys")
    check_security(endpoints(endpoint, keys_dir=tmp_path / "keys"))


def test_keys_dir_without_the_clients_secret_key_is_refused(tmp_path):
    generate_keys(tmp_path / "keys", clients=("alice",))
    with pytest.raises(ConfigError, match=r"bus\.curve\.keys_dir: missing .*bob\.key_secret"):
        check_security(endpoints("tcp://0.0.0.0:5555", keys_dir=tmp_path / "keys", client_name="bob"))


def test_generated_keys_authorize_exactly_the_named_clients(tmp_path):
    keys = tmp_path / "keys"
    generate_keys(keys, clients=("alice", "bob"))
    assert {p.name for p in (keys / "authorized").iterdir()} == {"alice.key", "bob.key"}
    assert (keys / "authorized" / "alice.key").read_bytes() == (keys / "alice.key").read_bytes()
    assert not list((keys / "authorized").glob("*secret*"))
    assert (keys / "server.key_secret").is_file()
    assert (keys.stat().st_mode & 0o777) == 0o700


# ---------------------------------------------------------------- a real CURVE bus on loopback tcp


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports that were free a moment ago (held together so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def curve_bus(tmp_path, start_proxy):
    """A CURVE proxy on loopback tcp admitting alice and bob; yields alice's BusConfig."""
    keys = tmp_path / "keys"
    generate_keys(keys, clients=("alice", "bob"))
    pub_port, sub_port = free_ports(2)
    cfg = endpoints(f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{sub_port}", keys_dir=keys, client_name="alice")
    check_security(cfg)
    assert start_proxy(cfg).auth is not None
    return cfg


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def client(ctx: zmq.Context, cfg: BusConfig, name: str) -> BusClient:
    return BusClient(cfg, src=name, session="curve-test", clock=Clock(), topics=("user.",), ctx=ctx)


def stranger(cfg: BusConfig, tmp_path: Path) -> BusConfig:
    """cfg with a keypair the proxy never authorized, next to a copy of the real server's public key."""
    keys = tmp_path / "stranger-keys"
    generate_keys(keys, clients=("alice",))  # same client name, different key
    shutil.copy(Path(cfg.curve.keys_dir) / "server.key", keys / "server.key")
    return dataclasses.replace(cfg, curve=CurveConfig(keys_dir=str(keys), client_name="alice"))


def exchange(member_pub: BusClient, member_sub: BusClient, other: BusClient) -> tuple[bool, bool]:
    """Until both have been heard or the admission window closes, each side publishes about
    every 10 ms; returns whether the member subscriber heard `other`, and whether `other` heard
    the member publisher."""
    heard_other = other_heard = False
    clock = Clock()
    deadline_ns = clock.now_ns() + ADMISSION_WINDOW_MS * 1_000_000
    while clock.now_ns() < deadline_ns:
        other.publish(UserText(text="from other"))
        member_pub.publish(UserText(text="from member"))
        for frames in member_sub.receive(timeout_ms=5):
            if member_sub.decode(frames).env.src == other.src:
                heard_other = True
        for frames in other.receive(timeout_ms=5):
            if other.decode(frames).env.src == member_pub.src:
                other_heard = True
        if heard_other and other_heard:
            break
    return heard_other, other_heard


def test_authorized_clients_exchange_events_over_curve(curve_bus, ctx):
    cfg = curve_bus
    pub = client(ctx, cfg, "pub")
    sub = client(ctx, dataclasses.replace(cfg, curve=dataclasses.replace(cfg.curve, client_name="bob")), "sub")
    for c in (pub, sub):
        c.handshake(timeout_ns=s(5))  # its own ping came back through the CURVE proxy
    pub.publish(UserText(text="hello over curve"))
    received = []
    for _ in range(100):
        received += [sub.decode(f).event for f in sub.receive(timeout_ms=20)]
        if received:
            break
    assert received == [UserText(text="hello over curve")]


def test_an_authorized_newcomer_is_admitted_within_the_window(curve_bus, ctx):
    # the control case for the two refusals below: the same exchange succeeds for a member
    cfg = curve_bus
    pub, sub = client(ctx, cfg, "pub"), client(ctx, cfg, "sub")
    for c in (pub, sub):
        c.handshake(timeout_ns=s(5))
    assert exchange(pub, sub, client(ctx, cfg, "newcomer")) == (True, True)


def test_a_client_with_an_unauthorized_keypair_can_neither_publish_nor_subscribe(curve_bus, ctx, tmp_path):
    cfg = curve_bus
    pub, sub = client(ctx, cfg, "pub"), client(ctx, cfg, "sub")
    for c in (pub, sub):
        c.handshake(timeout_ns=s(5))
    strange_cfg = stranger(cfg, tmp_path)
    check_security(strange_cfg)  # the keys are complete: only the proxy's authorization stops it
    assert exchange(pub, sub, client(ctx, strange_cfg, "stranger")) == (False, False)


def test_a_client_without_curve_can_neither_publish_nor_subscribe(curve_bus, ctx):
    cfg = curve_bus
    pub, sub = client(ctx, cfg, "pub"), client(ctx, cfg, "sub")
    for c in (pub, sub):
        c.handshake(timeout_ns=s(5))
    plain_cfg = dataclasses.replace(cfg, curve=CurveConfig())
    assert exchange(pub, sub, client(ctx, plain_cfg, "plain")) == (False, False)


def test_an_unauthorized_client_never_completes_the_ready_handshake(curve_bus, ctx, tmp_path):
    cfg = curve_bus
    strange_cfg = stranger(cfg, tmp_path)
    with pytest.raises(HandshakeTimeout, match=r"no route through the bus proxy"):
        client(ctx, strange_cfg, "stranger").handshake(timeout_ns=s(0.5))


# ---------------------------------------------------------------- bounded msgpack decoding


def test_header_over_the_limit_is_rejected_without_unpacking(monkeypatch):
    frames = encode(UserText(text="x" * 2000), ENV)
    unpacked = []
    monkeypatch.setattr(wire.msgpack, "unpackb", lambda *a, **k: unpacked.append(a) or {})
    with pytest.raises(WireError, match=rf"user\.text: header of {len(frames[1])} bytes exceeds 1024"):
        decode(frames, WireLimits(max_header_bytes=1024))
    assert unpacked == []


def test_header_over_the_limit_is_rejected_before_its_content_is_looked_at():
    garbage = b"\xc1" * (wire.MAX_HEADER_BYTES + 1)  # 0xc1 is never valid msgpack
    with pytest.raises(WireError, match=r"header of \d+ bytes exceeds"):
        decode([b"user.text", garbage])


def test_header_at_the_limit_is_unpacked():
    frames = encode(UserText(text="x" * 2000), ENV)
    assert decode(frames, WireLimits(max_header_bytes=len(frames[1]))).event == UserText(text="x" * 2000)


@pytest.mark.parametrize(
    "value, limit",
    [
        ([0] * 100_001, "max_array_len"),
        ({str(i): 0 for i in range(10_001)}, "max_map_len"),
    ],
)
def test_msgpack_container_lengths_are_bounded(value, limit):
    header = msgpack.packb({"v": 1, "src": "a", "seq": 0, "t_ns": 0, "session": "s", "text": value})
    assert len(header) < wire.MAX_HEADER_BYTES  # within the byte limit: msgpack's own limit acts
    with pytest.raises(WireError, match=rf"header is not valid msgpack .*{limit}"):
        decode([b"user.text", header])


def test_a_length_prefix_larger_than_the_data_is_rejected_without_allocating_it():
    # str32 claiming 4 GiB followed by 3 bytes: must fail fast as bad msgpack, not try to read it
    header = b"\x81\xa4text\xdb\xff\xff\xff\xff" + b"abc"
    with pytest.raises(WireError, match=r"header is not valid msgpack"):
        decode([b"user.text", header])
