"""A spoken-dialogue corpus from chitchat-dataset: typed chats written as timed transcript lines.

``rtchat data synthetic --out DIR [--seed N] [--max-dialogues N] [--summaries off]`` writes
``DIR/dataset_{train,dev,test}.txt`` in the line format of ``datasets.lines``, the way the agent
sees a live conversation: ``S1: so I went (0.6) S2: mm-hmm S1: to the store (0.3) S2: nice``.

Source. chitchat-dataset (``dataset.json``: 7,168 two-party typed conversations, each a list of
turns, each turn a list of messages with a sender id). About 3,150 conversations carry one sender
id. Those are **repaired by turn parity** (even turns S1, odd turns S2) and counted as
``repaired``; in the released file every one of them holds a single turn (one speaker's messages,
no reply), so after repair they still have fewer than ``MIN_TURNS`` turns and are skipped (counted
as ``skipped_single_sender``). Alternating single messages instead would invent speaker switches
inside one writer's train of thought. In the others, consecutive turns from the same
sender are merged; S1 is the first sender. Conversations with fewer than ``MIN_TURNS`` non-empty
turns are skipped.

Text. Lower-cased; characters other than letters, digits, apostrophes and hyphens become spaces
(so no ``(``, ``)``, ``:`` or ``;`` can be mistaken for a pause, a tag or the header); one line.
Clauses end at , ; . ! ? … and at chat-message boundaries.

Timing (all durations in seconds, written one decimal as `` (x.y)``; every draw from one
``random.Random(seed)``, never the global RNG):

- **Turn-final silence** (floor transfer offset, FTO) is written at the end of the finishing
  speaker's turn, before the next tag. Published FTO distributions are unimodal with the mode
  near +200 ms, a large minority of overlaps and a long right tail: Stivers et al. 2009 (PNAS
  106:10587, ten languages, modes 0–200 ms, English mean ≈ 236 ms); Heldner & Edlund 2010
  (J. Phonetics 38:555, Dutch/Swedish/Scottish English: roughly 40 % of speaker changes are
  overlaps, gaps mostly under 1 s); Levinson & Torreira 2015 (Front. Psychol. 6:731, mode
  ≈ 200 ms). Fitted here as a mixture:
    * ``P_NO_GAP`` = 0.25 — overlap or latched switch, written as a switch with no pause (lower
      than the ~40 % overlaps reported because short overlaps in live ASR transcripts surface as
      tiny gaps, which the next component covers);
    * ``P_LONG_GAP`` = 0.08 — long gap, lognormal median 1.3 s, σ 0.35, clipped to 3.0 s;
    * otherwise lognormal with mode 0.2 s, σ 0.6 (μ = ln 0.2 + σ² → median ≈ 0.29 s, mean
      ≈ 0.34 s), clipped to 0.1–3.0 s, so it is always written as at least ``(0.1)``.
- **Within-turn pauses** (holds), placed where speakers hold the floor in speech, so that the
  model must judge whether the utterance is complete — the cue listeners use (De Ruiter, Mitterer
  & Enfield 2006, Language 82:515: lexico-syntactic content, not intonation, lets listeners
  anticipate turn ends):
    * at a clause boundary inside a sentence (after ``,`` or ``;``), probability
      ``P_PAUSE_INNER`` = 0.5;
    * at a possible completion point inside a turn (the end of a sentence or of a chat message
      that the same speaker follows up), only ``P_PAUSE_COMPLETION`` = 0.15: speakers who go on
      past a possible completion tend to "rush through" it without a pause (Schegloff 1982, in
      Analyzing Discourse, Georgetown UP, 71–93), since silence there invites the other to speak;
      such a pause is preceded by a filler with probability ``P_FILLER_BEFORE_HOLD`` = 0.4, the
      delay signal of a speaker who means to go on (Clark & Fox Tree 2002, Cognition 84:73);
    * a hesitation inside a clause of ≥ 4 words, probability ``P_HESITATION`` = 0.2 per clause,
      right after a function word (before the content word being searched for: Maclay & Osgood
      1959, Word 15:19; Clark & Wasow 1998, Cogn. Psychol. 37:201), with a filler before it with
      probability 0.3.
  Durations: lognormal median 0.4 s, σ 0.6, clipped to 0.1–2.5 s. Within-speaker pauses run
  somewhat longer than between-speaker gaps (Heldner & Edlund 2010) but the two ranges largely
  overlap, so a pause token alone does not reveal a switch.
- **Fillers**: ``um``/``uh`` at a clause start (p 0.06) and just before an inner-clause pause
  (p 0.08) — the places hesitations cluster (Clark & Fox Tree 2002).
- **Backchannels**: inside the other speaker's clause-boundary pause of ≥ ``BACKCHANNEL_MIN_PAUSE_S``
  = 0.5 s, with probability 0.3, the listener gets a short turn (mm-hmm, yeah, right, uh-huh,
  okay, oh yeah, mm) and the speaker's tag resumes with no pause of its own:
  ``S1: so I went (0.6) S2: mm-hmm S1: to the store``.
- **Identities**: a name from a built-in list of 20 female and 20 male names (sex from the
  name; the two speakers differ), age uniform 18–75 with probability 0.5, else ``unknown``.
- **Windows and splits**: ``splits.windows`` (450 words, ≥ 100 overlap) and
  ``splits.split_dialogues`` (81/9/10 by conversation, seeded), as for TalkBank.
- **Summaries**: only ``off``; the reference's BART summariser is not shipped here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import re
import sys
import time
from pathlib import Path

from rtchat.datasets.lines import Identity, corpus_words, format_line
from rtchat.datasets.splits import EmptyDatasetError, split_dialogues, windows, write_splits

MIN_TURNS = 4
P_NO_GAP = 0.25
P_LONG_GAP = 0.08
GAP_MODE_S, GAP_SIGMA = 0.2, 0.6
LONG_GAP_MEDIAN_S, LONG_GAP_SIGMA = 1.3, 0.35
GAP_RANGE_S = (0.1, 3.0)
P_PAUSE_INNER = 0.5
P_PAUSE_COMPLETION = 0.15
P_FILLER_BEFORE_HOLD = 0.4
P_HESITATION = 0.2
P_FILLER_BEFORE_HESITATION = 0.3
HESITATION_MIN_WORDS = 4
FUNCTION_WORDS = frozenset(
    "a an the to of in on at for with from about into and but or so because if that this these those my your "
    "his her our their its i you we they he she it is was are were be been have has had do did will would can "
    "could should just really very like some any more".split()
)
WITHIN_MEDIAN_S, WITHIN_SIGMA = 0.4, 0.6
WITHIN_RANGE_S = (0.1, 2.5)
P_FILLER_CLAUSE_START = 0.06
P_FILLER_BEFORE_PAUSE = 0.08
FILLERS = ("um", "uh")
BACKCHANNEL_MIN_PAUSE_S = 0.5
P_BACKCHANNEL = 0.3
BACKCHANNELS = ("mm-hmm", "yeah", "right", "uh-huh", "okay", "oh yeah", "mm")
P_AGE_KNOWN = 0.5
AGE_RANGE = (18, 75)
FEMALE_NAMES = (
    "Anna",
    "Maria",
    "Emma",
    "Olivia",
    "Sophie",
    "Laura",
    "Grace",
    "Chloe",
    "Hannah",
    "Julia",
    "Nora",
    "Lucy",
    "Ella",
    "Zoe",
    "Amy",
    "Rachel",
    "Sarah",
    "Mia",
    "Leah",
    "Kate",
)
MALE_NAMES = (
    "James",
    "David",
    "Michael",
    "Daniel",
    "Thomas",
    "Jack",
    "Ben",
    "Sam",
    "Peter",
    "Mark",
    "Luke",
    "Adam",
    "Ryan",
    "Oliver",
    "Noah",
    "Leo",
    "Tom",
    "Paul",
    "Eric",
    "Jim",
)

CLAUSE_RE = re.compile(r"([,;.!?…]+)")  # the delimiter is kept: it tells an inner boundary from a completion
INNER, COMPLETION = "inner", "completion"


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of one speaker's speech; consecutive segments of one speaker share a tag."""

    speaker: str  # "S1" / "S2"
    words: tuple[str, ...]
    pause_s: float | None  # silence written after it, None = none written
    turn_final: bool  # the last segment of a real turn (the next segment is the other speaker's)
    backchannel: bool = False




def clauses(messages: list[str]) -> list[tuple[list[str], str]]:
    """(words, boundary after them): ``inner`` after , or ; inside a sentence; ``completion``
    after the end of a sentence or of a message (a possible turn end)."""
    out = []
    for message in messages:
        parts = CLAUSE_RE.split(message)
        found = []
        for k in range(0, len(parts), 2):
            words = corpus_words(parts[k]).split()
            delimiter = parts[k + 1] if k + 1 < len(parts) else ""
            if words:
                found.append((words, INNER if delimiter and set(delimiter) <= {",", ";"} else COMPLETION))
            elif found and delimiter and not set(delimiter) <= {",", ";"}:
                found[-1] = (found[-1][0], COMPLETION)  # "well, ." -- the sentence ends here
        if found:
            found[-1] = (found[-1][0], COMPLETION)  # a message end is a possible completion
        out.extend(found)
    return out


def lognormal(rng: random.Random, median_s: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, math.exp(rng.gauss(math.log(median_s), sigma))))


def turn_gap_s(rng: random.Random) -> float | None:
    """Turn-final silence; None for an overlap/latched switch."""
    u = rng.random()
    if u < P_NO_GAP:
        return None
    if u < P_NO_GAP + P_LONG_GAP:
        return lognormal(rng, LONG_GAP_MEDIAN_S, LONG_GAP_SIGMA, *GAP_RANGE_S)
    median = GAP_MODE_S * math.exp(GAP_SIGMA**2)  # lognormal mode = exp(μ - σ²)
    return lognormal(rng, median, GAP_SIGMA, *GAP_RANGE_S)


def speak(turns: list[tuple[str, list[str]]], rng: random.Random) -> list[Segment]:
    """(speaker, messages) turns → timed segments with pauses, fillers and backchannels."""
    segments: list[Segment] = []

    def hold(speaker: str, words: list[str]) -> None:
        segments.append(Segment(speaker, tuple(words), lognormal(rng, WITHIN_MEDIAN_S, WITHIN_SIGMA, *WITHIN_RANGE_S),
                                turn_final=False))

    for t, (speaker, messages) in enumerate(turns):
        other = "S2" if speaker == "S1" else "S1"
        cl = clauses(messages)
        words: list[str] = []
        for i, (clause, boundary) in enumerate(cl):
            if rng.random() < P_FILLER_CLAUSE_START:
                words.append(rng.choice(FILLERS))
            at = _hesitation_point(clause, rng)
            if at is not None:
                words.extend(clause[:at])
                if rng.random() < P_FILLER_BEFORE_HESITATION:
                    words.append(rng.choice(FILLERS))
                hold(speaker, words)
                words = list(clause[at:])
            else:
                words.extend(clause)
            if i == len(cl) - 1:
                continue
            if boundary == INNER:
                if rng.random() >= P_PAUSE_INNER:
                    continue
                if rng.random() < P_FILLER_BEFORE_PAUSE:
                    words.append(rng.choice(FILLERS))
            else:
                if rng.random() >= P_PAUSE_COMPLETION:
                    continue
                if rng.random() < P_FILLER_BEFORE_HOLD:
                    words.append(rng.choice(FILLERS))
            hold(speaker, words)
            words = []
            if round(segments[-1].pause_s, 1) >= BACKCHANNEL_MIN_PAUSE_S and rng.random() < P_BACKCHANNEL:
                segments.append(Segment(other, tuple(rng.choice(BACKCHANNELS).split()), None, False, backchannel=True))
        gap = turn_gap_s(rng) if t < len(turns) - 1 else None
        segments.append(Segment(speaker, tuple(words), gap, turn_final=True))
    return segments


def _hesitation_point(clause: list[str], rng: random.Random) -> int | None:
    """Index of the word a hesitation pause comes before (right after a function word, never at
    the clause's edges), or None."""
    if len(clause) < HESITATION_MIN_WORDS or rng.random() >= P_HESITATION:
        return None
    candidates = [k for k in range(1, len(clause) - 1) if clause[k - 1] in FUNCTION_WORDS]
    return rng.choice(candidates) if candidates else None


def render(segments: list[Segment]) -> str:
    """``S1: so i went (0.6) S2: mm-hmm S1: to the store``."""
    parts: list[str] = []
    current = None
    for seg in segments:
        if seg.speaker != current:
            parts.append(f"{seg.speaker}:")
            current = seg.speaker
        parts.extend(seg.words)
        if seg.pause_s is not None:
            parts.append(f"({seg.pause_s:.1f})")
    return " ".join(parts)


def identities(rng: random.Random) -> dict[str, Identity]:
    people = {}
    used: set[str] = set()
    for tag in ("S1", "S2"):
        sex = rng.choice(("female", "male"))
        names = [n for n in (FEMALE_NAMES if sex == "female" else MALE_NAMES) if n not in used]
        name = rng.choice(names)
        used.add(name)
        age = str(rng.randint(*AGE_RANGE)) if rng.random() < P_AGE_KNOWN else "unknown"
        people[tag] = Identity(name=name, age=age, sex=sex)
    return people


def to_turns(conversation: dict) -> tuple[list[tuple[str, list[str]]], bool]:
    """(speaker tag, messages) per turn, and whether it was repaired by turn parity."""
    raw = [[m for m in turn if corpus_words(m.get("text", ""))] for turn in conversation.get("messages", [])]
    raw = [turn for turn in raw if turn]
    senders = {m["sender"] for turn in raw for m in turn}
    if len(senders) == 1:
        return [("S1" if i % 2 == 0 else "S2", [m["text"] for m in turn]) for i, turn in enumerate(raw)], True
    tags: dict[str, str] = {}
    turns: list[tuple[str, list[str]]] = []
    for turn in raw:
        sender = turn[0]["sender"]
        tag = tags.setdefault(sender, f"S{len(tags) + 1}")
        texts = [m["text"] for m in turn]
        if turns and turns[-1][0] == tag:
            turns[-1][1].extend(texts)
        else:
            turns.append((tag, texts))
    return turns, False


def build(
    conversations: dict[str, dict], seed: int, size: int = 450, overlap: int = 100
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Split lines by dialogue, and counts (used, skipped, repaired, words)."""
    rng = random.Random(seed)
    bodies: dict[str, tuple[dict[str, Identity], list[str]]] = {}
    stats = {"used": 0, "skipped": 0, "skipped_single_sender": 0, "repaired": 0}
    for conv_id in sorted(conversations):
        turns, repaired = to_turns(conversations[conv_id])
        if len(turns) < MIN_TURNS or len({tag for tag, _ in turns}) != 2:
            stats["skipped"] += 1
            stats["skipped_single_sender"] += repaired
            continue
        stats["used"] += 1
        stats["repaired"] += repaired
        people = identities(rng)
        bodies[conv_id] = (people, render(speak(turns, rng)).split())
    split = split_dialogues(bodies, seed)
    lines = {
        name: [format_line(bodies[c][0], "", " ".join(w)) for c in ids for w in windows(bodies[c][1], size, overlap)]
        for name, ids in split.items()
    }
    stats["words"] = sum(len(line.split("Transcript:", 1)[1].split()) for ls in lines.values() for line in ls)
    return lines, stats


def load_chitchat() -> dict[str, dict]:
    import chitchat_dataset

    path = Path(chitchat_dataset.__file__).parent / "dataset.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder for dataset_{train,dev,test}.txt")
    parser.add_argument("--seed", type=int, default=42, help="seed for timing, identities and the split (default 42)")
    parser.add_argument("--max-dialogues", type=int, default=None, help="use only the first N conversations (by id)")
    parser.add_argument("--summaries", choices=("off",), default="off", help="no summariser ships here: only 'off'")
    parser.add_argument("--window-words", type=int, default=450, help="words per window (default 450)")
    parser.add_argument("--overlap-words", type=int, default=100, help="minimum overlap between windows (default 100)")


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    conversations = load_chitchat()
    if args.max_dialogues is not None:
        conversations = {k: conversations[k] for k in sorted(conversations)[: max(0, args.max_dialogues)]}
    lines, stats = build(conversations, args.seed, args.window_words, args.overlap_words)
    try:
        paths = write_splits(args.out, lines)
    except EmptyDatasetError as e:
        print(f"rtchat data synthetic: {e}", file=sys.stderr)
        return 1
    print(
        f"dialogues: {stats['used']} used ({stats['repaired']} repaired by turn parity), {stats['skipped']} skipped "
        f"(fewer than {MIN_TURNS} turns; {stats['skipped_single_sender']} of them single-sender)"
    )
    for name, path in paths.items():
        print(f"{name}: {len(lines[name])} lines -> {path}")
    print(f"transcript words: {stats['words']}; {time.monotonic() - t0:.1f} s")
    return 0
