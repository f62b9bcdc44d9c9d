"""Partial and final ASR words into the transcript (reference spec §5), as a pure function.

A partial (``asr.partial``, the reference's ``~``) is revisable: the next input rolls it back and
writes the new words in its place. A final (``asr.final``, ``user.text``, the reference's ``*``)
commits. Each input is one segment: the core applies events as they arrive, so the reference's
"only the last of several queued partials" rule is the natural order of events.

Rolling back: everything from where the pending partial began is taken out and split into
utterances. The first is the rest of the user's partial (untagged, or ``S1: …`` if the partial
opened the turn); later ones are whole turns taken meanwhile (the agent's, or the user's). The
new words are then laid back over them:

- a user chunk receives about as many characters of the new words as it had before, extended to
  a word boundary (an untagged chunk continues the user's turn; a tagged one re-opens ``S1:``);
- another speaker's turn is carried over unchanged — the agent's words survive a revision;
- the deliberate ≤ 2-word heuristics: a first chunk of ≤ 2 words is *deferred* (its words land
  after the next turn) when more turns follow — unless the words are known to have been spoken
  before that turn began (``defer=False``: the core knows when the user's last word ended);
  ≤ 2 leftover words before the *last* carried turn join the user's text before it instead of
  dangling after it (unless the first chunk was deferred and that turn is the second utterance);
- leftovers go at the end, after a new ``S1:`` if the floor is not the user's. This is the only
  way the floor passes to the user; a rewrite can also give it back to the agent.

Fixed against the reference: (1) positions inside carried turns move with them (``moves``), so
the core's marks and lookahead context stay right (§16.10); (2) a user turn left empty by a
deferral or a blank final is removed instead of leaving ``S1: S2: …`` (§16.20); (3) words are
never appended to another speaker's turn: if the floor is not the user's, ``S1:`` opens first;
(4) an empty turn (a bare tag) in the rolled-back span is not carried over.
Pauses inside the rolled-back span are still thrown away (as in the reference), except that the
core keeps a trailing user pause when the words did not change (see ``core``).
"""

from __future__ import annotations

import dataclasses
import re

from rtchat.nodes.agent.transcript import SEQUENCE_SPLIT_RE, TAG_START_RE, USER

_BARE_TAG_RE = re.compile(r" S\d:\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class Rewrite:
    """Apply with ``Transcript.replace_tail(start, tail, moves)`` and ``partial_pos``."""

    start: int  # text[start:] is replaced by tail
    tail: str
    moves: tuple[tuple[int, int, int], ...]  # (old_start, old_end, new_start) of carried turns
    partial_pos: int | None  # where the new partial begins; None after a final


def utterances_from(text: str, start: int) -> list[tuple[str, int]]:
    """text[start:] split before each tag: [(utterance, its position in text)], empties dropped."""
    out, pos = [], start
    for piece in SEQUENCE_SPLIT_RE.split(text[start:]):
        if piece.strip():
            out.append((piece, pos))
        pos += len(piece) + 1
    return out


def tag_of(utterance: str) -> str | None:
    m = TAG_START_RE.match(utterance)
    return m.group(0) if m and utterance[m.end() : m.end() + 1] == ":" else None


def words_of(utterance: str) -> str:
    """The utterance without its tag, stripped."""
    tag = tag_of(utterance)
    return (utterance[len(tag) + 1 :] if tag else utterance).strip()


class _Tail:
    """The rewritten tail under construction, and who holds the floor at its end."""

    def __init__(self, head: str, user: str):
        self.head, self.user = head, user
        self.parts: list[str] = []
        self.length = len(head)
        self.moves: list[tuple[int, int, int]] = []
        tags = SEQUENCE_SPLIT_RE.split(head)
        self.speaker = next((t for t in map(tag_of, reversed(tags)) if t), None)

    def add(self, piece: str) -> None:
        self.parts.append(piece)
        self.length += len(piece)

    def add_user(self, words: str, new_turn: bool) -> None:
        if new_turn or self.speaker != self.user:
            self.add(f" {self.user}:")
            self.speaker = self.user
        self.add(" " + words)

    def carry(self, utterance: str, pos: int) -> None:
        """Another speaker's turn, unchanged; its span (with its separating space) moves."""
        self.moves.append((pos - 1, pos + len(utterance), self.length))
        self.add(" " + utterance)
        self.speaker = tag_of(utterance)


def rewrite_input(text: str, partial_pos: int | None, words: str, partial: bool, user: str = USER,
                  defer: bool = True) -> Rewrite:
    """Consumes the sequence, the pending partial's position, the new words (clean, single-spaced;
    "" for a blank final) and whether they are a partial. Produces the Rewrite to apply.
    ``defer=False``: the words were spoken before the turns taken meanwhile (a late revision of
    the pending partial), so its first chunk is never deferred after them."""
    start = len(text) if partial_pos is None else partial_pos
    rolled = utterances_from(text, start)
    tail = _Tail(text[:start], user)
    seg, deferred, n = words, False, len(rolled)
    for j, (utt, pos) in enumerate(rolled):
        tag = tag_of(utt)
        if tag is not None and tag != user and not words_of(utt):
            continue  # an empty turn is not carried over
        if tag is not None and tag != user:
            if j == n - 1 and seg and seg.count(" ") < 2 and (j > 1 or not deferred):
                tail.add_user(seg, new_turn=False)
                seg = ""
            tail.carry(utt, pos)
        elif seg:
            cut = seg.find(" ", len(words_of(utt)))
            piece = seg if cut < 0 else seg[:cut]
            if defer and j == 0 and n > 1 and piece.count(" ") < 2:
                deferred = True
                continue
            tail.add_user(piece, new_turn=tag is not None)
            seg = seg[len(piece) :].lstrip()
    if seg:
        tail.add_user(seg, new_turn=False)
    return _finish(text, start, tail, partial)


def _finish(text: str, start: int, tail: _Tail, partial: bool) -> Rewrite:
    """Drop a bare tag just before the tail when the tail opens another turn (no empty turns)."""
    new_tail = "".join(tail.parts)
    moves = tuple(tail.moves)
    bare = _BARE_TAG_RE.search(text, max(0, start - 4), start)
    if bare is not None and new_tail.startswith(" S"):
        shift = start - bare.start()
        moves = tuple((a, b, c - shift) for a, b, c in moves)
        start = bare.start()
    return Rewrite(start=start, tail=new_tail, moves=moves, partial_pos=start if partial else None)
