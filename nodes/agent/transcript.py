"""The transcript the agent's model reads: its format, and the string rules that read and edit it.

One flat string (reference spec §1), the same at training and at run time::

    Participants: S1 (name: Anna, age: 30, sex: female), S2 (name: unknown, age: unknown, sex: unknown);
    Summary: S1 and S2 are talking about their week.; Transcript: S1: hello there (0.6) S2: hi!

The user is ``S1``, the agent ``S2``. Every fragment appended to the body starts with a space and
the body never ends with one; pauses are ``(x.y)`` seconds (``<p> (x.y)`` for models trained with
the pause token); a tag is ``S`` and one digit (the reference's lazy ``S\\d+?``, so S1…S9 only).

This module holds the pure rules: identities and the prefix (§1.1), pause formatting and the
incrementing pause (§4.5), the regex catalogue (§3), history trimming (§4.6), output cutting
(§6 step 9), turn-switch parsing (§7) and response parsing (§8.2); ``Transcript`` is the live
sequence with the character positions that must follow its edits. The partial/final input
rewriting (§5) is ``rewrite.py``.

Fixed against the reference (each has a test in ``tests/test_agent_transcript.py``):
- §4.5/§16.18: the trailing pause is found on the whole tail, so ``<p>`` pauses of 100 s or more
  grow instead of being duplicated (``<p> <p> (100.6)``).
- §4.6/§16.19: trimming shifts every tracked position by what was removed *before* it and drops
  positions that were removed; it never cuts into a pending ASR partial (the cut moves back to the
  start of the partial's turn); a window with no usable tag re-opens its turn with the speaker's
  tag, so the body always starts with a tag.
- §8.2/§16.12: the response's trailing ``" S"`` (the next tag's first token) is removed as a
  suffix; ``rstrip(" S")`` stripped a character set (``YES`` → ``YE``).
- §8a/§16.13: ``S2:`` with nothing after it parses as an empty reply instead of raising.
- Pauses the model writes are rewritten to the canonical ``(x.y)`` and capped at
  ``max_agent_pause_s`` (an "endless" ``(99999.9)`` would be rendered as a day of silence);
  pause openings that never close (``(0.`` and a stray ``<p>``) are removed.
- A tag glued to the previous tag (``S2:S2:hi``) ends the words like a spaced one, so a model
  that writes malformed tags cannot forge a turn.
"""

from __future__ import annotations

import re
import unicodedata

from rtchat.datasets.lines import Identity
from rtchat.datasets.lines import one_line as _one_line

USER = "S1"
AGENT = "S2"
NS_PER_TENTH = 100_000_000

# ---------------------------------------------------------------- the regex catalogue (§3)

TAG_START_RE = re.compile(r"S\d")  # any_identity: S + one digit starts a tag
TAG_RE = re.compile(r" (S\d):")  # a tag as written in the body
TAG_OR_INCOMPLETE_RE = re.compile(r" (?:S\d|S\Z)")  # any_identity_with_incomplete: where agent output is cut
NEXT_TAG_RE = re.compile(r"(?:^|\s+)S\d")  # the end of agent_turn_switch / speaker_continue
LEADING_TAG_RE = re.compile(r"S(\d)(:?)")  # a prediction that starts with a tag (after lstrip)
PAUSE_RE = re.compile(r"(?:<p> )?\((\d*\.\d*)\)")  # group 1: the value; "." alone = one interval
LEADING_PAUSE_RE = re.compile(r" (?:<p> )?\((\d*\.\d*)\)")  # a canonical pause opening a fragment
PAUSE_AT_END_RE = re.compile(r" ((?:<p> )?\((\d*\.\d*)\))\Z")
INCOMPLETE_PAUSE_RE = re.compile(r"(?:<p> ?\(?|\()\d*\.?\d*\Z")
END_PAUSE_RE = re.compile(r"\)")
SEQUENCE_SPLIT_RE = re.compile(r"\s(?=S\d)")
_LAST_TAG_RE = re.compile(r"(?s:.*) (S\d):")
_CANONICAL_PAUSE_RE = re.compile(r"\s*(?:<p> )?\((\d*\.\d*)\)")
_TRAILING_S_RE = re.compile(r"\s+S\Z")
_UNFINISHED_PAUSE_RE = re.compile(r" ?(?:<p> ?)?\((?=[\d.])\d*\.?\d*(?![\d.)])| ?<p>(?! \()")


# ---------------------------------------------------------------- identities and the prefix (§1.1)


def identities_of(cfg) -> dict[str, Identity]:
    """Consumes an AgentConfig; produces {"S1": user, "S2": agent}."""
    return {
        USER: Identity(cfg.user_name, cfg.user_age, cfg.user_sex),
        AGENT: Identity(cfg.agent_name, cfg.agent_age, cfg.agent_sex),
    }


# ---------------------------------------------------------------- text hygiene


def clean_words(text: str) -> str:
    """User (or configured) words made safe for the body: one line, single spaces, and a word that
    would read as a speaker tag (``S2:`` …) lower-cased. Whitespace- or format-only text is ""."""
    text = _one_line(text)
    if all(unicodedata.category(c) == "Cf" for c in text.replace(" ", "")):
        return ""
    return " ".join("s" + w[1:] if TAG_START_RE.match(w) else w for w in text.split(" "))


def clean_output(fragment: str) -> str:
    """Model output on one line with single spaces; its leading space (or its absence, when it
    continues the previous word) is kept, trailing space dropped."""
    lead = " " if fragment[:1].isspace() else ""
    body = _one_line(fragment)
    return lead + body if body else ""


def join_fragment(text: str, fragment: str) -> str:
    """The fragment as it must be appended to text: a leading space unless it continues a word."""
    if not fragment or fragment.startswith(" "):
        return fragment
    if not text or text.endswith((":", ")", ">")) or fragment.startswith(("(", "<")) or TAG_START_RE.match(fragment):
        return " " + fragment
    return fragment


# ---------------------------------------------------------------- pauses (§1.2, §4.5)


def tenths_of_ns(ns: int) -> int:
    """Nanoseconds → tenths of a second, rounded half up."""
    return (ns + NS_PER_TENTH // 2) // NS_PER_TENTH


def format_pause(tenths: int, pause_token: bool) -> str:
    """`` (1.2)`` or `` <p> (1.2)``, with its leading space."""
    return f" {'<p> ' if pause_token else ''}({tenths // 10}.{tenths % 10})"


def pause_tenths(value: str, interval_tenths: int) -> int:
    """A pause's value in tenths: ``.`` alone is one interval; ``5.`` is 5.0, ``.5`` is 0.5."""
    if value == ".":
        return interval_tenths
    return int(float(value) * 10 + 0.5)


def first_pause_tenths(text: str, interval_tenths: int) -> int | None:
    m = PAUSE_RE.search(text)
    return None if m is None else pause_tenths(m.group(1), interval_tenths)


def canonical_pauses(text: str, interval_tenths: int, max_tenths: int, pause_token: bool) -> str:
    """Every complete pause rewritten as `` (x.y)`` (or `` <p> (x.y)``), capped at max_tenths."""
    return _CANONICAL_PAUSE_RE.sub(
        lambda m: format_pause(min(pause_tenths(m.group(1), interval_tenths), max_tenths), pause_token), text
    )


def ends_in_incomplete_pause(text: str) -> bool:
    return INCOMPLETE_PAUSE_RE.search(text) is not None


def drop_incomplete_pause(text: str) -> str:
    m = INCOMPLETE_PAUSE_RE.search(text)
    return (text[: m.start()] if m else text).rstrip()


def strip_unfinished_pauses(text: str) -> str:
    """Pause openings that never close (``(0.`` mid-text or at the end, a stray ``<p>``) removed."""
    text = _UNFINISHED_PAUSE_RE.sub("", drop_incomplete_pause(text))
    return clean_output(text)


def cut_after_first(text: str, pattern: re.Pattern) -> str:
    """The regex stop of §4.3: text up to and including the first match (all of it if none)."""
    m = pattern.search(text)
    return text if m is None else text[: m.end()]


# ---------------------------------------------------------------- reading predictions (§6.9, §7, §8.2)


def cut_output(text: str) -> str:
    """§6 step 9: agent output cut at the first following tag, or at a dangling `` S`` at the end."""
    m = TAG_OR_INCOMPLETE_RE.search(text)
    return text if m is None else text[: m.start()]


def parse_turn(prediction: str) -> tuple[str | None, str]:
    """§7: (speaker, words) of a prediction that starts with a tag, else (None, prediction).

    ``S2: hi S1: yes`` → ("S2", " hi"); ``S2:`` → ("S2", ""); ``S2 hi`` (no colon) → ("S2", " hi");
    ``S23`` or ``S2x`` (not a tag) → ("?", ""): an unknown speaker, which says nothing."""
    p = prediction.lstrip()
    m = LEADING_TAG_RE.match(p)
    if m is None:
        return None, prediction
    rest = p[m.end() :]
    if rest and not (m.group(2) or rest[0].isspace()):
        return "?", ""
    end = NEXT_TAG_RE.search(rest)
    words = " ".join(rest[: end.start() if end else len(rest)].split())
    return f"S{m.group(1)}", (" " + words if words else "")


# ---------------------------------------------------------------- settled decisions
# A decision often depends only on how a prediction begins. These say when a prefix of one settles
# it: no continuation can change the decision, so generating can stop there. The tokens before the
# stop are those the full generation makes, so the decision is exactly the same, only cheaper.


def agent_says_nothing(prefix: str) -> bool:
    """8b (the agent's floor), settled: the prefix opens with a tag that is not the agent's and
    cannot become it (``S1``, ``S3``, ``S2x``), so the agent says nothing whatever follows."""
    speaker, _ = parse_turn(prefix)
    return speaker is not None and speaker != AGENT


def speaker_after_pauses_known(prefix: str) -> bool:
    """Barge-in, settled: past its complete pauses the prefix shows a word or a whole tag."""
    q = PAUSE_RE.sub("", prefix).lstrip()
    return bool(q) and q[0] not in "(<" and q not in ("S", AGENT)


def parse_response(response: str) -> tuple[str | None, str]:
    """§8.2: a lookahead response (`` S2: sure, I think S``) → ("S2", " sure, I think").

    The next tag's `` S`` is removed as a suffix (fixed: the reference stripped a character set);
    the words stop at any further tag; a trailing incomplete pause is cut. No tag → (None, "")."""
    speaker, words = parse_turn(_TRAILING_S_RE.sub("", response))
    if speaker is None:
        return None, ""
    words = drop_incomplete_pause(cut_output(words))
    return speaker, words


# ---------------------------------------------------------------- the grammar, for checks


def grammar_errors(text: str, prefix_len: int) -> list[str]:
    """What is wrong with a sequence's body ([] when it is well formed): it starts with a tag; single
    spaces only; only S1/S2 tags; no empty turn but the last; no unfinished pause at the end."""
    body = text[prefix_len:]
    errors = []
    if not re.match(r" S\d:", body):
        errors.append(f"body does not start with a tag: {body[:20]!r}")
    if re.search(r"[^\S ]|  ", body) or body.endswith(" "):
        errors.append("whitespace other than single spaces")
    for m in re.finditer(r"(?:^|\s)(S\d)(?=:)", body):
        if m.group(1) not in (USER, AGENT):
            errors.append(f"unknown speaker tag {m.group(1)}")
    if re.search(r" S\d: S\d:", body):
        errors.append("an empty turn before another turn")
    if ends_in_incomplete_pause(body):
        errors.append("ends inside an unfinished pause")
    return errors


# ---------------------------------------------------------------- the live sequence


class Transcript:
    """The sequence string with the positions that follow its edits.

    ``partial_pos`` is where the pending ASR partial begins (None if none). ``marks`` are the
    caller's named positions (the start of the agent's turn, of each output chunk). Every edit
    says what happens to positions: those before an edit stay, those inside moved text move with
    it, those inside replaced text are dropped — never shifted blindly (the reference's §16.19).
    """

    def __init__(self, prefix: str, first_speaker: str):
        self.prefix_len = len(prefix)
        self.text = f"{prefix} {first_speaker}:"
        self.partial_pos: int | None = None
        self.marks: dict[object, int] = {}

    def copy(self) -> Transcript:
        other = Transcript.__new__(Transcript)
        other.prefix_len, other.text, other.partial_pos = self.prefix_len, self.text, self.partial_pos
        other.marks = dict(self.marks)
        return other

    @property
    def body(self) -> str:
        return self.text[self.prefix_len :]

    @property
    def speaker(self) -> str:
        """Who holds the floor: the speaker of the last tag."""
        m = _LAST_TAG_RE.match(self.text, self.prefix_len)
        return m.group(1) if m else USER

    def ends_with_bare_tag(self) -> bool:
        return re.search(r" S\d:\Z", self.text) is not None

    # ---------------------------------------------------------------- edits

    def append(self, fragment: str) -> None:
        self.text += join_fragment(self.text, fragment)

    def open_turn(self, speaker: str) -> None:
        """Append `` S2:``; an empty turn at the end (a bare tag) is replaced, not left empty."""
        if self.ends_with_bare_tag():
            self.replace_tail(self.text.rindex(" "), "")
        self.text += f" {speaker}:"

    def replace_tail(self, start: int, tail: str, moves=(), after: str = "drop") -> None:
        """text[start:] := tail. Positions ≤ start stay; those in a moved span (old_start, old_end,
        new_start) follow it; the rest are dropped (after="drop") or put at the new end ("end")."""

        def follow(pos: int) -> int | None:
            for old_start, old_end, new_start in moves:
                if old_start <= pos < old_end:
                    return new_start + pos - old_start
            if pos <= start:
                return pos
            return start + len(tail) if after == "end" else None

        self.text = self.text[:start] + tail
        self.marks = {k: p for k, v in self.marks.items() if (p := follow(v)) is not None}
        if self.partial_pos is not None:
            self.partial_pos = follow(self.partial_pos)

    def set_prefix(self, prefix: str) -> None:
        """Swap the prefix in place; every position shifts by the change in its length."""
        delta = len(prefix) - self.prefix_len
        self.text = prefix + self.body
        self.prefix_len = len(prefix)
        self.marks = {k: v + delta for k, v in self.marks.items()}
        if self.partial_pos is not None:
            self.partial_pos += delta

    def trailing_pause(self, interval_tenths: int) -> tuple[int, int] | None:
        """(start, tenths) of the pause that ends the body, start being its separating space."""
        if not self.text.endswith(")"):
            return None
        m = PAUSE_AT_END_RE.search(self.text, self.prefix_len)
        return None if m is None else (m.start(), pause_tenths(m.group(2), interval_tenths))

    def set_trailing_pause(self, tenths: int, pause_token: bool, interval_tenths: int) -> None:
        """§4.5, fixed: the pause ending the body becomes ``(tenths)``, or one is appended. The
        whole pause (``<p>`` included) is replaced whatever its length. Positions at its end
        stay at the end (a lookahead context that ended with the pause goes on ending with it)."""
        found = self.trailing_pause(interval_tenths)
        start = len(self.text) if found is None else found[0]
        self.replace_tail(start, format_pause(tenths, pause_token), after="end")

    def trim(self, max_words: int, keep_words: int = 0) -> tuple[str, str] | None:
        """§4.6, fixed. A body of more than max_words words keeps its last keep_words (0 or more
        than max_words: max_words) from the first tag among them; never cut into the pending
        partial's turn. Returns (removed, inserted): the old body was removed + X and the new body
        is inserted + X (inserted is a re-opened tag or "")."""
        body = self.body
        spans = [m.start() for m in re.finditer(r"\S+", body)]
        if len(spans) <= max_words:
            return None
        keep = min(keep_words, max_words) if keep_words > 0 else max_words
        window = spans[-keep:]
        tags = [i for i, a in enumerate(window) if TAG_START_RE.match(body, a)]
        if tags and tags[0] < len(window) - 1:
            cut, reopen = window[tags[0]], ""
        else:
            cut = spans[-max(keep - 1, 1)]
            reopen = f" {self._speaker_before(cut)}:"
        if self.partial_pos is not None:
            turn = self._turn_start(self.partial_pos - self.prefix_len)
            if cut > turn:
                cut, reopen = turn, ""
        if cut <= 1:
            return None
        removed = body[: cut - 1]
        self.text = self.text[: self.prefix_len] + reopen + body[cut - 1 :]
        shift = len(reopen) - (cut - 1)
        floor = self.prefix_len + cut - 1
        self.marks = {k: v + shift for k, v in self.marks.items() if v >= floor}
        if self.partial_pos is not None:
            self.partial_pos += shift
        return removed, reopen

    def _speaker_before(self, body_pos: int) -> str:
        tags = TAG_RE.findall(self.body, 0, body_pos)
        return tags[-1] if tags else USER

    def _turn_start(self, body_pos: int) -> int:
        """Body index of the tag word that starts the turn containing body_pos (a position on the
        space before a tag belongs to that tag's turn)."""
        body = self.body
        if body.startswith(" S", body_pos) and TAG_START_RE.match(body, body_pos + 1):
            return body_pos + 1
        starts = [m.start() + 1 for m in TAG_RE.finditer(body, 0, body_pos + 1)]
        return starts[-1] if starts else 1
