"""A bus participant's sockets: one publisher and two subscribers (control first, then data).

``BusClient`` stamps envelopes (``src``, ``seq``, ``t_ns`` from the injected clock,
``session``), performs the ready handshake (publish ``node.ping`` until it comes back through
the proxy on every subscriber: then both directions are live, with no sleeps for slow joiners)
and hands received frames out control-first, so ``ctl.*`` and ``agent.cancel`` are never stuck
behind queued audio.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator

import zmq

from rtchat.bus.clock import Clock
from rtchat.bus.events import WIRE_VERSION, Envelope, Event, Message, NodePing
from rtchat.bus.sockets import connect
from rtchat.bus.wire import WireError, WireLimits, decode, encode
from rtchat.configs.schema import BusConfig

PING_TOPIC = NodePing.TYPE
PING_EVERY_MS = 20
MAX_BATCH = 256  # control frames taken in one go
DATA_BATCH = 32  # data frames handled before control is checked again (a cancel waits ≤ 32 frames)


def _drain(sock: zmq.Socket, limit: int) -> Iterator[list[bytes]]:
    for _ in range(limit):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


class HandshakeTimeout(RuntimeError):
    """A node's own ping never came back through the proxy."""


class BusClient:
    def __init__(
        self,
        cfg: BusConfig,
        src: str,
        session: str,
        clock: Clock,
        topics: tuple[str, ...] = (),
        control_topics: tuple[str, ...] = ("ctl.",),
        ctx: zmq.Context | None = None,
    ):
        self.cfg = cfg
        self.src = src
        self.session = session
        self.clock = clock
        self.limits = WireLimits(max_message_bytes=cfg.max_message_bytes)
        self.ctx = ctx or zmq.Context.instance()
        self._seq = itertools.count()
        self.pub = connect(self.ctx, zmq.PUB, cfg.pub_endpoint, cfg)
        self.control = connect(self.ctx, zmq.SUB, cfg.sub_endpoint, cfg)
        self.data = connect(self.ctx, zmq.SUB, cfg.sub_endpoint, cfg)
        for sock in (self.control, self.data):
            sock.setsockopt(zmq.LINGER, 0)
        self._topics: dict[zmq.Socket, list[bytes]] = {self.control: [], self.data: []}
        self.subscribe(topics)
        self.subscribe(control_topics, control=True)
        self.poller = zmq.Poller()
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.data, zmq.POLLIN)
        self.sent = 0
        self._publish_lock = threading.Lock()  # the node's pulse thread publishes too
        self._stash: list[list[bytes]] = []  # non-ping frames that arrived during the handshake

    def subscribe(self, topics: tuple[str, ...], control: bool = False) -> None:
        """Add topic prefixes to the data (or control) subscriber; run handshake() again
        before relying on them."""
        sock = self.control if control else self.data
        for topic in topics:
            sock.subscribe(topic.encode())
            self._topics[sock].append(topic.encode())

    def envelope(self) -> Envelope:
        return Envelope(v=WIRE_VERSION, src=self.src, seq=next(self._seq), t_ns=self.clock.now_ns(), session=self.session)

    def publish(self, event: Event) -> Envelope:
        """Thread-safe: a node's loop and its pulse thread share the publisher (one ``src``, one
        sequence), serialised by a lock."""
        with self._publish_lock:
            env = self.envelope()
            self.pub.send_multipart(encode(event, env), copy=False)
            self.sent += 1
        return env

    def publish_many(self, events: list[Event]) -> None:
        for event in events:
            self.publish(event)

    def handshake(self, timeout_ns: int) -> None:
        """Publish pings until one returns on both subscribers (subscriptions and route live)."""
        ping = PING_TOPIC.encode()
        socks = {self.control: False, self.data: False}
        for sock in socks:
            sock.subscribe(ping)
        nonce = random.getrandbits(48)
        deadline = time.monotonic_ns() + timeout_ns  # real time: this waits on sockets, not on a core
        while not all(socks.values()):
            if time.monotonic_ns() > deadline:
                raise HandshakeTimeout(
                    f"{self.src}: no route through the bus proxy at {self.cfg.pub_endpoint} / "
                    f"{self.cfg.sub_endpoint} within {timeout_ns / 1e9:.1f} s"
                )
            self.publish(NodePing(node=self.src, nonce=nonce))
            for sock, _ in self.poller.poll(PING_EVERY_MS):
                while sock.poll(0):
                    frames = sock.recv_multipart()
                    if frames[0] == ping and self._is_my_ping(frames, nonce):
                        socks[sock] = True
        for sock, topics in self._topics.items():
            if ping not in topics:
                sock.unsubscribe(ping)
        self._drain_pings(ping)

    def _is_my_ping(self, frames: list[bytes], nonce: int) -> bool:
        try:
            msg = decode(frames, self.limits)
        except WireError:
            return False
        return msg.env.src == self.src and getattr(msg.event, "nonce", None) == nonce

    def _drain_pings(self, ping: bytes) -> None:
        """Pings still queued from the handshake are not the core's business."""
        for sock in (self.control, self.data):
            while sock.poll(0):
                frames = sock.recv_multipart()
                if frames[0] != ping:
                    self._stash.append(frames)

    def receive(self, timeout_ms: int) -> Iterator[list[bytes]]:
        """Frames that arrived within timeout_ms: all pending control frames first, then data
        in batches, with control checked again before every batch."""
        if self._stash:
            stash, self._stash = self._stash, []
            yield from stash
        if not self.poller.poll(max(0, timeout_ms)):
            return
        while True:
            yield from _drain(self.control, MAX_BATCH)
            n = 0
            for frames in _drain(self.data, DATA_BATCH):
                n += 1
                yield frames
            if n < DATA_BATCH:
                yield from _drain(self.control, MAX_BATCH)
                return

    def waiting_topics(self) -> list[bytes]:
        """The topics of the frames that have arrived and not been handed out yet: they are
        read into the stash, which ``receive`` hands out first, in the order they came."""
        for sock in (self.control, self.data):
            self._stash.extend(_drain(sock, MAX_BATCH))
        return [frames[0] for frames in self._stash]

    def decode(self, frames: list[bytes]) -> Message:
        return decode(frames, self.limits)

    def close(self) -> None:
        for sock in (self.pub, self.control, self.data):
            sock.close()
