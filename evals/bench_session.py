"""``rtchat bench session --json OUT [--quick] [--unseen]``: whole voice sessions on the embedded CPU defaults.

Scripted users (``USERS``: questions, statements, hesitations mid-sentence and inside clauses, a
trailing-off fragment, backchannel-sized utterances) are rendered by ``simulate-user`` inside the
benchmark, each in both of its voices (``simulate_user.ENGINES``: the embedded Piper joe and
espeak-ng; ``--quick``: one voice per user, taking turns), and played in real time into full
sessions (``rtchat run --ui none --in USER.wav``: proxy, logger, audio, asr, agent, tts), each
analysed from its log by ``rtchat analyze``. Every recording runs twice in the same benchmark: with
the agent's predictive lookahead (``agent.lookahead=true``, the default) and, as the baseline,
without it (``agent.lookahead=false``), so the ratio holds on a noisy machine.

``--unseen`` runs ``UNSEEN_USERS`` instead: two users no one tuned for, eight lines each,
questions and statements, three lines each with a hesitation inside a clause, and every line
after the first starting 5 s after the previous one ended (``[pause 5.0]``), in both voices.

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
- ``audio_gap_p50_ms`` / ``audio_gap_p90_ms``, ``audio_cut_in_rate``, ``audio_answered_rate``:
  ``gap_*``, ``cut_in_rate`` and ``answered_rate`` with the agent's speech taken from the right
  channel of each session's ``session.wav``, not from the log (``evals/stereo.py``): energy spans
  (20 ms frames, merged within 300 ms) placed on the script's times by the left channel (where the
  user's first sound lies on it); a span is a backchannel when the words of the log's agent chunks
  that overlap it are one (the audio has no words); any other span, one with no chunk over it
  included, is a turn-taking turn; a line is answered when a span starts after it began and before the next line.
  ``audio_sessions``: the sessions with a recording to measure; each session's ``audio`` also holds
  ``user_at_s`` (where the user's sample 0 lies in ``session.wav``) and ``user_at_vs_log_ms``
  (that minus where the log puts it: its first ``audio.in`` against the recording's origin; 0 when
  they agree);
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

import numpy as np

from rtchat.common.audio import SR_HZ
from rtchat.common.provenance import machine
from rtchat.common.stats import percentile
from rtchat.datasets.synthetic import BACKCHANNELS
from rtchat.evals import fdb, stereo
from rtchat.evals.analyze import MERGE_GAP_NS, AudioClock, Span, agent_chunks, analyze, merge, read_events
from rtchat.evals.export import recording_origin
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
# Users no one tuned for (--unseen): each line after the first starts 5 s after the one before ends.
UNSEEN_USERS = {
    "garden": [
        "[0.5] good morning did you sleep well",
        "[pause 5.0] i have been trying to grow [pause 0.8] um [pause 0.5] tomatoes on my balcony",
        "[pause 5.0] do you know how often they need water",
        "[pause 5.0] the leaves keep turning [pause 0.9] yellow at the edges",
        "[pause 5.0] my neighbour told me that coffee grounds help",
        "[pause 5.0] should i move the pots [pause 0.7] into the shade after lunch",
        "[pause 5.0] last summer the birds ate every single one",
        "[pause 5.0] what would you plant instead",
    ],
    "move": [
        "[0.5] hey can i ask you something",
        "[pause 5.0] we are moving to [pause 0.8] uh [pause 0.5] a smaller town next month",
        "[pause 5.0] how do people usually find a good doctor there",
        "[pause 5.0] my daughter starts school and she is [pause 0.9] a bit nervous about it",
        "[pause 5.0] is that normal for a seven year old",
        "[pause 5.0] we already packed most of the books",
        "[pause 5.0] the hardest part will be [pause 0.7] saying goodbye to our friends",
        "[pause 5.0] any advice for the first week",
    ],
}
POLICIES = {"lookahead": ["agent.lookahead=true"], "no_lookahead": ["agent.lookahead=false"]}
BACKCHANNEL_MAX_WORDS = 2
BACKCHANNEL_PHRASES = frozenset(BACKCHANNELS) | {"i see", "uh huh", "mm hmm", "mhm", "ok"}  # the corpus's, and spellings
KEYS = ("fto_p50_ms", "fto_p90_ms", "answered_rate", "overlap_start_rate", "cut_in_rate", "backchannel_rate",
        "gap_p50_ms", "gap_p90_ms")  # the policy keys repeated at the top level
AUDIO_KEYS = ("audio_gap_p50_ms", "audio_gap_p90_ms", "audio_cut_in_rate", "audio_answered_rate")  # at the top level too
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


def answered(lines: list[Line], starts_ns: list[int]) -> int:
    """Lines with agent speech starting after the line began and before the next one."""
    nexts = [ln.start_ns for ln in lines[1:]] + [None]
    return sum(any(ln.start_ns < t and (nxt is None or t < nxt) for t in starts_ns) for ln, nxt in zip(lines, nexts, strict=True))


def with_log_text(spans: list[Span], chunks: list[Span]) -> list[Span]:
    """Audio spans with the words of the log's agent chunks that overlap them ("" where none do)."""
    return [Span(s.start_ns, s.end_ns, " ".join(c.text.strip() for c in chunks
                                                if c.start_ns < s.end_ns and s.start_ns < c.end_ns).strip())
            for s in spans]


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


def measure(run_dir: Path, segments: list[list], per_turn: list[int], user: np.ndarray | None = None) -> dict:
    """Analysis of one session, the script's turns answered, and its turn-taking on the script's times;
    with the user's recording (int16) also from the session's recording (``measure_audio``)."""
    events, _ = read_events(run_dir)
    report = analyze(events)
    offset = AudioClock(events).offset_ns or 0
    chunks = [Span(c.start_ns - offset, c.end_ns - offset, c.text) for c, _ in agent_chunks(events)]
    lines = script_lines(segments, per_turn)
    ipus = merge(chunks, MERGE_GAP_NS)
    turns = agent_turns(ipus, [t for ln in lines for t in ln.onsets_ns])
    log_user_at_ns = offset - recording_origin(run_dir, events)[0]  # the log's word for where the user's sample 0 lies
    audio = measure_audio(run_dir, user, lines, chunks, log_user_at_ns) if user is not None else None
    return {"run": str(run_dir), "fto_ms": report["fto_ms"], "turns": report["turns"],
            "agent_started_in_overlap": report["agent_started_in_overlap"], "user_turns": len(lines),
            "answered": answered(lines, [c.start_ns for c in chunks]), **turn_taking(lines, turns), "audio": audio,
            "stage_latency_ms": report["stage_latency_ms"], "fdb_samples": report["fdb_samples"]}


def measure_audio(run_dir: Path, user: np.ndarray, lines: list[Line], chunks: list[Span], log_user_at_ns: int) -> dict | None:
    """The script's turns answered and the turn-taking with the agent's speech from the right channel
    of ``session.wav`` (module doc), or None without a recording that holds the user's sound;
    ``user_at_vs_log_ms`` checks the recording's alignment against the log's (0 when both agree)."""
    wav = run_dir / "session.wav"
    found = stereo.agent_spans(stereo.read_session(wav), user) if wav.is_file() else None
    if found is None:
        return None
    spans, offset = found
    turns = agent_turns(with_log_text(spans, chunks), [t for ln in lines for t in ln.onsets_ns])
    return {"user_turns": len(lines), "answered": answered(lines, [s.start_ns for s in spans]),
            **turn_taking(lines, turns), "onsets_s": [round(s.start_ns / 1e9, 3) for s in spans],
            "user_at_s": round(offset / SR_HZ, 4),  # where the user's sample 0 lies in session.wav
            "user_at_vs_log_ms": round((offset * 1e9 / SR_HZ - log_user_at_ns) / 1e6, 3)}


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
        **summarize_audio([s["audio"] for s in sessions if s.get("audio")]),
        "transfers": turns,
        "stage_latency_ms": stages,
        **fdb.summarize([fdb.Samples(**s["fdb_samples"]) for s in sessions]),
    }


def summarize_audio(measured: list[dict]) -> dict:
    """The ``audio_*`` keys over the sessions measured from their recordings (module doc)."""
    gaps = [g for a in measured for g in a["gaps_ms"]]
    user_turns = sum(a["user_turns"] for a in measured)
    return {
        "audio_gap_p50_ms": percentile(gaps, 0.5),
        "audio_gap_p90_ms": percentile(gaps, 0.9),
        "audio_cut_in_rate": round(sum(a["cut_ins"] for a in measured) / user_turns, 3) if user_turns else None,
        "audio_answered_rate": round(sum(a["answered"] for a in measured) / user_turns, 3) if user_turns else None,
        "audio_sessions": len(measured),
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
    parser.add_argument("--unseen", action="store_true", help="the users no one tuned for (UNSEEN_USERS) instead")
    parser.add_argument("--users", nargs="*", choices=sorted(USERS | UNSEEN_USERS),
                        help="which scripted users (default: all of the set; --unseen: of UNSEEN_USERS)")
    parser.add_argument("--voices", nargs="*", choices=ENGINES,
                        help=f"who voices them (default: {' and '.join(ENGINES)}; with --quick one per user, taking turns)")
    parser.add_argument("--tail", type=float, default=4.0, metavar="S", help="session time after the user's recording ends")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and run directories here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every session")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    users = UNSEEN_USERS if args.unseen else USERS
    if args.users and (wrong := sorted(set(args.users) - set(users))):
        print(f"rtchat bench session: --users {' '.join(wrong)}: not in this set; allowed: {', '.join(sorted(users))}"
              + ("" if args.unseen else " (or --unseen for its users)"), file=sys.stderr)
        return 2
    names = args.users or ([next(iter(users))] if args.quick else sorted(users))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rtchat-bench-session-"))
    work.mkdir(parents=True, exist_ok=True)
    voices = user_voices(names, args.voices or list(ENGINES), args.quick)
    synths = {v: engine_synth(v) for v in {v for vs in voices.values() for v in vs}}
    started = time.time()
    policies: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for name, voice in ((n, v) for n in names for v in voices[n]):
        lines = users[name]
        pcm, segments = render(parse("\n".join(lines)), synths[voice], tail_s=0.5)
        wav = work / f"{name}-{voice}.wav"
        write_wav(wav, pcm)
        for policy, extra in POLICIES.items():
            log.info("session %s (%s) / %s (%.0f s of user audio)…", name, voice, policy, len(pcm) / SR_HZ)
            run_dir = run_session(wav, work / "runs", [*extra, *args.overrides], args.tail)
            result = measure(run_dir, segments, script_turns(lines), pcm)
            log.info("  FTO %s, gaps %s, cut-ins %d, answered %d/%d", result["fto_ms"], result["gaps_ms"], result["cut_ins"],
                     result["answered"], result["user_turns"])
            if (audio := result["audio"]) is not None:
                log.info("  from the recording: gaps %s, cut-ins %d, answered %d/%d", audio["gaps_ms"], audio["cut_ins"],
                         audio["answered"], audio["user_turns"])
            policies[policy].append({"user": name, "voice": voice, **result})
    summary = {p: summarize(s) for p, s in policies.items()}
    tts = bench_tts(args.quick)
    engines = {k: v for k, v in tts.items() if isinstance(v, dict) and "tts_ttfa_ms" in v}
    main, base = summary["lookahead"], summary["no_lookahead"]
    report = {
        **{k: main[k] for k in (*KEYS, *AUDIO_KEYS, *FDB_KEYS)},
        "gap_p50_ratio_vs_no_lookahead": round(main["gap_p50_ms"] / base["gap_p50_ms"], 3)
        if main["gap_p50_ms"] and base["gap_p50_ms"] else None,
        "tts_ttfa_ms": {k: v["tts_ttfa_ms"] for k, v in engines.items()},
        "tts_rtf": {k: v["tts_rtf"] for k, v in engines.items()},
        "policies": summary,
        "sessions": policies,
        "users": {n: users[n] for n in names},
        "voices": voices,
        "config": {"overrides": args.overrides, "tail_s": args.tail, "quick": args.quick, "unseen": args.unseen},
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
        "definitions": __doc__.split("Keys", 1)[1].strip(),
    }
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    shown = (*KEYS, *AUDIO_KEYS, "gap_p50_ratio_vs_no_lookahead", *FDB_KEYS[:-1], "tts_ttfa_ms", "tts_rtf")
    print(json.dumps({k: report[k] for k in shown}))
    return 0
