"""``rtchat bench chaos --json OUT [--seed N] [--nodes audio,asr,…] [--quick]``: kill -9 each node
mid-session and measure how the conversation recovers.

One scripted user (``bench session``'s users one after another: all three, or two with
``--quick``; rendered once by ``simulate-user`` with the Piper voice) is played in real time
through whole sessions on the embedded CPU profile (``rtchat run --ui none --in USER.wav``): one
fault-free session, the baseline, then one session per node in which that node's process gets
SIGKILL twice, at seeded random moments: first **mid-reply** (inside a piece of agent audio that
is playing: the first one heard after a seeded point 1–6 s into the recording, at 20–80 % of
it), then, once the node is ready again, **mid-utterance** (at 20–80 % of a seeded one of the
script's utterances that start after the recovery and end in the recording's first 75 %, so the
user has turns left to answer). The bench watches the session's bus as one more subscriber:
agent audio as ``tts.audio`` reaches the audio node, the recording's position from ``audio.in``,
pids from ``node.ready``/``node.heartbeat``/``node.restarted`` (the proxy's from the launcher's
children). All figures come from the run's event log afterwards. Every session runs with
``agent.max_history_words=400`` so that the agent's final transcript holds the whole script.

Keys per node (under ``nodes``; each fault's own figures and what the log showed are in ``faults``):
- ``restart_s``: the slowest of its faults, SIGKILL → the node's ``node.ready`` again (the proxy
  sends none: → the bench's subscriber receives the first event sent after the kill);
- ``resumed``: after every fault, agent audio (``audio.played`` with words) started after the recovery;
- ``lost_user_words``: the most any one fault cost: words of the script's utterances said from the
  kill until 3 s after the node was back that the baseline recognised (``asr.final`` words timed
  inside them) and this session did not (multiset); each fault's own figure is in ``faults``.
  Whole-session comparisons, divided by the faults, are kept for reference: ``…_session_asr``
  (all ``asr.final`` words) and ``…_session_agent`` (the user's (S1) words in the last
  ``agent.state``). They also count what differs between any two runs — the recogniser's
  choices, the agent's turn-taking keeping or dropping user words — so kills of the tts or the
  logger, which hear nothing, "lose" words by them;
- ``duplicate_audio_ms``: agent audio reported twice by ``audio.played``: a (turn, gen, chunk)
  played again with the same words, or — starting from a kill until 3 s after the node was back —
  the same words (3 or more) as a chunk played earlier (elsewhere, a reply said again is the
  model's own doing: its lookahead can predict the same words after a backchannel);
- ``log_gap``: for every fault the log holds a ``node.restarted`` for the node after the kill and
  the node's heartbeats after it (the proxy: any node's) — the fault and its end are marked;
- ``faults_injected``: kills sent (2 expected; a moment that never came is said in ``notes``);
  ``log_lost_events``: events the log misses by sequence numbers (a proxy restart drops some).
Top level: ``targets``, ``ok`` per node, ``all_ok`` (every node meets every target with both
faults injected), the ``baseline``'s own figures, ``machine``, ``commit`` (from the runs' header).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path

from rtchat.bus.clock import Clock
from rtchat.bus.events import (
    AgentCancel,
    AgentState,
    AsrFinal,
    AudioPlayed,
    Event,
    NodeHeartbeat,
    NodeReady,
    NodeRestarted,
    TtsAudio,
)
from rtchat.evals.analyze import Timed
from rtchat.evals.faults import PROXY

log = logging.getLogger(__name__)

NODES = ("audio", "asr", "agent", "tts", "logger", PROXY)
USERS_FULL = ("trip", "food", "work")
USERS_QUICK = ("trip", "work")
USER_SPACING_S = 33.0  # each bench-session user is about 29 s long; the next one starts this much later
REPLY_ARM_S = (1.0, 6.0)  # the mid-reply kill takes the first agent audio after this point of the recording
CUT_FRACTION = (0.2, 0.8)  # where inside the agent's piece / the user's utterance the kill falls
SETTLE_S = 1.0  # recording time after a recovery before the next fault's utterance may start
LAST_FAULT_FRACTION = 0.75  # faults only in this first share of the recording
RECOVER_S = 3.0  # a fault can cost the words said until this long after the node is back
WINDOW_SLACK_S = 1.0  # recognised words are matched to utterances this loosely (word times stray)
MIN_DUP_WORDS = 3  # the same words played again count as a duplicate from this length on
HISTORY = "agent.max_history_words=400"  # the final transcript holds the whole script
TARGETS = {"restart_s": 5.0, "resumed": True, "lost_user_words": 2.0, "duplicate_audio_ms": 0.0, "log_gap": True}
NS = 1_000_000_000
POLL_MS = 20  # the bench reads the bus this often while it waits for a moment
AFTER_KILL_NS = 50_000_000  # what was sent sooner after a kill may have left through the dying proxy


@dataclasses.dataclass(frozen=True)
class Kill:
    node: str
    moment: str  # "mid_reply" | "mid_utterance"
    t_ns: int  # when SIGKILL was sent (the bus clock)
    pid: int
    wav_s: float  # how far the user's recording had played
    words: str  # the agent's piece playing, or the user's utterance being said
    inside: bool  # the moment fell inside that piece / utterance
    heard_ns: int | None = None  # when the bench first heard the node back (the proxy: anything sent after the kill)


# ---------------------------------------------------------------- the script


def chaos_script(names: tuple[str, ...]) -> list[str]:
    """The users' lines one after another, each user's times moved USER_SPACING_S later."""
    from rtchat.evals.bench_session import USERS

    def shift(line: str, by: float) -> str:
        return re.sub(r"^\[([\d.]+)\]", lambda m: f"[{float(m.group(1)) + by:g}]", line)

    return [shift(line, k * USER_SPACING_S) for k, name in enumerate(names) for line in USERS[name]]


def words_of(text: str) -> list[str]:
    """Normalised words (the recogniser's normalisation), pause tokens left out."""
    from rtchat.nodes.agent.transcript import PAUSE_RE
    from rtchat.nodes.asr.policy import normalise

    return [w for w in map(normalise, PAUSE_RE.sub(" ", text).replace("<p>", " ").split()) if w]


# ---------------------------------------------------------------- the live part


class ReplyMoment:
    """The kill moment inside the first piece of agent audio heard after arm_s of the recording:
    pieces play back to back from when they reach the audio node (as the audio node schedules
    them); a cancel ends what was playing."""

    def __init__(self, arm_s: float, fraction: float):
        self.arm_s, self.fraction = arm_s, fraction
        self.play_end_ns = 0  # when the agent audio scheduled so far ends
        self.at_ns: int | None = None
        self.piece_end_ns = 0  # when the chosen piece ends
        self.words = ""

    def see(self, ev: Event, now_ns: int, wav_s: float) -> None:
        if isinstance(ev, AgentCancel):
            self.play_end_ns = now_ns
            if self.at_ns is not None and self.at_ns > now_ns:
                self.at_ns = None  # cut before the moment: wait for the next reply
        elif isinstance(ev, TtsAudio) and ev.n_samples > 0:
            start = max(now_ns, self.play_end_ns)
            length = ev.n_samples * NS // ev.sr_hz
            self.play_end_ns = start + length
            if self.at_ns is None and wav_s >= self.arm_s and ev.text.strip():
                self.at_ns = start + int(self.fraction * length)
                self.piece_end_ns, self.words = start + length, ev.text.strip()

    def due(self, now_ns: int) -> bool:
        return self.at_ns is not None and now_ns >= self.at_ns


def utterance_moment(segments: list[list], from_s: float, until_s: float, choice: float,
                     fraction: float) -> tuple[list, float] | None:
    """A script utterance starting at from_s or later and ending by until_s (picked by choice in
    [0, 1)), and the recording time at `fraction` of it."""
    candidates = [s for s in segments if s[0] >= from_s and s[1] <= until_s]
    if not candidates:
        return None
    seg = candidates[int(choice * len(candidates))]
    return seg, seg[0] + fraction * (seg[1] - seg[0])


def recovered(ev: Event, t_ns: int, kill: Kill) -> bool:
    """Whether an event (published at t_ns) ends the fault `kill`: the node.ready of another
    process of the node (a hot spare can be ready within milliseconds of the kill); for the
    proxy, which sends none, any event the bench's own subscriber receives that was sent
    AFTER_KILL_NS after the kill (only a new proxy can carry it there; what was sent sooner may
    have left through the dying one, and the launcher's node.restarted can be lost the same way)."""
    if kill.node == PROXY:
        return t_ns > kill.t_ns + AFTER_KILL_NS
    return isinstance(ev, NodeReady) and ev.node == kill.node and ev.pid != kill.pid and t_ns > kill.t_ns


def inject(session, node: str, segments: list[list], rng: random.Random, deadline_ns: int,
           clock: Clock) -> tuple[list[Kill], list[str]]:
    """Kill `node` mid-reply, wait for its recovery, kill it mid-utterance, wait for its recovery,
    all before deadline_ns; (kills, notes)."""
    until_s = LAST_FAULT_FRACTION * segments[-1][1]
    reply = ReplyMoment(rng.uniform(*REPLY_ARM_S), rng.uniform(*CUT_FRACTION))
    choice, fraction = rng.random(), rng.uniform(*CUT_FRACTION)
    kills: list[Kill] = []
    notes: list[str] = []
    phase, target = "reply", None

    def kill(moment: str, words: str, inside: bool) -> bool:
        now, pid = clock.now_ns(), session.kill(node)
        if pid is not None:
            kills.append(Kill(node, moment, now, pid, round(session.wav_s, 3), words, inside))
        return pid is not None

    def aim(from_s: float) -> str:
        nonlocal target
        target = utterance_moment(segments, from_s, until_s, choice, fraction)
        if target is None:
            notes.append(f"mid_utterance: no utterance starts after {from_s:.1f} s and ends by {until_s:.1f} s")
            return "done"
        return "utterance"

    while session.running() and phase != "done" and clock.now_ns() < deadline_ns:
        for t_ns, ev in session.poll(POLL_MS):
            if phase == "reply":
                reply.see(ev, clock.now_ns(), session.wav_s)
            elif phase == "recover" and recovered(ev, t_ns, kills[-1]):
                kills[-1] = dataclasses.replace(kills[-1], heard_ns=clock.now_ns())
                phase = "done" if kills[-1].moment == "mid_utterance" else aim(session.wav_s + SETTLE_S)
        now = clock.now_ns()
        if phase == "reply" and reply.due(now):
            phase = "recover" if kill("mid_reply", reply.words, now < reply.piece_end_ns) else phase
        elif phase == "reply" and session.wav_s > until_s:
            notes.append(f"mid_reply: no agent audio played between {reply.arm_s:.1f} s and {until_s:.1f} s")
            phase = aim(session.wav_s)
        elif phase == "utterance" and session.wav_s >= target[1]:
            seg = target[0]
            phase = "recover" if kill("mid_utterance", seg[2], seg[0] <= session.wav_s <= seg[1]) else phase
    if phase == "recover":
        notes.append(f"{node} was not ready again before the session ended")
    elif phase != "done":
        notes.append(f"the session ended before the {'mid_reply' if phase == 'reply' else 'mid_utterance'} moment")
    return kills, notes


def run_one(wav: Path, runs_dir: Path, run_id: str, overrides: list[str], node: str | None, segments: list[list],
            rng: random.Random, timeout_s: float) -> tuple[Path, list[Kill], list[str], int]:
    """One session; with `node`, its two faults. (run dir, kills, notes, launcher exit code)."""
    from rtchat.evals.faults import LiveSession

    clock = Clock()
    deadline_ns = clock.now_ns() + int(timeout_s * NS)
    session = LiveSession(wav, runs_dir, run_id, overrides)
    kills, notes = [], []
    try:
        session.connect()
        if node is not None:
            kills, notes = inject(session, node, segments, rng, deadline_ns, clock)
    finally:
        rc = session.finish((deadline_ns - clock.now_ns()) / NS)
    return session.run_dir, kills, notes, rc


# ---------------------------------------------------------------- figures from the log


def recovery_ns(events: list[Timed], kill: Kill, until_ns: int) -> int | None:
    """The node's node.ready after the kill (publish time); the proxy's: when the bench heard it back."""
    if kill.node == PROXY:
        return kill.heard_ns
    return next((e.t_ns for e in events if e.t_ns < until_ns and recovered(e.event, e.t_ns, kill)), None)


def first_agent_audio_ns(events: list[Timed], after_ns: int) -> int | None:
    """Start of the first agent audio with words that started playing at or after after_ns."""
    starts = [e.event.start_ns for e in events if isinstance(e.event, AudioPlayed) and e.event.text.strip()
              and e.event.end_ns > e.event.start_ns and e.event.start_ns >= after_ns]
    return min(starts, default=None)


def log_marks(events: list[Timed], kill: Kill, until_ns: int) -> dict:
    """What the log shows of one fault (before until_ns, the next one): the node.restarted after
    it, and when the node's heartbeats (for the proxy: anyone's) stopped and came back."""
    def beats(ev: Event) -> bool:
        return isinstance(ev, NodeHeartbeat) and (kill.node == PROXY or ev.node == kill.node)

    restarted = next((e for e in events if kill.t_ns < e.t_ns < until_ns and isinstance(e.event, NodeRestarted)
                      and e.event.node == kill.node), None)
    before = max((e.t_ns for e in events if e.t_ns <= kill.t_ns and beats(e.event)), default=None)
    after = next((e.t_ns for e in events if kill.t_ns < e.t_ns < until_ns and beats(e.event)), None)
    return {
        "node_restarted": None if restarted is None else {
            "after_kill_s": round((restarted.t_ns - kill.t_ns) / NS, 3), "reason": restarted.event.reason,
            "attempt": restarted.event.attempt, "pid": restarted.event.pid},
        "heartbeat_back_after_kill_s": None if after is None else round((after - kill.t_ns) / NS, 3),
        "heartbeat_gap_s": None if after is None or before is None else round((after - before) / NS, 3),
    }


def fault_report(events: list[Timed], kill: Kill, until_ns: int) -> dict:
    """One fault: its recovery and log marks before until_ns (the next fault), and the agent's
    first words after the recovery."""
    rec = recovery_ns(events, kill, until_ns)
    spoke = None if rec is None else first_agent_audio_ns(events, rec)
    playing = [e.event.text.strip() for e in events if isinstance(e.event, AudioPlayed)
               and e.event.start_ns <= kill.t_ns <= e.event.end_ns and e.event.text.strip()]
    marks = log_marks(events, kill, until_ns)
    return {
        "moment": kill.moment, "at_s": kill.wav_s, "words": kill.words, "inside": kill.inside, "pid": kill.pid,
        "agent_audio_reported_at_kill": playing[0] if playing else None,
        "restart_s": None if rec is None else round((rec - kill.t_ns) / NS, 3),
        "resumed": spoke is not None,
        "resumed_after_s": None if spoke is None else round((spoke - rec) / NS, 3),
        "log": marks,
        "log_gap": marks["node_restarted"] is not None and marks["heartbeat_back_after_kill_s"] is not None,
    }


def user_words(events: list[Timed]) -> list[str]:
    """The user's (S1) words in the agent's last transcript."""
    from rtchat.nodes.agent.transcript import TAG_RE, USER

    last = next((e.event for e in reversed(events) if isinstance(e.event, AgentState)), None)
    if last is None:
        return []
    body = last.sequence.split("Transcript:", 1)[-1]
    parts = TAG_RE.split(" " + body.lstrip())  # ["", "S1", " words…", "S2", " words…", …]
    return [w for tag, text in zip(parts[1::2], parts[2::2], strict=True) if tag == USER for w in words_of(text)]


def asr_words(events: list[Timed]) -> list[str]:
    return [w for e in events if isinstance(e.event, AsrFinal) for w in words_of(e.event.text)]


def lost_words(script: list[str], baseline: list[str], run: list[str]) -> int:
    """Script words (with repeats) the baseline holds and the run does not."""
    said = Counter(script)
    return sum(((said & Counter(baseline)) - (said & Counter(run))).values())


def duplicate_audio(events: list[Timed], windows: list[tuple[int, int]] | None = None) -> tuple[float, list[dict]]:
    """Agent audio reported twice by audio.played: (ms in all, the repeats). A chunk (turn, gen,
    chunk) played again counts wherever it happens; the same words played again as another chunk
    count only when that play starts inside one of ``windows`` (ns; None: anywhere) — outside a
    fault, the model saying a reply again (its lookahead predicting the same words after a
    backchannel) is its own doing, not a replay."""
    by_key: dict[tuple[int, int, int], str] = {}
    heard: set[str] = set()
    total_ns, repeats = 0, []
    for e in events:
        ev = e.event
        if not isinstance(ev, AudioPlayed) or ev.end_ns <= ev.start_ns or not words_of(ev.text):
            continue
        key, text = (ev.turn, ev.gen, ev.chunk), " ".join(words_of(ev.text))
        in_window = windows is None or any(lo <= ev.start_ns <= hi for lo, hi in windows)
        if by_key.get(key) == text or (in_window and len(text.split()) >= MIN_DUP_WORDS and text in heard):
            total_ns += ev.end_ns - ev.start_ns
            repeats.append({"turn": ev.turn, "gen": ev.gen, "chunk": ev.chunk, "text": ev.text.strip(),
                            "ms": round((ev.end_ns - ev.start_ns) / 1e6, 1)})
        by_key[key] = text
        heard.add(text)
    return round(total_ns / 1e6, 1), repeats


def fault_spans(segments: list[list], kill: Kill, restart_s: float | None) -> list[list]:
    """The script's utterances a fault can cost: those being said from the kill until
    RECOVER_S after the node was back."""
    lo, hi = kill.wav_s, kill.wav_s + (restart_s or 0.0) + RECOVER_S
    return [seg for seg in segments if seg[0] < hi and seg[1] > lo]


def words_in_spans(events: list[Timed], spans: list[list], shifts: list[tuple[float, float]] = ()) -> list[str]:
    """The recognised words (asr.final) whose times fall in one of the spans (recording seconds,
    WINDOW_SLACK_S wider on each side). ``shifts``: (stream time, seconds) of silence an audio
    restart put into the stream there; later words are moved back by it."""
    out = []
    for e in events:
        if not isinstance(e.event, AsrFinal):
            continue
        for w in e.event.words:
            t = w.start_ns / NS
            t -= sum(by for at, by in shifts if t > at)
            if any(s0 - WINDOW_SLACK_S <= t <= s1 + WINDOW_SLACK_S for s0, s1, *_ in spans):
                out += words_of(w.text)
    return out


def fault_lost_words(events: list[Timed], baseline: list[Timed], segments: list[list], kills: list[Kill],
                     faults: list[dict]) -> list[int]:
    """Per fault: the script words of the utterances it could cost (``fault_spans``) that the
    baseline recognised and this session did not. A whole-session comparison would count every
    word the recogniser or the agent's turn-taking handles differently from one run to the next
    (kills of the tts or the logger, which hear nothing, "lost" 1-11 words that way)."""
    shifts = [(k.wav_s, f["restart_s"] or 0.0) for k, f in zip(kills, faults, strict=True) if k.node == "audio"]
    out = []
    for kill, fault in zip(kills, faults, strict=True):
        spans = fault_spans(segments, kill, fault["restart_s"])
        said = [w for seg in spans for w in words_of(seg[2])]
        out.append(lost_words(said, words_in_spans(baseline, spans), words_in_spans(events, spans, shifts)))
    return out


def node_summary(events: list[Timed], kills: list[Kill], script: list[str], baseline: list[Timed],
                 segments: list[list]) -> dict:
    ends = [k.t_ns for k in kills[1:]] + [events[-1].t_ns + 1 if events else 0]
    faults = [fault_report(events, k, end) for k, end in zip(kills, ends, strict=True)]
    for fault, lost in zip(faults, fault_lost_words(events, baseline, segments, kills, faults), strict=True):
        fault["lost_user_words"] = lost
    n = max(1, len(kills))
    restarts = [f["restart_s"] for f in faults]
    windows = [(k.t_ns, k.t_ns + int(((f["restart_s"] or 0.0) + RECOVER_S) * NS)) for k, f in zip(kills, faults, strict=True)]
    dup_ms, repeats = duplicate_audio(events, windows)
    out = {
        "restart_s": max(restarts) if restarts and None not in restarts else None,
        "resumed": bool(faults) and all(f["resumed"] for f in faults),
        "lost_user_words": max((f["lost_user_words"] for f in faults), default=0),
        "lost_user_words_session_asr": round(lost_words(script, asr_words(baseline), asr_words(events)) / n, 2),
        "lost_user_words_session_agent": round(lost_words(script, user_words(baseline), user_words(events)) / n, 2),
        "duplicate_audio_ms": dup_ms,
        "log_gap": bool(faults) and all(f["log_gap"] for f in faults),
        "faults_injected": len(kills),
        "faults": faults,
        "duplicates": repeats,
    }
    out["ok"] = judge(out)
    return out


def judge(node: dict) -> dict[str, bool]:
    return {
        "restart_s": node["restart_s"] is not None and node["restart_s"] <= TARGETS["restart_s"],
        "resumed": node["resumed"],
        "lost_user_words": node["lost_user_words"] <= TARGETS["lost_user_words"],
        "duplicate_audio_ms": node["duplicate_audio_ms"] <= TARGETS["duplicate_audio_ms"],
        "log_gap": node["log_gap"],
        "faults_injected": node["faults_injected"] == 2,
    }


def lost_events(run_dir: Path) -> int:
    """Events missing from the run's log by their publishers' sequence numbers (rtchat log info)."""
    from rtchat.bus.eventlog import LogReader
    from rtchat.bus.logcli import summarize

    return summarize(LogReader(run_dir))["lost"]


def baseline_summary(events: list[Timed], script: list[str], run_dir: Path) -> dict:
    dup_ms, repeats = duplicate_audio(events)
    return {
        "script_words": len(script),
        "user_words_in_transcript": len(user_words(events)),
        "script_words_missing": lost_words(script, script, user_words(events)),
        "script_words_missing_asr": lost_words(script, script, asr_words(events)),
        "duplicate_audio_ms": dup_ms,
        "duplicates": repeats,
        "restarts": sum(isinstance(e.event, NodeRestarted) for e in events),
        "log_lost_events": lost_events(run_dir),
    }


# ---------------------------------------------------------------- command


def node_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in NODES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(bad) or text!r}: allowed: a comma-separated list of {', '.join(NODES)}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments (default 0)")
    parser.add_argument("--nodes", type=node_list, default=NODES, metavar="A,B",
                        help=f"the nodes to kill, in turn (default: {','.join(NODES)})")
    parser.add_argument("--quick", action="store_true", help=f"a user of {len(USERS_QUICK)} scripts instead of {len(USERS_FULL)}")
    parser.add_argument("--tail", type=float, default=10.0, metavar="S",
                        help="session time after the user's recording ends (default 10: a recogniser that fell "
                        "behind or restarted catches up before the final transcript is read)")
    parser.add_argument("--keep", metavar="DIR", help="keep the recording and the run directories here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every session")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.audio import SR_HZ
    from rtchat.common.files import write_atomic
    from rtchat.evals.analyze import read_events
    from rtchat.evals.faults import provenance, work_dir
    from rtchat.evals.simulate_user import engine_synth, parse, render, write_wav

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    work = work_dir(args.keep, "chaos")
    lines = chaos_script(USERS_QUICK if args.quick else USERS_FULL)
    pcm, segments = render(parse("\n".join(lines)), engine_synth("piper"), tail_s=0.5)
    wav = work / "user.wav"
    write_wav(wav, pcm)
    script = [w for s in segments for w in words_of(s[2])]
    overrides = [HISTORY, f"audio.tail_s={args.tail}", *args.overrides]
    timeout_s = 600 + 3 * len(pcm) / SR_HZ  # loading, the recording, restarts
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log.info("baseline session (%.0f s of user audio)…", len(pcm) / SR_HZ)
    base_dir, _, _, base_rc = run_one(wav, work / "runs", f"chaos-{stamp}-baseline", overrides, None, segments,
                                      random.Random(args.seed), timeout_s)
    baseline, _ = read_events(base_dir)
    report_nodes = {}
    for node in args.nodes:
        log.info("session with %s killed twice…", node)
        rng = random.Random(f"{args.seed}:{node}")
        run_dir, kills, notes, rc = run_one(wav, work / "runs", f"chaos-{stamp}-{node}", overrides, node, segments,
                                            rng, timeout_s)
        events, damage = read_events(run_dir)
        report_nodes[node] = {**node_summary(events, kills, script, baseline, segments), "notes": notes, "run": str(run_dir),
                              "launcher_exit": rc, "log_read": damage, "log_lost_events": lost_events(run_dir)}
        log.info("  %s: %s", node, {k: report_nodes[node][k] for k in TARGETS})
    report = {
        "all_ok": all(all(n["ok"].values()) for n in report_nodes.values()),
        "targets": {**TARGETS, "faults_injected": 2},
        "nodes": report_nodes,
        "baseline": {**baseline_summary(baseline, script, base_dir), "run": str(base_dir), "launcher_exit": base_rc},
        "script": lines,
        "seed": args.seed,
        "config": {"quick": args.quick, "nodes": list(args.nodes), "overrides": overrides, "profile": "cpu"},
        **provenance(base_dir),
        "wall_s": round(time.time() - started, 1),
        "definitions": __doc__.split("Keys", 1)[1].strip(),
    }
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({"all_ok": report["all_ok"], **{n: {k: v[k] for k in TARGETS} for n, v in report_nodes.items()}}))
    return 0
