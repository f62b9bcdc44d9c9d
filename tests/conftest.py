"""Shared fixtures: a fake clock, and a real ZeroMQ bus (proxy thread) on ipc:// in tmp_path."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import zmq

from rtchat.bus.clock import FakeClock
from rtchat.bus.proxy import bind
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
