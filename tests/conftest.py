"""Shared fixtures: a fake clock, and a real ZeroMQ bus (proxy thread) on ipc:// in tmp_path."""

from __future__ import annotations

import dataclasses
import os
import random
import threading

import msgpack
import pytest
import zmq

from rtchat.bus.clock import FakeClock
from rtchat.bus.events import Envelope, UserText
from rtchat.bus.proxy import bind, start_auth
from rtchat.bus.wire import encode
from rtchat.configs.schema import BusConfig


def missing_install(reason: str, fix: str = "scripts/test.sh should have installed it") -> None:
    """A test whose need scripts/test.sh installs (a package, a system library, a browser) or CI
    provides (root, mount rights): skipped with the reason on a developer's machine, but a
    failure under CI (``CI`` set), where a skip would hide a missing install step."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} -- {fix}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(start_ns=1_700_000_000_000_000_000)


class ProxyThread:
    """A real proxy (the proxy process's start_auth + bind + zmq.proxy) on its own context and
    thread; CURVE when cfg has keys."""

    def __init__(self, cfg: BusConfig):
        self.cfg = cfg
        self.ctx = zmq.Context()
        self.auth = start_auth(self.ctx, cfg)
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
        if self.auth is not None:
            self.auth.stop()
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
def start_proxy():
    """start_proxy(cfg) → a running ProxyThread, stopped at teardown."""
    proxies = []

    def start(cfg: BusConfig) -> ProxyThread:
        proxies.append(ProxyThread(cfg))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def real_bus(bus_cfg, start_proxy):
    """A running proxy; yields its BusConfig."""
    start_proxy(bus_cfg)
    return bus_cfg


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


@pytest.fixture(scope="session")
def bpe_tok():
    """Byte-level BPE, GPT-2/SmolLM2 style: " S1:" = ĠS 1 :."""
    from tiny_models import make_bpe_tok

    return make_bpe_tok()


@pytest.fixture(scope="session")
def sp_tok():
    """SentencePiece-style BPE as Llama's fast tokenizer (BOS, "▁", first space dropped)."""
    from tiny_models import make_sp_tok

    return make_sp_tok()
