"""``rtchat replay LOG``: republish a recorded run onto a live bus, keeping its pace.

Events are re-sent with a fresh envelope (``src=replay``, new ``seq`` and ``t_ns``) and their
fields unchanged, spaced as the logger received them (``--speed 2`` twice as fast, ``--fast``
with no waits). By default ``node.*`` and ``ctl.*`` events are left out — a replayed
``ctl.shutdown`` would stop the live session; ``--topics`` chooses explicitly, e.g.
``--topics audio.in`` to feed yesterday's audio into a live asr+agent+tts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from rtchat.bus.clock import Clock
from rtchat.bus.eventlog import LogError, LogReader, Record
from rtchat.bus.events import Event
from rtchat.bus.wire import WireError, WireLimits, decode

DEFAULT_EXCLUDED = ("node.", "ctl.")
LIMITS = WireLimits(max_message_bytes=64 * 1024 * 1024)


@dataclasses.dataclass
class ReplayResult:
    published: int = 0
    skipped: int = 0  # not selected by topic
    undecodable: int = 0


def selected(topic: str, topics: tuple[str, ...]) -> bool:
    if topics:
        return topic.startswith(topics)
    return not topic.startswith(DEFAULT_EXCLUDED)


def replay(
    records: Iterable[Record],
    publish: Callable[[Event], None],
    clock: Clock,
    speed: float | None,
    topics: tuple[str, ...] = (),
) -> ReplayResult:
    """Publish the selected events; with ``speed`` (> 0) event i goes out at
    start + (recv_i − recv_first) / speed on ``clock``; with None, as fast as possible."""
    result = ReplayResult()
    start_ns = clock.now_ns()
    first_ns = None
    for rec in records:
        try:
            msg = decode(rec.frames, LIMITS)
        except WireError:
            result.undecodable += 1
            continue
        if not selected(msg.event.TYPE, topics):
            result.skipped += 1
            continue
        if first_ns is None:
            first_ns = rec.recv_ns
        if speed is not None:
            clock.sleep_until(start_ns + int((rec.recv_ns - first_ns) / speed))
        publish(msg.event)
        result.published += 1
    return result


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="a .rtlog file or a run directory")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="pace factor: 2 = twice as fast (default: 1)")
    pace.add_argument("--fast", action="store_true", help="no waits: as fast as the bus takes it")
    parser.add_argument("--topics", default="", help="comma-separated topic prefixes (default: all but node.*, ctl.*)")
    parser.add_argument("--bus", type=Path, help="the run directory of the live session to replay into")
    parser.add_argument("--config", default="cpu", help="profile or YAML path, when --bus is not given")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. bus.pub_endpoint=tcp://127.0.0.1:5555")


def run(args: argparse.Namespace) -> int:
    from rtchat.bus.client import BusClient, HandshakeTimeout
    from rtchat.bus.sockets import check_security
    from rtchat.configs import ConfigError, load

    if not args.fast and args.speed <= 0:
        print(f"rtchat replay: --speed must be > 0, got {args.speed}", file=sys.stderr)
        return 2
    try:
        profile = str(args.bus / "config.yaml") if args.bus else args.config
        cfg = load(profile, args.overrides)
        check_security(cfg.bus)
        reader = LogReader(args.log)
    except (ConfigError, FileNotFoundError, LogError) as exc:
        print(f"rtchat replay: {exc}", file=sys.stderr)
        return 2
    if not cfg.bus.pub_endpoint:
        print("rtchat replay: no live bus: give --bus RUN_DIR or bus.pub_endpoint=…/bus.sub_endpoint=…", file=sys.stderr)
        return 2
    clock = Clock()
    client = BusClient(cfg.bus, src="replay", session=cfg.run.id, clock=clock)
    try:
        client.handshake(int(cfg.bus.handshake_timeout_s * 1e9))
        topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
        result = replay(reader, client.publish, clock, None if args.fast else args.speed, topics)
    except HandshakeTimeout as exc:
        print(f"rtchat replay: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"replayed {result.published} event(s), skipped {result.skipped} by topic, {result.undecodable} undecodable")
    if reader.damage is not None:
        print(
            f"warning: {reader.path} is damaged: stopped at byte {reader.damage.offset}: {reader.damage.reason}",
            file=sys.stderr,
        )
    return 0
