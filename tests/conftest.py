"""Shared fixtures: a fake clock, and a real ZeroMQ bus (proxy thread) on ipc:// in tmp_path."""

from __future__ import annotations

import dataclasses
import random
import threading

import msgpack
import pytest
import zmq

from rtchat.bus.clock import FakeClock
from rtchat.bus.events import Envelope, UserText
from rtchat.bus.proxy import bind
from rtchat.bus.wire import encode
from rtchat.configs.schema import BusConfig


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(start_ns=1_700_000_000_000_000_000)


class ProxyThread:
    """A real proxy (the same bind() the proxy process uses) on its own context and thread."""

    def __init__(self, cfg: BusConfig):
        self.cfg = cfg
        self.ctx = zmq.Context()
        self.xsub, self.xpub = bind(self.ctx, cfg)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            zmq.proxy(self.xsub, self.xpub)
        except zmq.ContextTerminated:
            pass
        finally:
            self.xsub.close(linger=0)
            self.xpub.close(linger=0)

    def stop(self) -> None:
        self.ctx.term()
        self.thread.join(timeout=5)


@pytest.fixture
def bus_cfg(tmp_path) -> BusConfig:
    """Bus settings with ipc endpoints in tmp_path and short timeouts."""
    return dataclasses.replace(
        BusConfig(),
        pub_endpoint=f"ipc://{tmp_path}/pub.ipc",
        sub_endpoint=f"ipc://{tmp_path}/sub.ipc",
        heartbeat_interval_s=0.2,
        handshake_timeout_s=5.0,
    )


@pytest.fixture
def real_bus(bus_cfg):
    """A running proxy; yields its BusConfig."""
    proxy = ProxyThread(bus_cfg)
    yield bus_cfg
    proxy.stop()


def make_bad_frames(rng: random.Random, limit: int) -> list[list[bytes]]:
    """A fixed mix of undecodable frame sets: random bytes, truncated headers, oversize,
    wrong field types, unknown type/version/field, wrong payload count."""
    good = encode(UserText(text="x"), Envelope(v=1, src="evil", seq=0, t_ns=1, session="t"))
    header = msgpack.unpackb(good[1])
    frames = [
        [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 4))] for _ in range(60)
    ]
    frames += [[good[0], good[1][:cut]] for cut in range(0, len(good[1]))]
    frames += [[good[0], good[1], b"extra payload"], [b"user.nope", good[1]], [b"user.text\xff", good[1]]]
    frames += [[good[0], good[1] + b"\x00" * limit]]
    for key, value in [("text", 5), ("text", None), ("v", 2), ("seq", "1"), ("t_ns", 1.5), ("extra", 1)]:
        frames.append([good[0], msgpack.packb(header | {key: value})])
    frames.append([good[0], msgpack.packb([1, 2, 3])])
    return frames


@pytest.fixture
def bad_frames():
    """make_bad_frames(rng, max_message_bytes) → frame sets every node must survive."""
    return make_bad_frames
