"""The node runtime on a real ZeroMQ bus: handshake, dispatch, ticks, heartbeats, survival of
bad frames and failing handlers, shutdown."""

from __future__ import annotations

import random
import threading
import time

import pytest
import zmq

from rtchat.bus.client import BusClient, HandshakeTimeout
from rtchat.bus.clock import Clock
from rtchat.bus.core import Core
from rtchat.bus.events import AgentSay, NodeError, NodeHeartbeat, Shutdown, UserText, VadEnd
from rtchat.bus.node import NodeRunner


class EchoCore(Core):
    """Answers user.text with agent.say in upper case; raises on 'boom'; ticks every 50 ms."""

    name = "echo"
    topics = ("",)

    def __init__(self, now_ns: int):
        self.next_tick = now_ns
        self.ticks = 0
        self.unblock = threading.Event()  # 'block' waits for it: a model call that takes as long as the test wants

    def on_event(self, ev, now_ns):
        if isinstance(ev, UserText):
            if ev.text == "boom":
                raise ValueError("scripted failure")
            if ev.text.startswith("slow"):
                time.sleep(0.05)  # a model call
            if ev.text == "block":
                self.unblock.wait(30)
            return [AgentSay(turn=0, gen=0, text=ev.text.upper())]
        return []

    def on_tick(self, now_ns):
        self.ticks += 1
        self.next_tick = now_ns + 50_000_000
        return []

    def deadline_ns(self):
        return self.next_tick

    def stats(self):
        return {"ticks": self.ticks}


class NodeThread:
    def __init__(self, cfg, make_core=None):
        self.cfg = cfg
        self.make_core = make_core or EchoCore
        self.ready = threading.Event()
        self.runner: NodeRunner | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self):
        clock = Clock()
        client = BusClient(self.cfg, src="echo", session="t", clock=clock, topics=("",))
        client.handshake(int(5e9))
        self.runner = NodeRunner(self.make_core(clock.now_ns()), client, clock, int(self.cfg.heartbeat_interval_s * 1e9))
        self.ready.set()
        try:
            self.runner.run()
        finally:
            client.close()


def listen(cfg, topics):
    client = BusClient(cfg, src="test", session="t", clock=Clock(), topics=topics)
    client.handshake(int(5e9))
    return client


def collect(client, want, timeout_ms=3000):
    got = []
    while client.data.poll(timeout_ms, zmq.POLLIN):
        got.append(client.decode(client.data.recv_multipart()).event)
        if want(got):
            break
    return got


def test_handshake_times_out_without_a_proxy(bus_cfg):
    client = BusClient(bus_cfg, src="lonely", session="t", clock=Clock())
    try:
        with pytest.raises(HandshakeTimeout, match="no route through the bus proxy"):
            client.handshake(int(0.3e9))
    finally:
        client.close()


def test_node_answers_events_ticks_and_heartbeats(real_bus):
    node = NodeThread(real_bus)
    probe = listen(real_bus, ("agent.", "node.heartbeat"))
    try:
        probe.publish(UserText(text="hello"))
        got = collect(probe, lambda g: any(isinstance(e, AgentSay) for e in g) and any(isinstance(e, NodeHeartbeat) for e in g))
        assert AgentSay(turn=0, gen=0, text="HELLO") in got
        beat = next(e for e in got if isinstance(e, NodeHeartbeat))
        assert beat.node == "echo" and {"rx", "tx", "decode_errors", "ticks"} <= set(beat.stats)
        probe.publish(Shutdown(reason="test"))
        node.thread.join(5)
        assert not node.thread.is_alive()
        assert node.runner.core.ticks >= 1
    finally:
        probe.close()


def test_heartbeats_go_on_while_a_backlog_of_slow_events_is_worked_off(real_bus):
    node = NodeThread(real_bus)  # heartbeat every 0.2 s (conftest), 40 events of 50 ms = 2 s of work
    probe = listen(real_bus, ("agent.", "node.heartbeat"))
    try:
        for i in range(40):
            probe.publish(UserText(text=f"slow {i}"))
        got = collect(probe, lambda g: sum(isinstance(e, AgentSay) for e in g) == 40)
        says = [i for i, e in enumerate(got) if isinstance(e, AgentSay)]
        beats = [i for i, e in enumerate(got) if isinstance(e, NodeHeartbeat)]
        assert len(says) == 40
        # heartbeats fall between the answers, not only before and after the whole backlog
        assert sum(says[0] < b < says[-1] for b in beats) >= 5
        probe.publish(Shutdown(reason="test"))
        node.thread.join(5)
    finally:
        probe.close()


def test_one_long_call_does_not_stop_the_heartbeats_and_they_say_how_long_it_has_run(real_bus):
    node = NodeThread(real_bus)  # heartbeat every 0.2 s (conftest)
    probe = listen(real_bus, ("agent.", "node.heartbeat"))
    try:
        probe.publish(UserText(text="block"))
        hb_ns = int(real_bus.heartbeat_interval_s * 1e9)
        got = collect(probe, lambda g: any(isinstance(e, NodeHeartbeat) and e.busy_ns > 3 * hb_ns for e in g), 10_000)
        beats = [e for e in got if isinstance(e, NodeHeartbeat)]
        assert beats[-1].busy_ns > 3 * hb_ns  # the launcher's "missed 3 heartbeats" would have killed it before
        during = [b for b in beats if b.busy_ns > 0]
        assert len({b.loops for b in during}) == 1  # the loop is stuck in the one call: no progress
        assert [b.busy_ns for b in during] == sorted(b.busy_ns for b in during)
        node.runner.core.unblock.set()
        after = collect(probe, lambda g: any(isinstance(e, NodeHeartbeat) and e.busy_ns == 0 and e.loops > during[0].loops
                                             for e in g))
        assert any(isinstance(e, AgentSay) and e.text == "BLOCK" for e in after)
        last = [e for e in after if isinstance(e, NodeHeartbeat)][-1]
        assert last.busy_ns == 0 and last.loops > during[0].loops
        probe.publish(Shutdown(reason="test"))
        node.thread.join(5)
        assert node.runner.busy_max_ns >= beats[-1].busy_ns
    finally:
        node.runner.core.unblock.set()
        probe.close()


def test_bad_frames_are_counted_and_reported_and_nothing_else_is_lost(real_bus, bad_frames):
    node = NodeThread(real_bus)
    probe = listen(real_bus, ("agent.", "node.error"))
    bad = bad_frames(random.Random(7), real_bus.max_message_bytes)
    try:
        for i, frames in enumerate(bad):
            probe.pub.send_multipart(frames)
            if i % 10 == 0:
                probe.publish(UserText(text=f"good {i}"))
        n_good = len(range(0, len(bad), 10))
        got = collect(probe, lambda g: sum(isinstance(e, AgentSay) for e in g) == n_good)
        says = [e.text for e in got if isinstance(e, AgentSay)]
        assert says == [f"GOOD {i}" for i in range(0, len(bad), 10)]
        errors = [e for e in got if isinstance(e, NodeError)]
        assert errors and all(e.kind == "decode" and e.node == "echo" for e in errors)
        probe.publish(Shutdown(reason="test"))
        node.thread.join(5)
        assert node.runner.counters.decode_errors == len(bad)
        assert node.runner.counters.handler_errors == 0
    finally:
        probe.close()


def test_a_failing_handler_is_reported_and_the_node_goes_on(real_bus):
    node = NodeThread(real_bus)
    probe = listen(real_bus, ("agent.", "node.error"))
    try:
        probe.publish(UserText(text="boom"))
        probe.publish(UserText(text="after"))
        got = collect(probe, lambda g: any(isinstance(e, AgentSay) for e in g))
        [err] = [e for e in got if isinstance(e, NodeError)]
        assert err.kind == "handler" and "scripted failure" in err.detail and err.count == 1
        assert AgentSay(turn=0, gen=0, text="AFTER") in got
    finally:
        probe.publish(Shutdown(reason="test", nodes=("echo",)))
        node.thread.join(5)
        probe.close()


def test_shutdown_for_another_node_is_ignored(real_bus):
    node = NodeThread(real_bus)
    probe = listen(real_bus, ("agent.",))
    try:
        probe.publish(Shutdown(reason="not you", nodes=("logger",)))
        probe.publish(UserText(text="still here"))
        got = collect(probe, lambda g: bool(g))
        assert got == [AgentSay(turn=0, gen=0, text="STILL HERE")]
    finally:
        probe.publish(Shutdown(reason="test"))
        node.thread.join(5)
        probe.close()
    assert not node.thread.is_alive()


class PatientCore(Core):
    """On user.text 'long', works until ``interrupted()`` says an urgent event (vad.end) waits —
    as the agent's lookahead renewal does — and records the order it handled events in."""

    name = "patient"
    topics = ("",)
    urgent_topics = ("vad.end",)

    def __init__(self, now_ns: int):
        self.seen: list[str] = []
        self.polls = 0

    def on_event(self, ev, now_ns):
        if isinstance(ev, UserText | VadEnd):
            self.seen.append(ev.text if isinstance(ev, UserText) else ev.TYPE)
        if isinstance(ev, UserText) and ev.text == "long":
            deadline = time.monotonic() + 20
            while not self.interrupted():
                self.polls += 1
                assert time.monotonic() < deadline, "never interrupted"
                time.sleep(0.005)
            return [AgentSay(turn=0, gen=0, text="cut short")]
        return []


def test_a_long_call_is_cut_short_by_an_urgent_event_and_nothing_waiting_is_lost_or_reordered(real_bus):
    """Issue 20: the agent's lookahead renewal asks the shell whether the speech end is waiting;
    other events (here a user.text) do not interrupt it, and every event is still handled, in order."""
    node = NodeThread(real_bus, PatientCore)
    probe = listen(real_bus, ("agent.",))
    try:
        probe.publish(UserText(text="long"))
        deadline = time.monotonic() + 10
        while node.runner.core.polls < 3:  # the call is under way
            assert time.monotonic() < deadline
            time.sleep(0.01)
        probe.publish(UserText(text="not urgent"))
        core, client = node.runner.core, node.runner.client
        while b"user.text" not in [frames[0] for frames in list(client._stash)]:  # it arrived and was looked at
            assert time.monotonic() < deadline
            time.sleep(0.01)
        polls = core.polls
        while core.polls < polls + 3:  # … and the call went on
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert core.seen == ["long"]
        probe.publish(VadEnd(stream_pos=0, audio_ns=0, at_ns=0))
        got = collect(probe, lambda g: any(isinstance(e, AgentSay) for e in g))
        assert AgentSay(turn=0, gen=0, text="cut short") in got
        deadline = time.monotonic() + 10
        while len(node.runner.core.seen) < 3:
            assert time.monotonic() < deadline, node.runner.core.seen
            time.sleep(0.01)
        assert node.runner.core.seen == ["long", "not urgent", "vad.end"]
        probe.publish(Shutdown(reason="test"))
        node.thread.join(5)
    finally:
        probe.close()
