"""``rtchat bench session --json OUT [--quick]``: whole voice sessions on the embedded CPU defaults.

Scripted users (``USERS``: questions, statements, hesitations mid-sentence and inside clauses, a
trailing-off fragment, backchannel-sized utterances) are rendered by ``simulate-user`` inside the
benchmark, each in both of its voices (``simulate_user.ENGINES``: the embedded Piper joe and
espeak-ng; ``--quick``: one voice per user, taking turns), and played in real time into full
sessions (``rtchat run --ui none --in USER.wav``: proxy, logger, audio, asr, agent, tts), each
analysed from its log by ``rtchat analyze``. Every recording runs twice in the same benchmark: with
the agent's predictive lookahead (``agent.lookahead=true``, the default) and, as the baseline,
without it (``agent.lookahead=false``), so the ratio holds on a noisy machine.

Keys (per policy under ``policies``; the default policy's figures also at the top level):
- ``fto_p50_ms`` / ``fto_p90_ms``: floor-transfer offsets to the agent over all sessions
  (user speech end as the VAD saw it → agent's first sound; negative = the agent started in overlap);
- ``answered_rate``: share of the script's user turns (one per script line) with agent speech
  starting after the turn began and before the next one;
- ``overlap_start_rate``: share of the agent's turns that started while the user was speaking
  (as the VAD saw it: a start in a hesitation the VAD took for the end of speech is not counted);
- ``cut_in_rate``: agent turns, backchannels excluded, that started while the user was speaking —
  anywhere from the start of a script line's speech to the end of its last word, the hesitation
  pauses inside the line included — per user turn (script line). Times are the script's own
  (where ``simulate-user`` put each utterance in the recording), not the VAD's. An **agent turn**
  is a run of the agent's IPUs (played chunks closer than 300 ms, merged as ``rtchat analyze``
  merges them) of one kind, backchannels or not, with no user utterance starting between one's end
  and the next one's start — so an agent that pauses and goes on within the user's hesitation cuts
  in once;
- ``backchannel_rate``: agent turns that are backchannels, per user turn. A backchannel IPU has
  at most ``BACKCHANNEL_MAX_WORDS`` (2) words, pause tokens aside, each a phrase of
  ``BACKCHANNEL_PHRASES`` (mm-hmm, yeah, uh-huh, right, okay, i see, …) or both together one ("oh
  yeah"); ``agent.say`` does not mark backchannels, so they are known by their words;
- ``gap_p50_ms`` / ``gap_p90_ms``: over the script lines answered after they ended, the gap from
  the line's last word to the first agent turn (not a backchannel) that starts after it and before
  the next line — script times as for ``cut_in_rate``, so a start in a hesitation is a cut-in, not
  a short gap (the offsets from the VAD's speech ends are ``fto_*``);
- ``gap_p50_ratio_vs_no_lookahead``: ``gap_p50_ms`` default / baseline;
- ``fdb_pause_tor``, ``fdb_smooth_tor``, ``fdb_smooth_latency_ms``, ``fdb_interruption_tor``,
  ``fdb_interruption_latency_ms``, ``fdb_backchannel_rate``: Full-Duplex-Bench v1.0 metrics
  (``evals/fdb.py``) over the samples of all sessions pooled, and ``fdb_n``, how many there were;
- ``tts_ttfa_ms`` / ``tts_rtf``: per TTS backend, from ``rtchat bench tts`` run in the same benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtchat.common.audio import SR_HZ
from rtchat.common.provenance import machine
from rtchat.common.stats import percentile
from rtchat.datasets.synthetic import BACKCHANNELS
from rtchat.evals import fdb
from rtchat.evals.analyze import MERGE_GAP_NS, AudioClock, Span, agent_chunks, analyze, merge, read_events
from rtchat.evals.simulate_user import ENGINES, Say, engine_synth, parse, render, write_wav
from rtchat.nodes.agent.transcript import PAUSE_RE

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
    # hesitations inside a clause, where a listener must not start
    "story": [
        "[0.5] i had a funny day yesterday",
        "[6.0] so we [pause 0.8] um [pause 0.6] we took the train to the coast",
        "[15.0] and then i [pause 0.9] i went swimming in the sea",
        "[24.0] okay",
        "[27.0] the water was [pause 0.7] really [pause 0.5] really cold",
    ],
    "plans": [
        "[0.5] i wanted to ask you about [pause 0.8] the weekend",
        "[8.0] are you free on saturday",
        "[14.0] because my sister [pause 0.9] she is coming and we [pause 0.7] we want to go out",
        "[24.0] uh-huh",
        "[27.0] maybe we could [pause 0.6] um [pause 0.5] go for a walk by the river",
    ],
}
POLICIES = {"lookahead": ["agent.lookahead=true"], "no_lookahead": ["agent.lookahead=false"]}
BACKCHANNEL_MAX_WORDS = 2
BACKCHANNEL_PHRASES = frozenset(BACKCHANNELS) | {"i see", "uh huh", "mm hmm", "mhm", "ok"}  # the corpus's, and spellings
KEYS = ("fto_p50_ms", "fto_p90_ms", "answered_rate", "overlap_start_rate", "cut_in_rate", "backchannel_rate",
        "gap_p50_ms", "gap_p90_ms")  # the policy keys repeated at the top level
FDB_KEYS = ("fdb_pause_tor", "fdb_smooth_tor", "fdb_smooth_latency_ms", "fdb_interruption_tor",
            "fdb_interruption_latency_ms", "fdb_backchannel_rate", "fdb_n")


def script_turns(lines: list[str]) -> list[int]:
    """How many utterances (Say items) each line holds."""
    return [sum(isinstance(i, Say) for i in parse(line)) for line in lines]


@dataclasses.dataclass(frozen=True)
class Line:
    """One script line (one user turn) as rendered, in ns of the user's recording."""

    start_ns: int  # its first word's start
    end_ns: int  # its last word's end: hesitation pauses between lie inside
    onsets_ns: tuple[int, ...]  # each utterance's start, the first included


def script_lines(segments: list[list], per_turn: list[int]) -> list[Line]:
    """``simulate_user.render``'s [start_s, end_s, text] utterances grouped into the script's lines."""
    out, i = [], 0
    for n in per_turn:
        own = segments[i:i + n]
        out.append(Line(round(own[0][0] * 1e9), round(own[-1][1] * 1e9), tuple(round(u[0] * 1e9) for u in own)))
        i += n
    return out


def is_backchannel(text: str) -> bool:
    """At most two words (pause tokens aside), each a backchannel phrase, or together one ("oh yeah")."""
    words = re.sub(r"[^\w\s'-]", " ", PAUSE_RE.sub(" ", text).lower()).split()
    if not words or len(words) > BACKCHANNEL_MAX_WORDS:
        return False
    return " ".join(words) in BACKCHANNEL_PHRASES or all(w in BACKCHANNEL_PHRASES for w in words)


def agent_turns(ipus: list[Span], onsets_ns: list[int]) -> list[tuple[Span, bool]]:
    """Agent IPUs (time order) joined into turns, each with whether it is a backchannel: an IPU
    joins the latest turn of its kind (backchannel or not) unless a user utterance started since
    that turn's last IPU ended, so "mm-hmm" over the user's words and the answer after them are two."""
    turns: list[tuple[Span, bool]] = []
    latest: dict[bool, int] = {}  # kind → index of its latest turn
    for ipu in ipus:
        kind = is_backchannel(ipu.text)
        k = latest.get(kind)
        if k is not None and not any(turns[k][0].end_ns <= t < ipu.start_ns for t in onsets_ns):
            turn = turns[k][0]
            turns[k] = (Span(turn.start_ns, ipu.end_ns, f"{turn.text} {ipu.text}".strip()), kind)
        else:
            latest[kind] = len(turns)
            turns.append((dataclasses.replace(ipu), kind))
    return turns


def turn_taking(lines: list[Line], turns: list[tuple[Span, bool]]) -> dict:
    """Cut-ins, backchannels and gaps of the agent's turns against the script's own lines."""
    taking = [t for t, backchannel in turns if not backchannel]
    cut_ins = [t for t in taking if any(ln.start_ns <= t.start_ns < ln.end_ns for ln in lines)]
    gaps = []
    for k, ln in enumerate(lines):
        nxt = lines[k + 1].start_ns if k + 1 < len(lines) else None
        first = next((t for t in taking if ln.end_ns <= t.start_ns and (nxt is None or t.start_ns < nxt)), None)
        if first is not None:
            gaps.append(round((first.start_ns - ln.end_ns) / 1e6, 1))
    return {"cut_ins": len(cut_ins), "cut_in_at_s": [round(t.start_ns / 1e9, 3) for t in cut_ins],
            "backchannels": len(turns) - len(taking), "gaps_ms": gaps}


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
    """Analysis of one session, the script's turns answered, and its turn-taking on the script's times."""
    events, _ = read_events(run_dir)
    report = analyze(events)
    offset = AudioClock(events).offset_ns or 0
    chunks = [Span(c.start_ns - offset, c.end_ns - offset, c.text) for c, _ in agent_chunks(events)]
    lines = script_lines(segments, per_turn)
    answered = 0
    for k, ln in enumerate(lines):
        nxt = lines[k + 1].start_ns if k + 1 < len(lines) else None
        answered += any(ln.start_ns < c.start_ns and (nxt is None or c.start_ns < nxt) for c in chunks)
    ipus = merge(chunks, MERGE_GAP_NS)
    turns = agent_turns(ipus, [t for ln in lines for t in ln.onsets_ns])
    return {"run": str(run_dir), "fto_ms": report["fto_ms"], "turns": report["turns"],
            "agent_started_in_overlap": report["agent_started_in_overlap"], "user_turns": len(lines),
            "answered": answered, **turn_taking(lines, turns),
            "stage_latency_ms": report["stage_latency_ms"], "fdb_samples": report["fdb_samples"]}


def summarize(sessions: list[dict]) -> dict:
    fto = [f for s in sessions for f in s["fto_ms"]]
    gaps = [g for s in sessions for g in s["gaps_ms"]]
    turns = sum(s["turns"] for s in sessions)
    user_turns = sum(s["user_turns"] for s in sessions)
    stages = {k: percentile([s["stage_latency_ms"][k] for s in sessions if s["stage_latency_ms"].get(k) is not None], 0.5)
              for k in sessions[0]["stage_latency_ms"]} if sessions else {}
    return {
        "fto_p50_ms": percentile(fto, 0.5),
        "fto_p90_ms": percentile(fto, 0.9),
        "gap_p50_ms": percentile(gaps, 0.5),
        "gap_p90_ms": percentile(gaps, 0.9),
        "answered_rate": round(sum(s["answered"] for s in sessions) / max(1, user_turns), 3),
        "overlap_start_rate": round(sum(s["agent_started_in_overlap"] for s in sessions) / turns, 3) if turns else None,
        "cut_in_rate": round(sum(s["cut_ins"] for s in sessions) / user_turns, 3) if user_turns else None,
        "backchannel_rate": round(sum(s["backchannels"] for s in sessions) / user_turns, 3) if user_turns else None,
        "transfers": turns,
        "stage_latency_ms": stages,
        **fdb.summarize([fdb.Samples(**s["fdb_samples"]) for s in sessions]),
    }


def user_voices(names: list[str], voices: list[str], quick: bool) -> dict[str, list[str]]:
    """Each user in every voice; with ``quick`` in one, the voices taking turns down the users."""
    return {n: [voices[i % len(voices)]] if quick else list(voices) for i, n in enumerate(names)}


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
    parser.add_argument("--quick", action="store_true", help="one scripted user in one voice instead of all in each")
    parser.add_argument("--users", nargs="*", choices=sorted(USERS), help="which scripted users (default: all)")
    parser.add_argument("--voices", nargs="*", choices=ENGINES,
                        help=f"who voices them (default: {' and '.join(ENGINES)}; with --quick one per user, taking turns)")
    parser.add_argument("--tail", type=float, default=4.0, metavar="S", help="session time after the user's recording ends")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and run directories here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every session")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = args.users or (["trip"] if args.quick else sorted(USERS))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rtchat-bench-session-"))
    work.mkdir(parents=True, exist_ok=True)
    voices = user_voices(names, args.voices or list(ENGINES), args.quick)
    synths = {v: engine_synth(v) for v in {v for vs in voices.values() for v in vs}}
    started = time.time()
    policies: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for name, voice in ((n, v) for n in names for v in voices[n]):
        lines = USERS[name]
        pcm, segments = render(parse("\n".join(lines)), synths[voice], tail_s=0.5)
        wav = work / f"{name}-{voice}.wav"
        write_wav(wav, pcm)
        for policy, extra in POLICIES.items():
            log.info("session %s (%s) / %s (%.0f s of user audio)…", name, voice, policy, len(pcm) / SR_HZ)
            run_dir = run_session(wav, work / "runs", [*extra, *args.overrides], args.tail)
            result = measure(run_dir, segments, script_turns(lines))
            log.info("  FTO %s, gaps %s, cut-ins %d, answered %d/%d", result["fto_ms"], result["gaps_ms"], result["cut_ins"],
                     result["answered"], result["user_turns"])
            policies[policy].append({"user": name, "voice": voice, **result})
    summary = {p: summarize(s) for p, s in policies.items()}
    tts = bench_tts(args.quick)
    engines = {k: v for k, v in tts.items() if isinstance(v, dict) and "tts_ttfa_ms" in v}
    main, base = summary["lookahead"], summary["no_lookahead"]
    report = {
        **{k: main[k] for k in (*KEYS, *FDB_KEYS)},
        "gap_p50_ratio_vs_no_lookahead": round(main["gap_p50_ms"] / base["gap_p50_ms"], 3)
        if main["gap_p50_ms"] and base["gap_p50_ms"] else None,
        "tts_ttfa_ms": {k: v["tts_ttfa_ms"] for k, v in engines.items()},
        "tts_rtf": {k: v["tts_rtf"] for k, v in engines.items()},
        "policies": summary,
        "sessions": policies,
        "users": {n: USERS[n] for n in names},
        "voices": voices,
        "config": {"overrides": args.overrides, "tail_s": args.tail, "quick": args.quick},
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
        "definitions": __doc__.split("Keys", 1)[1].strip(),
    }
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in (*KEYS, "gap_p50_ratio_vs_no_lookahead", *FDB_KEYS[:-1], "tts_ttfa_ms", "tts_rtf")}))
    return 0
