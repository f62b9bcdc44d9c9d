"""The transcript line: one definition for datasets, training, evals and the agent.

    Participants: S1 (name: Anna, age: 30, sex: female), S2 (name: unknown, age: unknown,
    sex: unknown); Summary: S1 and S2 talk.; Transcript: S1: hello there (0.4) S2: hi
    (one line; wrapped here)

``format_line`` writes it, ``parse_line`` reads it back (round trip exact for lines this module
wrote). The agent builds its running prefix with ``build_prefix`` from here. Limits of the
format itself: identity values and summaries cannot contain ``), `` / ``; Transcript:`` (they
are written as given, so a parser cannot tell them from the structure); speakers are S1…S9.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

PARTICIPANT_RE = re.compile(r"(S\d) \(name: (.*?), age: (.*?), sex: (.*?)\)")
LINE_RE = re.compile(r"^Participants: (?P<people>.*?); (?:Summary: (?P<summary>.*?); )?Transcript:(?P<body>.*)$", re.S)


class LineError(ValueError):
    """A line is not a transcript line; the message says what is missing."""


NON_WORD_RE = re.compile(r"[^\w'\-]+|_")


def corpus_words(text: str) -> str:
    """Words in the training corpus's form: lower case, no punctuation but apostrophes and hyphens,
    single spaces (``"Hello there. How's it going?"`` → ``"hello there how's it going"``). The
    synthetic corpus is written so, and the agent writes the user's words so: a recogniser's
    "about." must not read as a finished sentence the model never saw in training."""
    return " ".join(NON_WORD_RE.sub(" ", text.lower()).split())


def one_line(text: str) -> str:
    """Control characters become spaces; whitespace runs collapse to one space; stripped."""
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in str(text))
    return " ".join(text.split())


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    name: str = "unknown"
    age: str = "unknown"
    sex: str = "unknown"

    def describe(self, tag: str) -> str:
        """``S1 (name: Anna, age: 30, sex: female)``; blank values are ``unknown``."""
        name, age, sex = (one_line(v) or "unknown" for v in (self.name, self.age, self.sex))
        return f"{tag} (name: {name}, age: {age}, sex: {sex})"


def clip_summary(summary: str, max_chars: int) -> tuple[str, str | None]:
    """The summary on one line, cut at a word boundary to at most max_chars; and a warning if cut."""
    text = one_line(summary)
    if len(text) <= max_chars:
        return text, None
    cut = text.rfind(" ", 0, max_chars + 1)
    clipped = (text[:cut] if cut > 0 else text[:max_chars]).rstrip()
    return clipped, f"summary cut from {len(text)} to {len(clipped)} characters (agent.max_summary_chars={max_chars})"


def build_prefix(identities: dict[str, Identity], summary: str) -> str:
    """``Participants: …; [Summary: …; ]Transcript:`` (no trailing space; the body brings it)."""
    people = ", ".join(identity.describe(tag) for tag, identity in identities.items())
    summary_part = f"Summary: {one_line(summary)}; " if one_line(summary) else ""
    return f"Participants: {people}; {summary_part}Transcript:"


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    identities: dict[str, Identity]  # tag → identity, in the order written
    summary: str  # "" = no Summary section
    body: str  # "S1: hello there (0.4) S2: hi" — no leading space

    def text(self) -> str:
        return format_line(self.identities, self.summary, self.body)


def format_line(identities: dict[str, Identity], summary: str, body: str) -> str:
    body = one_line(body)
    return build_prefix(identities, summary) + (f" {body}" if body else "")


def parse_line(text: str, where: str = "line") -> Line:
    """A Line, or LineError naming ``where`` (e.g. ``dataset_train.txt:12``) and what is wrong."""
    m = LINE_RE.match(text.rstrip("\n"))
    if m is None:
        missing = "Participants:" if not text.startswith("Participants: ") else "Transcript:"
        raise LineError(f"{where}: not a transcript line (no '{missing}' where expected): {text[:80]!r}")
    people = m.group("people")
    found = PARTICIPANT_RE.findall(people)
    rebuilt = ", ".join(f"{t} (name: {n}, age: {a}, sex: {s})" for t, n, a, s in found)
    if not found or rebuilt != people:
        raise LineError(f"{where}: participants are not 'S1 (name: …, age: …, sex: …), …': {people[:80]!r}")
    identities = {t: Identity(name=n, age=a, sex=s) for t, n, a, s in found}
    return Line(identities=identities, summary=m.group("summary") or "", body=m.group("body").strip())
