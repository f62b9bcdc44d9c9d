"""``rtchat bench session --json OUT [--quick]``: whole voice sessions on the embedded CPU defaults.

Scripted users (``USERS``: questions, statements, hesitations mid-sentence, a trailing-off
fragment, backchannel-sized utterances) are rendered by ``simulate-user`` inside the benchmark
and played in real time into full sessions (``rtchat run --ui none --in USER.wav``: proxy,
logger, audio, asr, agent, tts), each analysed from its log by ``rtchat analyze``. Every user
runs twice in the same benchmark: with the agent's predictive lookahead (the default) and, as the
baseline, without it (``agent.lookahead=false``), so the ratio holds on a noisy machine.

Keys (per policy under ``policies``; the default policy's figures also at the top level):
- ``fto_p50_ms`` / ``fto_p90_ms``: floor-transfer offsets to the agent over all sessions
  (user speech end → agent's first sound; negative = the agent started in overlap);
- ``answered_rate``: share of the script's user turns (one per script line) with agent speech
  starting after the turn began and before the next one;
- ``overlap_start_rate``: share of the agent's turns that started while the user was speaking;
- ``gap_p50_ms``: p50 of the offsets of the transfers that started after the user stopped (a
  p50 over all of them mixes gaps and overlaps, and can be negative);
- ``gap_p50_ratio_vs_no_lookahead``: ``gap_p50_ms`` default / baseline;
- ``fdb_pause_tor``, ``fdb_smooth_tor``, ``fdb_smooth_latency_ms``, ``fdb_interruption_tor``,
  ``fdb_interruption_latency_ms``, ``fdb_backchannel_rate``: Full-Duplex-Bench v1.0 metrics
  (``evals/fdb.py``) over the samples of all sessions pooled, and ``fdb_n``, how many there were;
- ``tts_ttfa_ms`` / ``tts_rtf``: per TTS backend, from ``rtchat bench tts`` run in the same benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtchat.common.audio import SR_HZ
from rtchat.common.provenance import machine
from rtchat.common.stats import percentile
from rtchat.evals import fdb

log = logging.getLogger(__name__)

# One line = one user turn; the gaps leave the agent room to answer.
USERS = {
    "trip": [
        "[0.5] hi there how are you doing today",
        "[6.0] i'm good thanks i just got back from a trip [pause 0.6] to the mountains with my family",
        "[15.0] yeah",
        "[18.0] it was really nice we went hiking [pause 0.9] um [pause 0.5] almost every day",
        "[27.0] what do you like to do on the weekend",
    ],
    "food": [
        "[0.5] so i was thinking about [pause 0.8] um [pause 0.6] what to cook tonight",
        "[9.0] do you have any ideas",
        "[15.0] mm-hmm",
        "[18.0] i don't really like fish though",
        "[24.0] well i don't know [pause 0.4] maybe",
    ],
    "work": [
        "[0.5] hello",
        "[4.0] i had a long day at work today",
        "[10.0] my boss asked me to finish a big report [pause 0.7] and i [pause 0.6] i just couldn't",
        "[20.0] right",
        "[23.0] how was your day",
    ],
}
POLICIES = {"lookahead": [], "no_lookahead": ["agent.lookahead=false"]}
FDB_KEYS = ("fdb_pause_tor", "fdb_smooth_tor", "fdb_smooth_latency_ms", "fdb_interruption_tor",
            "fdb_interruption_latency_ms", "fdb_backchannel_rate", "fdb_n")


def script_turns(lines: list[str]) -> list[int]:
    """How many utterances (Say items) each line holds."""
    from rtchat.evals.simulate_user import Say, parse

    return [sum(isinstance(i, Say) for i in parse(line)) for line in lines]


def run_session(user_wav: Path, runs_dir: Path, overrides: list[str], tail_s: float) -> Path:
    before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    cmd = [sys.executable, "-m", "rtchat.launcher", "--ui", "none", "--in", str(user_wav),
           f"run.runs_dir={runs_dir}", "audio.output=none", f"audio.tail_s={tail_s}", *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"session failed ({r.returncode}): {r.stderr[-2000:]}")
    (run_dir,) = set(runs_dir.iterdir()) - before
    return run_dir


def measure(run_dir: Path, segments: list[list], per_turn: list[int]) -> dict:
    """Analysis of one session, and the script's turns answered."""
    from rtchat.evals.analyze import AudioClock, agent_chunks, analyze, read_events

    events, _ = read_events(run_dir)
    report = analyze(events)
    clock = AudioClock(events)
    offset = clock.offset_ns or 0
    agent_starts = [(span.start_ns - offset) / 1e9 for span, _ in agent_chunks(events)]
    starts, i = [], 0
    for n in per_turn:
        starts.append(segments[i][0])
        i += n
    answered = 0
    for k, s in enumerate(starts):
        nxt = starts[k + 1] if k + 1 < len(starts) else float("inf")
        answered += any(s < a < nxt for a in agent_starts)
    return {"run": str(run_dir), "fto_ms": report["fto_ms"], "turns": report["turns"],
            "agent_started_in_overlap": report["agent_started_in_overlap"], "user_turns": len(starts),
            "answered": answered, "stage_latency_ms": report["stage_latency_ms"], "fdb_samples": report["fdb_samples"]}


def summarize(sessions: list[dict]) -> dict:
    fto = [f for s in sessions for f in s["fto_ms"]]
    turns = sum(s["turns"] for s in sessions)
    stages = {k: percentile([s["stage_latency_ms"][k] for s in sessions if s["stage_latency_ms"].get(k) is not None], 0.5)
              for k in sessions[0]["stage_latency_ms"]} if sessions else {}
    return {
        "fto_p50_ms": percentile(fto, 0.5),
        "fto_p90_ms": percentile(fto, 0.9),
        "gap_p50_ms": percentile([f for f in fto if f >= 0], 0.5),
        "answered_rate": round(sum(s["answered"] for s in sessions) / max(1, sum(s["user_turns"] for s in sessions)), 3),
        "overlap_start_rate": round(sum(s["agent_started_in_overlap"] for s in sessions) / turns, 3) if turns else None,
        "transfers": turns,
        "stage_latency_ms": stages,
        **fdb.summarize([fdb.Samples(**s["fdb_samples"]) for s in sessions]),
    }


def bench_tts(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "tts.json"
        cmd = [sys.executable, "-m", "rtchat.cli", "bench", "tts", "--json", str(out)] + (["--quick"] if quick else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"rtchat bench tts failed: {r.stderr[-1000:]}")
        return json.loads(out.read_text())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="one scripted user instead of all")
    parser.add_argument("--users", nargs="*", choices=sorted(USERS), help="which scripted users (default: all)")
    parser.add_argument("--tail", type=float, default=4.0, metavar="S", help="session time after the user's recording ends")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and run directories here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every session")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic
    from rtchat.evals.simulate_user import engine_synth, parse, render, write_wav

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = args.users or (["trip"] if args.quick else sorted(USERS))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rtchat-bench-session-"))
    work.mkdir(parents=True, exist_ok=True)
    synth = engine_synth("piper")
    started = time.time()
    policies: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for name in names:
        lines = USERS[name]
        pcm, segments = render(parse("\n".join(lines)), synth, tail_s=0.5)
        wav = work / f"{name}.wav"
        write_wav(wav, pcm)
        for policy, extra in POLICIES.items():
            log.info("session %s / %s (%.0f s of user audio)…", name, policy, len(pcm) / SR_HZ)
            run_dir = run_session(wav, work / "runs", [*extra, *args.overrides], args.tail)
            result = measure(run_dir, segments, script_turns(lines))
            log.info("  FTO %s, answered %d/%d", result["fto_ms"], result["answered"], result["user_turns"])
            policies[policy].append({"user": name, **result})
    summary = {p: summarize(s) for p, s in policies.items()}
    tts = bench_tts(args.quick)
    engines = {k: v for k, v in tts.items() if isinstance(v, dict) and "tts_ttfa_ms" in v}
    main, base = summary["lookahead"], summary["no_lookahead"]
    report = {
        **{k: main[k] for k in ("fto_p50_ms", "fto_p90_ms", "answered_rate", "overlap_start_rate", "gap_p50_ms", *FDB_KEYS)},
        "gap_p50_ratio_vs_no_lookahead": round(main["gap_p50_ms"] / base["gap_p50_ms"], 3)
        if main["gap_p50_ms"] and base["gap_p50_ms"] else None,
        "tts_ttfa_ms": {k: v["tts_ttfa_ms"] for k, v in engines.items()},
        "tts_rtf": {k: v["tts_rtf"] for k, v in engines.items()},
        "policies": summary,
        "sessions": policies,
        "users": {n: USERS[n] for n in names},
        "config": {"overrides": args.overrides, "tail_s": args.tail, "quick": args.quick},
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
        "definitions": __doc__.split("Keys", 1)[1].strip(),
    }
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("fto_p50_ms", "fto_p90_ms", "answered_rate", "overlap_start_rate",
                                              "gap_p50_ms", "gap_p50_ratio_vs_no_lookahead", *FDB_KEYS[:-1],
                                              "tts_ttfa_ms", "tts_rtf")}))
    return 0
