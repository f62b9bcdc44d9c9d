"""The node runtime: the one loop that drives a pure core from a real bus.

A node is a ``Core`` (``bus/core.py``: ``on_event(ev, now_ns)``, ``on_tick(now_ns)``,
``deadline_ns()`` — no sockets, threads or clock reads) plus this shell, which owns the sockets, blocks on a poller
with a deadline taken from the core, decodes strictly, publishes what the core returns, and
survives bad input: an undecodable frame or a handler that raises is counted and reported as
``node.error`` and the loop goes on.

Liveness. Heartbeats come from a thread of their own (``Pulse``), not from the loop: a model
call that takes seconds on a loaded machine must not read as a dead node. Each heartbeat says
that the process is alive (it was sent), whether the loop is making progress (``loops``, the
passes so far) and how long it has been inside its current call (``busy_ns``); the launcher
judges a stall from that (``launcher.stall_limit_s``), and a heartbeat that does not come at all
means a frozen process. ``stats`` are the counters as the loop last took them (every heartbeat
interval, when it is free), with ``busy_max_ns``, the longest single call so far.

``node_main(name, make_core)`` is what ``python -m rtchat.nodes.<name>`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from rtchat.bus.client import BusClient, HandshakeTimeout
from rtchat.bus.clock import Clock
from rtchat.bus.core import Core, GiveUp, StartError
from rtchat.bus.events import Event, Message, NodeError, NodeHeartbeat, NodeLoading, NodeReady, Shutdown
from rtchat.bus.sockets import check_security
from rtchat.bus.supervisor import GAVE_UP, START_FAILED
from rtchat.bus.wire import WireError
from rtchat.configs import ConfigError, load
from rtchat.configs.schema import Config

log = logging.getLogger(__name__)

ERRORS_PER_SECOND = 10  # node.error events published per kind per second; the rest only counted


@dataclasses.dataclass
class Counters:
    rx: int = 0
    tx: int = 0
    decode_errors: int = 0
    handler_errors: int = 0
    errors_suppressed: int = 0


class _ErrorLimiter:
    """Publishes at most ERRORS_PER_SECOND node.error events per kind per second."""

    def __init__(self):
        self.window: dict[str, tuple[int, int]] = {}

    def allow(self, kind: str, now_ns: int) -> bool:
        start, n = self.window.get(kind, (now_ns, 0))
        if now_ns - start >= 1_000_000_000:
            start, n = now_ns, 0
        self.window[kind] = (start, n + 1)
        return n < ERRORS_PER_SECOND


class NodeRunner:
    """Runs one core on one BusClient until ctl.shutdown, SIGTERM, or the parent dies."""

    def __init__(
        self,
        core: Core,
        client: BusClient,
        clock: Clock,
        heartbeat_interval_ns: int,
        raw_sink: Callable[[list[bytes], Message, int], None] | None = None,
    ):
        self.core = core
        self.client = client
        self.clock = clock
        self.heartbeat_interval_ns = heartbeat_interval_ns
        self.raw_sink = raw_sink  # sees every valid frame set first (the logger writes it)
        self.counters = Counters()
        self.limiter = _ErrorLimiter()
        self.started_ns = clock.now_ns()
        self.parent_pid = os.getppid()
        self.stopping = False
        # progress, read by the pulse thread (each a single assignment: no lock needed)
        self.loops = 0
        self.busy_since_ns: int | None = None  # the current call began then; None = waiting
        self.busy_max_ns = 0
        self.stats: dict[str, int | float] = {}
        if core.urgent_topics:
            core.interrupted = self.urgent_waiting  # the core asks inside its long calls

    def urgent_waiting(self) -> bool:
        """An event of one of the core's ``urgent_topics`` has arrived and waits (``Core.interrupted``)."""
        urgent = tuple(t.encode("ascii") for t in self.core.urgent_topics)
        return any(topic.startswith(urgent) for topic in self.client.waiting_topics())

    def publish(self, events: list[Event]) -> None:
        for ev in events:
            self.client.publish(ev)
            self.counters.tx += 1

    def report(self, kind: str, detail: str, now_ns: int) -> None:
        count = self.counters.decode_errors if kind == "decode" else self.counters.handler_errors
        log.warning("%s error #%d: %s", kind, count, detail)
        if self.limiter.allow(kind, now_ns):
            self.publish([NodeError(node=self.core.name, kind=kind, detail=detail[:500], count=count)])
        else:
            self.counters.errors_suppressed += 1

    def handle(self, frames: list[bytes]) -> None:
        now = self.clock.now_ns()
        try:
            msg = self.client.decode(frames)
        except WireError as exc:
            self.counters.decode_errors += 1
            self.report("decode", str(exc), now)
            return
        self.counters.rx += 1
        try:
            if self.raw_sink is not None:
                self.raw_sink(frames, msg, now)
            if isinstance(msg.event, Shutdown) and msg.event.applies_to(self.core.name):
                self.stopping = True
            self.publish(self.core.on_event(msg.event, now))
        except GiveUp:
            raise
        except Exception as exc:  # one bad event must not take the node down
            self.counters.handler_errors += 1
            log.exception("handler failed on %s", msg.event.TYPE)
            self.report("handler", f"{msg.event.TYPE}: {type(exc).__name__}: {exc}", now)

    def heartbeat(self, now_ns: int) -> NodeHeartbeat:
        since = self.busy_since_ns
        return NodeHeartbeat(
            node=self.core.name,
            pid=os.getpid(),
            uptime_ns=now_ns - self.started_ns,
            stats=self.stats,
            loops=self.loops,
            busy_ns=max(0, now_ns - since) if since is not None else 0,
        )

    def take_stats(self) -> None:
        self.stats = dataclasses.asdict(self.counters) | self.core.stats() | {"busy_max_ns": self.busy_max_ns}

    def tick(self, now_ns: int) -> None:
        try:
            self.publish(self.core.on_tick(now_ns))
        except GiveUp:
            raise
        except Exception as exc:
            self.counters.handler_errors += 1
            log.exception("tick failed")
            self.report("handler", f"tick: {type(exc).__name__}: {exc}", now_ns)

    def _busy(self, now_ns: int | None) -> None:
        """The loop enters a call at ``now_ns`` (None: it goes back to waiting)."""
        since = self.busy_since_ns
        if since is not None:
            self.busy_max_ns = max(self.busy_max_ns, self.clock.now_ns() - since)
        self.busy_since_ns = now_ns

    def run(self) -> None:
        self.take_stats()
        pulse = Pulse(self)
        pulse.start()
        next_stats = self.clock.now_ns()
        try:
            while not self.stopping:
                self.loops += 1
                now = self.clock.now_ns()
                if now >= next_stats:
                    self.take_stats()
                    next_stats = now + self.heartbeat_interval_ns
                    if os.getppid() != self.parent_pid:
                        log.warning("parent process died; stopping")
                        break
                core_deadline = self.core.deadline_ns()
                if core_deadline is not None and now >= core_deadline:
                    self._busy(now)
                    self.tick(now)
                    timeout_ms = 0  # a core that stays due still reads what arrived meanwhile (a cancel)
                else:
                    deadline = next_stats if core_deadline is None else min(core_deadline, next_stats)
                    timeout_ms = -(-(deadline - now) // 1_000_000)  # ceil: never wake before the deadline
                self._busy(None)
                for frames in self.client.receive(timeout_ms):
                    self._busy(self.clock.now_ns())
                    self.handle(frames)
                    self.loops += 1
                    if self.stopping:
                        break
                self._busy(None)
        finally:
            pulse.stop()
            self.core.close()


class Pulse(threading.Thread):
    """Publishes the runner's heartbeat every interval, whatever its loop is doing."""

    def __init__(self, runner: NodeRunner):
        super().__init__(name=f"{runner.core.name}-pulse", daemon=True)
        self.runner = runner
        self._halt = threading.Event()

    def run(self) -> None:
        interval_s = self.runner.heartbeat_interval_ns / 1e9
        while True:
            try:
                self.runner.client.publish(self.runner.heartbeat(self.runner.clock.now_ns()))
            except Exception:  # the bus is closing under us at shutdown
                log.debug("heartbeat not sent", exc_info=True)
            if self._halt.wait(interval_s):
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=1.0)


def _terminate(signum, frame):  # SIGTERM → unwind through finally blocks (flush, close)
    raise SystemExit(128 + signum)


def node_main(
    name: str,
    make_core: Callable[[Config, Path, Callable[[str, float | None], None]], Core],
    argv: list[str] | None = None,
    raw_sink: Callable[[Core], Callable[[list[bytes], Message, int], None]] | None = None,
    resume: Callable[[Core, Path], tuple[Core, str | None]] | None = None,
) -> int:
    """Command-line entry of a node: config, bus, load, handshake, ready, loop.

    ``resume(core, run_dir)`` brings a core up to a conversation already under way (a restart:
    the run's event log holds it) just before the node joins; it returns the core to run (the
    same, or one that wraps it) and a line for the launcher's progress, or None when there was
    nothing to resume. With ``--standby`` the node
    is the launcher's hot spare: it loads first, off the bus, then waits for a line on its
    standard input (end of input: the launcher is gone; it exits) and only then joins, resumes
    and reports ready, so replacing a killed node costs no model load."""
    parser = argparse.ArgumentParser(prog=f"python -m rtchat.nodes.{name}", description=f"Run the {name} node alone.")
    parser.add_argument("--config", default="cpu", help="profile name or YAML path (default: cpu)")
    parser.add_argument("--run-dir", default=".", help="the run directory (default: .)")
    parser.add_argument(
        "--standby", action="store_true", help="load, then wait for a line on stdin before joining (the launcher's hot spare)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = parser.parse_args(argv)
    clock = Clock()
    started = clock.now_ns()
    try:
        cfg = load(args.config, args.overrides)
        check_security(cfg.bus)
    except ConfigError as exc:
        print(f"rtchat {name}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.run.log_level.upper(), format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    if not cfg.bus.pub_endpoint or not cfg.bus.sub_endpoint:
        print(f"rtchat {name}: bus.pub_endpoint and bus.sub_endpoint must be set (the launcher sets them)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(args.run_dir)
    client = None
    core = None
    if args.standby:
        try:
            core = make_core(cfg, run_dir, lambda stage, fraction=None: log.info("standby: %s", stage))
        except StartError as exc:
            print(f"rtchat {name}: {exc}", file=sys.stderr, flush=True)
            return START_FAILED
        log.info("standby: loaded; waiting to be called in")
        if not sys.stdin.readline():  # the launcher is gone
            return 0
        started = clock.now_ns()
    try:
        client = BusClient(cfg.bus, src=name, session=cfg.run.id, clock=clock, topics=(), control_topics=())
        client.handshake(int(cfg.bus.handshake_timeout_s * 1e9))

        def progress(stage: str, fraction: float | None = None) -> None:
            client.publish(NodeLoading(node=name, stage=stage, fraction=fraction))

        def stop_with(exc: Exception, code: int) -> int:
            """Say why the node stops, on the bus too: its own output may go to a full disk."""
            with contextlib.suppress(OSError):
                print(f"rtchat {name}: {exc}", file=sys.stderr, flush=True)
            client.publish(NodeError(node=name, kind="fatal", detail=str(exc)[:500], count=1))
            return code

        if core is None:
            progress("loading")
            try:
                core = make_core(cfg, run_dir, progress)
            except StartError as exc:
                return stop_with(exc, START_FAILED)
        core, note = resume(core, run_dir) if resume is not None else (core, None)
        if note:
            progress(note)
        client.subscribe(core.topics)
        client.subscribe(core.control_topics, control=True)
        client.handshake(int(cfg.bus.handshake_timeout_s * 1e9))
        client.publish(NodeReady(node=name, pid=os.getpid(), load_ns=clock.now_ns() - started, device=core.device))
        runner = NodeRunner(
            core, client, clock, int(cfg.bus.heartbeat_interval_s * 1e9), raw_sink(core) if raw_sink else None
        )
        try:
            runner.run()
        except GiveUp as exc:
            return stop_with(exc, GAVE_UP)
    except HandshakeTimeout as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if client is not None:
            client.close()
    return 0
