"""``rtchat log info|dump LOG``: inspect an event log (a ``.rtlog`` file or a run directory).
(``rtchat log export``, which needs the analysis and the CHAT writer, is ``evals/export.py``;
``evals/logcmd.py`` puts the three together.)

``info`` summarises: records, time span, events per topic, per-publisher sequence gaps (lost
events), records that fail strict decoding, and where reading stopped if the file is damaged.
``dump`` prints one JSON object per event (payload bytes shown by size, not content).
"""

from __future__ import annotations

import collections
import json
import sys

from rtchat.bus.eventlog import LogError, LogReader, SeqTracker
from rtchat.bus.wire import WireError, WireLimits, decode
from rtchat.common.schema import to_plain

LIMITS = WireLimits(max_message_bytes=64 * 1024 * 1024)


def summarize(reader: LogReader) -> dict:
    topics: collections.Counter[str] = collections.Counter()
    seqs = SeqTracker()
    first = last = None
    undecodable = 0
    records = 0
    for rec in reader:
        records += 1
        first = rec.recv_ns if first is None else first
        last = rec.recv_ns
        try:
            msg = decode(rec.frames, LIMITS)
        except WireError:
            undecodable += 1
            continue
        topics[msg.event.TYPE] += 1
        seqs.see(msg.env.src, msg.env.seq)
    return {
        "path": str(reader.path),
        "runs": sorted({m.get("run", "") for m in reader.metas}),
        "opened": len(reader.metas),  # 1 + logger restarts
        "records": records,
        "first_ns": first,
        "last_ns": last,
        "duration_s": round((last - first) / 1e9, 3) if records else 0.0,
        "topics": dict(sorted(topics.items())),
        "undecodable": undecodable,
        "gaps": seqs.gaps,
        "lost": seqs.lost,
        "gap_details": [{"src": s, "first_missing_seq": q, "missing": n} for s, q, n in seqs.details],
        "publisher_restarts": seqs.restarts,
        "damage": None if reader.damage is None else {"offset": reader.damage.offset, "reason": reader.damage.reason},
    }


def print_info(info: dict) -> None:
    print(f"log       {info['path']}")
    print(f"run       {', '.join(info['runs']) or '-'}   (opened {info['opened']}x)")
    print(f"records   {info['records']} over {info['duration_s']:.3f} s")
    for topic, n in info["topics"].items():
        print(f"  {topic:<18} {n}")
    print(
        f"lost      {info['lost']} event(s) in {info['gaps']} sequence gap(s); "
        f"{info['publisher_restarts']} publisher restart(s)"
    )
    for g in info["gap_details"][:10]:
        print(f"  {g['src']}: {g['missing']} missing from seq {g['first_missing_seq']}")
    if info["undecodable"]:
        print(f"undecodable {info['undecodable']} record(s)")


def warn_damage(reader: LogReader) -> None:
    if reader.damage is not None:
        print(
            f"warning: {reader.path} is damaged: read stopped at byte {reader.damage.offset}: {reader.damage.reason}; "
            "everything before it was read",
            file=sys.stderr,
        )


def dump(reader: LogReader, topics: tuple[str, ...], limit: int | None) -> None:
    shown = 0
    for rec in reader:
        try:
            msg = decode(rec.frames, LIMITS)
        except WireError as exc:
            print(json.dumps({"recv_ns": rec.recv_ns, "offset": rec.offset, "error": str(exc)}))
            continue
        if topics and not msg.event.TYPE.startswith(topics):
            continue
        fields = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in to_plain(msg.event).items()}
        print(json.dumps({"recv_ns": rec.recv_ns, "type": msg.event.TYPE, **to_plain(msg.env), **fields}))
        shown += 1
        if limit is not None and shown >= limit:
            break


def add_actions(sub) -> None:
    """``info`` and ``dump`` on the sub-parsers of ``rtchat log`` (``evals/logcmd.py``, which adds ``export``)."""
    info = sub.add_parser("info", help="summary: records, topics, lost events, damage")
    info.add_argument("log", help="a .rtlog file or a run directory")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    d = sub.add_parser("dump", help="one JSON line per event")
    d.add_argument("log", help="a .rtlog file or a run directory")
    d.add_argument("--topics", default="", help="comma-separated topic prefixes to show (default: all)")
    d.add_argument("--limit", type=int, default=None, help="stop after N events")


def run(args) -> int:
    try:
        reader = LogReader(args.log)
        if args.log_cmd == "info":
            info = summarize(reader)
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                print_info(info)
        else:
            topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
            dump(reader, topics, args.limit)
    except (FileNotFoundError, LogError) as exc:
        print(f"rtchat log: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    warn_damage(reader)
    return 0
