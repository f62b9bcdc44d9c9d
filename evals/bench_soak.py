"""``rtchat bench soak --minutes N --json OUT [--seed N]``: one long session, watched for restarts,
memory growth, latency drift, lost events and an unbounded transcript.

The user never stops: lines drawn (seeded, never the same line twice in a row) from ``bench
session``'s users, each after 4–8 s of room for the agent to answer, for longer than the session
lasts; each distinct line is rendered once by ``simulate-user`` with the Piper voice and the
recording is put together from those pieces. The session (the embedded CPU profile, ``rtchat run
--ui none --in USER.wav``) stops by itself after N minutes live (``launcher.duration_s``). While
it runs, every node's resident memory is read from /proc/<pid>/status (pids from
``node.heartbeat``, the proxy's from the launcher's children) every few seconds; everything else
comes from the event log afterwards.

Windows: the first and the last 10 % of the live session (``ctl.live`` → ``ctl.shutdown``),
at least 20 s each and at most a third of it; the first is also the warm-up.

Keys:
- ``unplanned_restarts``: ``node.restarted`` events (the soak injects no fault);
- ``rss_mb``: per node (and the proxy) ``{start, end}``: the median of the samples in the window
  after the warm-up and of those in the last window before ``ctl.shutdown`` (memory swings with
  the work: a single sample at each end measures the swing); ``rss_growth_pct``: (end − start) /
  start × 100 (``pid_changed``: restarted between);
- ``decision_ms``: ``{first, last}`` window p50 of an ``agent.cycle``'s model time (the sum of its
  ``timings_ns``, cycles that ran the model); ``forwards_per_cycle``: ``{first, last}``, the mean
  number of model forward passes of those cycles (``agent.cycle.forwards``); ``decision_step_ms``:
  ``{first, last}`` window p50 of a cycle's model time per forward pass; ``floor_transfer_ms``:
  the p50 of ``bench session``'s gap (user speech end → the agent's first sound, transfers after
  the user stopped; ``rtchat analyze`` on each window's events);
- ``latency_drift_pct``: ``{decision, floor_transfer}``: (last − first) / first × 100, the
  decision's from ``decision_step_ms``. A cycle is a prefill and as many decode steps as its
  decision needs (two for a silent one, seven or more for words), so a window's per-cycle p50
  follows the mix of decisions — which cycles are the median flips between the cheap and the
  wordy ones from one minute to the next — while the time per forward pass is what grows when the
  session itself slows down (memory, context, contention). ``decision_ms`` and
  ``forwards_per_cycle`` show the mix;
- ``lost_events``: events missing by their publishers' sequence numbers (``rtchat log info``);
- ``log_bytes_per_min``: the event log's size per minute of live session;
- ``sequence_chars``: ``{first, last}``: the longest ``agent.state`` sequence in each window;
  ``context_bounded``: last ≤ 1.1 × first (the transcript stopped growing; a soak whose first
  window ends before ``agent.max_history_words`` is reached reads false); ``trims``: the agent's
  history trims (its last heartbeat).
Top level: ``targets``, ``ok``, ``all_ok`` (unplanned_restarts 0, rss_growth_pct < 5 for every
node, both latency_drift_pct < 10, lost_events 0), ``machine``, ``commit`` (the run's header).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import re
import time
from pathlib import Path

import numpy as np

from rtchat.bus.events import AgentCycle, AgentState, Live, NodeHeartbeat, NodeRestarted, Shutdown
from rtchat.common.stats import percentile
from rtchat.evals.analyze import Timed
from rtchat.evals.faults import PROXY

log = logging.getLogger(__name__)

ROOM_S = (4.0, 8.0)  # silence before each line: the agent's room to answer
EXTRA_S = 30.0  # recording beyond the session's end, so the user never runs out
WINDOW_SHARE = 0.1
WINDOW_MIN_S = 20.0
SAMPLE_S = (1.0, 5.0)  # memory is read every duration / 20 seconds, within these bounds
BOUNDED_SLACK = 1.1  # context_bounded: the last window's longest sequence against the first's
TARGETS = {"unplanned_restarts": 0, "rss_growth_pct": 5.0, "latency_drift_pct": 10.0, "lost_events": 0}
NS = 1_000_000_000


# ---------------------------------------------------------------- the user


def line_pool() -> list[str]:
    """bench session's lines without their start times."""
    from rtchat.evals.bench_session import USERS

    return [re.sub(r"^\[[\d.]+\]\s*", "", line) for lines in USERS.values() for line in lines]


def soak_recording(seconds: float, rng: random.Random, synth) -> tuple[np.ndarray, list[list], list[str]]:
    """int16 audio of at least `seconds`, its utterances' [start_s, end_s, text] and the lines in order."""
    from rtchat.common.audio import SR_HZ
    from rtchat.evals.simulate_user import parse, render

    pool, rendered = line_pool(), {}
    synth = functools.cache(synth)  # an utterance several lines share ("um") is rendered once too
    parts, segments, order, length, previous = [], [], [], 0, None
    while length < seconds * SR_HZ:
        line = rng.choice([p for p in pool if p != previous])
        if line not in rendered:
            rendered[line] = render(parse(line), synth, tail_s=0.0)
        pcm, segs = rendered[line]
        room = round(rng.uniform(*ROOM_S) * SR_HZ)
        start = length + room
        parts += [np.zeros(room, np.int16), pcm]
        segments += [[round(a + start / SR_HZ, 3), round(b + start / SR_HZ, 3), text] for a, b, text in segs]
        order.append(line)
        length, previous = start + len(pcm), line
    return np.concatenate(parts), segments, order


# ---------------------------------------------------------------- the live part


def watch(session, duration_s: float, deadline: float) -> list[list]:
    """Memory samples [t_s since ctl.live, node, pid, rss_mb] from ctl.live to ctl.shutdown."""
    from rtchat.evals.faults import rss_mb

    interval = min(max(duration_s / 20, SAMPLE_S[0]), SAMPLE_S[1])
    samples: list[list] = []
    live_ns, next_at = None, 0.0
    while session.running() and time.monotonic() < deadline:
        events = session.poll(200)
        if any(isinstance(ev, Shutdown) for _, ev in events):
            break  # nodes stopping free their memory: not a figure of the session
        live_ns = next((t for t, ev in events if isinstance(ev, Live)), None) if live_ns is None else live_ns
        if live_ns is None or time.monotonic() < next_at:
            continue
        next_at = time.monotonic() + interval
        t_s = round((time.time_ns() - live_ns) / NS, 2)
        for node in [*session.pids, PROXY]:
            pid = session.pid_of(node)
            rss = None if pid is None else rss_mb(pid)
            if rss is not None:
                samples.append([t_s, node, pid, rss])
    return samples


# ---------------------------------------------------------------- figures


def window_s(duration_s: float) -> float:
    return min(max(WINDOW_SHARE * duration_s, WINDOW_MIN_S), duration_s / 3)


def rss_report(samples: list[list], warmup_s: float, nodes: list[str]) -> dict[str, dict]:
    """Per node (those named and those sampled): memory after the warm-up and at the end, each
    the median of a window of ``warmup_s``: the one right after the warm-up, the last one. A
    node's memory swings with what it is doing (the recogniser's by some 60 MB between calls), so
    one sample at each end would measure where the swing happened to be."""
    out = {}
    for node in sorted(set(nodes) | {s[1] for s in samples}):
        mine = sorted((s for s in samples if s[1] == node), key=lambda s: s[0])
        after = [s for s in mine if s[0] >= warmup_s]
        start = end = None
        if len(after) >= 2:
            first = [s[3] for s in after if s[0] < warmup_s + warmup_s] or [after[0][3]]
            last = [s[3] for s in after if s[0] > after[-1][0] - warmup_s] or [after[-1][3]]
            start, end = percentile(first, 0.5), percentile(last, 0.5)
        out[node] = {
            "rss_mb": {"start": start, "end": end},
            "rss_growth_pct": round((end - start) / start * 100, 2) if start else None,
            "pid_changed": len({s[2] for s in after}) > 1,
            "samples": [[s[0], s[2], s[3]] for s in mine],
        }
    return out


def in_window(events: list[Timed], lo_ns: int, hi_ns: int) -> list[Timed]:
    return [e for e in events if lo_ns <= e.t_ns < hi_ns]


def decision_ms(events: list[Timed]) -> list[float]:
    """Model time of the cycles that ran the model, ms."""
    cycles = [sum(e.event.timings_ns.values()) for e in events if isinstance(e.event, AgentCycle)]
    return [t / 1e6 for t in cycles if t > 0]


def cycle_forwards(events: list[Timed]) -> list[tuple[float, int]]:
    """(model time ms, forward passes) of the cycles that ran a forward pass."""
    cycles = [(sum(e.event.timings_ns.values()) / 1e6, sum(e.event.forwards.values()))
              for e in events if isinstance(e.event, AgentCycle)]
    return [(t, n) for t, n in cycles if n > 0]


def step_figures(events: list[Timed]) -> tuple[float | None, float | None]:
    """(p50 model time per forward pass, mean forward passes per cycle) of a window."""
    cycles = cycle_forwards(events)
    if not cycles:
        return None, None
    return percentile([t / n for t, n in cycles], 0.5), round(sum(n for _, n in cycles) / len(cycles), 2)


def transfer_gaps_ms(events: list[Timed]) -> list[float]:
    from rtchat.evals.analyze import analyze

    return [f for f in analyze(events)["fto_ms"] if f >= 0] if events else []


def drift_pct(first: float | None, last: float | None) -> float | None:
    return round((last - first) / first * 100, 1) if first and last is not None else None


def longest_sequence(events: list[Timed]) -> int | None:
    return max((len(e.event.sequence) for e in events if isinstance(e.event, AgentState)), default=None)


def log_figures(events: list[Timed]) -> dict:
    """Everything the soak reports from its log: restarts, latency in the two windows, the transcript."""
    live_ns = next((e.t_ns for e in events if isinstance(e.event, Live)), events[0].t_ns if events else 0)
    end_ns = next((e.t_ns for e in events if isinstance(e.event, Shutdown)), events[-1].t_ns if events else live_ns)
    duration_s = (end_ns - live_ns) / NS
    w_ns = int(window_s(duration_s) * NS)
    first, last = in_window(events, live_ns, live_ns + w_ns), in_window(events, end_ns - w_ns, end_ns + 1)
    decision = {"first": percentile(decision_ms(first), 0.5), "last": percentile(decision_ms(last), 0.5)}
    (step_first, n_first), (step_last, n_last) = step_figures(first), step_figures(last)
    transfer = {"first": percentile(transfer_gaps_ms(first), 0.5), "last": percentile(transfer_gaps_ms(last), 0.5)}
    chars = {"first": longest_sequence(first), "last": longest_sequence(last)}
    beats = [e.event for e in events if isinstance(e.event, NodeHeartbeat) and e.event.node == "agent"]
    return {
        "duration_s": round(duration_s, 1),
        "window_s": round(w_ns / NS, 1),
        "unplanned_restarts": sum(isinstance(e.event, NodeRestarted) for e in events),
        "restarts": [{"node": e.event.node, "reason": e.event.reason, "at_s": round((e.t_ns - live_ns) / NS, 1)}
                     for e in events if isinstance(e.event, NodeRestarted)],
        "decision_ms": decision,
        "forwards_per_cycle": {"first": n_first, "last": n_last},
        "decision_step_ms": {"first": step_first, "last": step_last},
        "floor_transfer_ms": transfer,
        "latency_drift_pct": {"decision": drift_pct(step_first, step_last),
                              "floor_transfer": drift_pct(transfer["first"], transfer["last"])},
        "sequence_chars": chars,
        "context_bounded": chars["first"] is not None and chars["last"] is not None
        and chars["last"] <= BOUNDED_SLACK * chars["first"],
        "trims": beats[-1].stats.get("trims", 0) if beats else None,
    }


def judge(report: dict) -> dict[str, bool]:
    growth = [n["rss_growth_pct"] for n in report["nodes"].values()]
    drift = list(report["latency_drift_pct"].values())
    return {
        "unplanned_restarts": report["unplanned_restarts"] == TARGETS["unplanned_restarts"],
        "rss_growth_pct": bool(growth) and all(g is not None and g < TARGETS["rss_growth_pct"] for g in growth),
        "latency_drift_pct": all(d is not None and d < TARGETS["latency_drift_pct"] for d in drift),
        "lost_events": report["lost_events"] == TARGETS["lost_events"],
    }


# ---------------------------------------------------------------- command


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: allowed: a number of minutes > 0")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--minutes", type=positive, required=True, metavar="N", help="how long the session runs live")
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--seed", type=int, default=0, help="draws the user's lines and pauses (default 0)")
    parser.add_argument("--keep", metavar="DIR", help="keep the recording and the run directory here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the session")


def run(args: argparse.Namespace) -> int:
    from rtchat.bus.eventlog import LogReader
    from rtchat.bus.logcli import summarize
    from rtchat.common.audio import SR_HZ
    from rtchat.common.files import write_atomic
    from rtchat.configs import load
    from rtchat.evals.analyze import read_events
    from rtchat.evals.faults import LiveSession, provenance, work_dir
    from rtchat.evals.simulate_user import engine_synth, write_wav

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    work = work_dir(args.keep, "soak")
    seconds = args.minutes * 60
    pcm, segments, order = soak_recording(seconds + EXTRA_S, random.Random(args.seed), engine_synth("piper"))
    wav = work / "user.wav"
    write_wav(wav, pcm)
    log.info("soak session: %.1f min live, %d user lines (%d distinct)", args.minutes, len(order), len(set(order)))
    overrides = [f"launcher.duration_s={seconds}", *args.overrides]
    deadline = time.monotonic() + seconds + 600  # loading and stopping come on top
    session = LiveSession(wav, work / "runs", f"soak-{time.strftime('%Y%m%d-%H%M%S')}", overrides, topics=("node.", "ctl."))
    try:
        session.connect()
        samples = watch(session, seconds, deadline)
    finally:
        rc = session.finish(deadline - time.monotonic())
    events, notes = read_events(session.run_dir)
    figures = log_figures(events)
    nodes = load(str(session.run_dir / "config.yaml")).launcher.nodes
    info = summarize(LogReader(session.run_dir))
    size = (session.run_dir / "events.rtlog").stat().st_size
    report = {
        **figures,
        "nodes": rss_report(samples, figures["window_s"], [*nodes, PROXY]),
        "lost_events": info["lost"],
        "log": {"gaps": info["gaps"], "undecodable": info["undecodable"], "damage": info["damage"], **notes},
        "log_bytes_per_min": round(size / max(figures["duration_s"] / 60, 1e-9)),
    }
    report["ok"] = judge(report)
    report = {
        "all_ok": all(report["ok"].values()),
        "targets": TARGETS,
        **report,
        "user": {"lines": len(order), "distinct": len(set(order)), "recording_s": round(len(pcm) / SR_HZ, 1)},
        "run": str(session.run_dir),
        "launcher_exit": rc,
        "seed": args.seed,
        "config": {"minutes": args.minutes, "overrides": overrides, "profile": "cpu"},
        **provenance(session.run_dir),
        "wall_s": round(time.time() - started, 1),
        "definitions": __doc__.split("Keys:", 1)[1].strip(),
    }
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("all_ok", "ok", "unplanned_restarts", "latency_drift_pct", "lost_events",
                                              "log_bytes_per_min", "context_bounded")}
                     | {"rss_growth_pct": {n: v["rss_growth_pct"] for n, v in report["nodes"].items()}}))
    return 0
