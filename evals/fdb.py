"""Full-Duplex-Bench v1.0 metrics from a session's speech, for ``rtchat analyze`` and ``rtchat bench session``.

Definitions: Full-Duplex-Bench v1.0 — Lin, Lian, Li, Wang, Anumanchipalli, Liu, Lee, "Full-Duplex-
Bench: A Benchmark to Evaluate Full-Duplex Spoken Dialogue Models on Turn-Taking Capabilities",
arXiv:2503.04721 (2025) — as its authors' evaluation scripts compute them
(``evaluation/eval_{pause_handling,smooth_turn_taking,user_interruption,backchannel}.py`` of
DanielLin94144/Full-Duplex-Bench v1.0, read in the fork abePclWaseda/Full-Duplex-Bench at d951c42;
docs/full-duplex-bench.md). The benchmark scores one
agent reply per prepared user recording; here the same rules are applied to every place in a
session where the situation arises.

The rule every TOR (take-over rate) uses: the agent's speech in a window **takes the turn** when its
words span at least ``TAKE_TURN_MIN_S`` (1 s) from the first word's start to the last word's end,
or when it has more than ``TAKE_TURN_MAX_WORDS`` (3) words; no speech, or a short one of at most
3 words, does not. A **backchannel** is an agent IPU of under ``BACKCHANNEL_MAX_S`` (1 s) with at
most ``BACKCHANNEL_MAX_WORDS`` (2) words.

Where a session differs from the benchmark's prepared samples, and what is used instead:
- Agent words: FDB transcribes the agent's audio with a word-timed ASR; here they are the words of
  the ``audio.played`` chunks (what really played), spread evenly over each chunk's audible span
  (``analyze.spread_words``).
- User turns: FDB's recordings say where the user pauses and where the turn ends. Here user IPUs
  closer than ``turn_gap`` (``rtchat analyze --turn-gap``, 1.0 s) are one user turn, whatever
  the agent did between them; the silences inside a turn are its **pauses**, and its end is a
  **turn end**. An agent that answers a finished turn at once and is then talked over within
  ``turn_gap`` is thereby scored as taking over a pause.
- A user turn whose first IPU starts while the agent is sounding is an **interruption**; the others
  are smooth-turn-taking samples.

Metrics (None where the session has no such sample):
- ``fdb_pause_tor``: share of pauses in which an agent IPU starts and takes the turn (↓ better);
- ``fdb_smooth_tor``: share of turn ends (not interruptions) after which the agent takes the turn:
  agent IPUs starting from the start of the turn's last IPU until the user's next turn (↑);
- ``fdb_smooth_latency_ms``: mean over those taken of (first word's start − turn end), a start
  before the end counting 0, as FDB clips it (↓);
- ``fdb_interruption_tor``: share of interruptions after whose end the agent's speech (clipped to
  start there, as FDB cuts the agent's audio at the interruption's end) takes the turn before the
  user's next turn (↑); an agent that talks on through the interruption takes the turn, as in FDB;
- ``fdb_interruption_latency_ms``: mean over those taken of (first word's start, clipped, −
  interruption end) (↓);
- ``fdb_backchannel_rate``: backchannels per second of user turn (first IPU's start to turn end);
  a turn in which the agent also starts an IPU that is not a backchannel counts no backchannels,
  as FDB counts none in a sample where the model takes the turn (↑).
FDB also scores backchannel timing by JSD against human backchannel timing in its ICC recordings
and interruption replies with GPT-4o; neither has an equivalent in a session log.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # analyze imports this module
    from rtchat.evals.analyze import Span

VERSION = "Full-Duplex-Bench v1.0 (Lin et al. 2025, arXiv:2503.04721)"
TAKE_TURN_MIN_S = 1.0  # FDB turn_duration_threshold
TAKE_TURN_MAX_WORDS = 3  # FDB turn_num_words_threshold: more words than this take the turn
BACKCHANNEL_MAX_S = 1.0  # FDB backchannel: an output segment shorter than this …
BACKCHANNEL_MAX_WORDS = 2  # … with at most this many words
NS = 1_000_000_000


@dataclasses.dataclass
class Samples:
    """Per-sample outcomes, so that several sessions pool into one figure (``summarize``)."""

    pause: list[int] = dataclasses.field(default_factory=list)  # 1 = the agent took the turn in this pause
    smooth: list[int] = dataclasses.field(default_factory=list)
    smooth_latency_ms: list[float] = dataclasses.field(default_factory=list)  # one per smooth sample taken
    interruption: list[int] = dataclasses.field(default_factory=list)
    interruption_latency_ms: list[float] = dataclasses.field(default_factory=list)
    backchannels: int = 0
    user_turn_s: float = 0.0
    backchannel_at: list[dict] = dataclasses.field(default_factory=list)  # each counted one: when, how far into the turn


def takes_turn(words: list[Span]) -> bool:
    """FDB's rule: ≥ 1 s from the first word's start to the last word's end, or more than 3 words."""
    if not words:
        return False
    return (words[-1].end_ns - words[0].start_ns) / NS >= TAKE_TURN_MIN_S or len(words) > TAKE_TURN_MAX_WORDS


def is_backchannel(ipu: Span, words: list[Span]) -> bool:
    return (ipu.end_ns - ipu.start_ns) / NS < BACKCHANNEL_MAX_S and len(words) <= BACKCHANNEL_MAX_WORDS


def user_turns(user: list[Span], turn_gap_ns: int) -> list[list[Span]]:
    """User IPUs (in time order) grouped into turns: closer than ``turn_gap_ns`` = the same turn."""
    turns: list[list[Span]] = []
    for u in user:
        if turns and u.start_ns - turns[-1][-1].end_ns <= turn_gap_ns:
            turns[-1].append(u)
        else:
            turns.append([u])
    return turns


def _words_of(ipus: list[Span], words: list[Span]) -> list[Span]:
    return [w for w in words if any(i.start_ns <= w.start_ns < i.end_ns for i in ipus)]


def _starting_in(agent: list[Span], lo: int, hi: int | None) -> list[Span]:
    return [a for a in agent if lo <= a.start_ns and (hi is None or a.start_ns < hi)]


def _clipped(words: list[Span], lo: int, hi: int | None) -> list[Span]:
    """The words sounding in [lo, hi), each starting no earlier than lo (FDB cuts the audio at lo)."""
    return [dataclasses.replace(w, start_ns=max(w.start_ns, lo)) for w in words
            if w.end_ns > lo and (hi is None or w.start_ns < hi)]


def samples(user: list[Span], agent: list[Span], words: list[Span], turn_gap_ns: int) -> Samples:
    """The FDB samples of one session: user IPUs, agent IPUs and agent words, all in time order."""
    out = Samples()
    turns = user_turns(user, turn_gap_ns)
    for k, turn in enumerate(turns):
        nxt = turns[k + 1][0].start_ns if k + 1 < len(turns) else None
        start, end = turn[0].start_ns, turn[-1].end_ns
        for a, b in zip(turn, turn[1:], strict=False):  # pause handling
            out.pause.append(int(takes_turn(_words_of(_starting_in(agent, a.end_ns, b.start_ns), words))))
        if any(a.start_ns < start < a.end_ns for a in agent):  # user interruption
            said = _clipped(words, end, nxt)
            out.interruption.append(int(takes_turn(said)))
            if takes_turn(said):
                out.interruption_latency_ms.append((said[0].start_ns - end) / 1e6)
        else:  # smooth turn-taking
            said = _words_of(_starting_in(agent, turn[-1].start_ns, nxt), words)
            out.smooth.append(int(takes_turn(said)))
            if takes_turn(said):
                out.smooth_latency_ms.append(max(0, said[0].start_ns - end) / 1e6)
        inside = [(a, _words_of([a], words)) for a in _starting_in(agent, start, end)]  # backchannels
        out.user_turn_s += (end - start) / NS
        if all(is_backchannel(a, w) for a, w in inside):
            out.backchannels += len(inside)
            out.backchannel_at += [{"at_ns": a.start_ns, "into_turn_s": round((a.start_ns - start) / NS, 3), "text": a.text}
                                   for a, _ in inside]
    return out


def _mean(values: list[float], ndigits: int) -> float | None:
    return round(sum(values) / len(values), ndigits) if values else None


def summarize(parts: list[Samples]) -> dict:
    """The six FDB figures over one or more sessions' samples (pooled, as FDB averages over samples)."""
    pool = Samples()
    for p in parts:
        for f in ("pause", "smooth", "smooth_latency_ms", "interruption", "interruption_latency_ms"):
            getattr(pool, f).extend(getattr(p, f))
        pool.backchannels += p.backchannels
        pool.user_turn_s += p.user_turn_s
    return {
        "fdb_pause_tor": _mean(pool.pause, 3),
        "fdb_smooth_tor": _mean(pool.smooth, 3),
        "fdb_smooth_latency_ms": _mean(pool.smooth_latency_ms, 1),
        "fdb_interruption_tor": _mean(pool.interruption, 3),
        "fdb_interruption_latency_ms": _mean(pool.interruption_latency_ms, 1),
        "fdb_backchannel_rate": round(pool.backchannels / pool.user_turn_s, 3) if pool.user_turn_s > 0 else None,
        "fdb_n": {"pauses": len(pool.pause), "turn_ends": len(pool.smooth), "interruptions": len(pool.interruption),
                  "backchannels": pool.backchannels, "user_turn_s": round(pool.user_turn_s, 3)},
    }


def legend(report: dict) -> str:
    """The figures as the timeline picture's text box."""
    def f(key: str, unit: str = "") -> str:
        return "n/a" if report[key] is None else f"{report[key]:g}{unit}"

    n = report["fdb_n"]
    return "\n".join([
        "Full-Duplex-Bench v1.0",
        f"pause TOR {f('fdb_pause_tor')} (n {n['pauses']})",
        f"smooth TOR {f('fdb_smooth_tor')}, latency {f('fdb_smooth_latency_ms', ' ms')} (n {n['turn_ends']})",
        f"interruption TOR {f('fdb_interruption_tor')}, latency {f('fdb_interruption_latency_ms', ' ms')} "
        f"(n {n['interruptions']})",
        f"backchannels {f('fdb_backchannel_rate', '/s')} (n {n['backchannels']})",
    ])
