"""Writing CHAT transcripts (``.cha``, CA mode): timed words of two or more speakers → the text
CLAN opens and ``talkbank.py`` (``rtchat data talkbank --from DIR``) reads back into lines.

``write_chat(speakers, words, media=…, comments=…)`` lays the words out as a conversation-analytic
transcript (CHAT manual, the CA chapter):

- per speaker, words less than ``PAUSE_MIN_MS`` apart form one stretch of speech; stretches are put
  in order of their start, and consecutive stretches of one speaker form one utterance, the
  silences between them written as timed pauses ``(0.6)`` (seconds, one decimal);
- every utterance ends with its time bullet ``NAK start_end NAK`` (ms from the media's first
  sample), so a silence between utterances is the gap between their bullets, as
  ``talkbank.bullets_to_pauses`` reads it;
- where an utterance starts before the one before it ends, the earlier one's words still sounding
  then are enclosed in ``⌈ ⌉`` and the later one's words sounding before the earlier ends in ``⌊ ⌋``;
- no terminators are added (CA mode does without them); characters that CHAT reads as structure
  in a main tier (brackets, parentheses, the overlap marks, control characters) are removed from
  the words, so a word cannot turn into a pause, an annotation or a bullet.
"""

from __future__ import annotations

import dataclasses
import re

from rtchat.datasets.lines import Identity

PAUSE_MIN_MS = 200  # CA times silences from 0.2 s; shorter ones inside a stretch are not written
NAK = "\x15"
STRUCTURE_RE = re.compile(r"[\[\]()⌈⌉⌊⌋<>\x00-\x1f\x7f]")  # what a word may not carry into a main tier
CHAT_SEXES = ("male", "female")


@dataclasses.dataclass(frozen=True, slots=True)
class Speaker:
    code: str  # three capitals, e.g. "USR"
    identity: Identity
    role: str = "Participant"


@dataclasses.dataclass(frozen=True, slots=True)
class TimedWord:
    code: str  # the speaker's code
    start_ms: int
    end_ms: int
    text: str


def _participant(s: Speaker) -> str:
    name = "_".join(s.identity.name.split())
    return f"{s.code} {name} {s.role}" if name and name != "unknown" else f"{s.code} {s.role}"


def _id_line(s: Speaker) -> str:
    age = f"{s.identity.age};" if s.identity.age.isdigit() else ""
    sex = s.identity.sex if s.identity.sex in CHAT_SEXES else ""
    return f"@ID:\teng|rtchat|{s.code}|{age}|{sex}|||{s.role}|||"


def _stretches(words: list[TimedWord]) -> list[list[TimedWord]]:
    """Per speaker, words closer than PAUSE_MIN_MS; all stretches in order of start."""
    out = []
    for code in dict.fromkeys(w.code for w in words):
        mine = sorted((w for w in words if w.code == code), key=lambda w: w.start_ms)
        run = [mine[0]]
        for w in mine[1:]:
            if w.start_ms - run[-1].end_ms >= PAUSE_MIN_MS:
                out.append(run)
                run = []
            run.append(w)
        out.append(run)
    return sorted(out, key=lambda r: (r[0].start_ms, r[0].code))


def _utterances(words: list[TimedWord]) -> list[list[list[TimedWord]]]:
    """Consecutive stretches of one speaker → one utterance (a list of stretches)."""
    out: list[list[list[TimedWord]]] = []
    for stretch in _stretches(words):
        if out and out[-1][-1][0].code == stretch[0].code:
            out[-1].append(stretch)
        else:
            out.append([stretch])
    return out


def _mark(tokens: list[str], chosen: list[int], opening: str, closing: str) -> None:
    if chosen:
        tokens[chosen[0]] = opening + tokens[chosen[0]]
        tokens[chosen[-1]] += closing


def _main_tier(utt: list[list[TimedWord]], before: tuple[int, int] | None, after: tuple[int, int] | None) -> str:
    """One utterance's text: words, timed pauses, overlap marks against its neighbours, the bullet."""
    flat = [w for stretch in utt for w in stretch]
    tokens = [STRUCTURE_RE.sub("", w.text) or "xxx" for w in flat]  # xxx: CHAT's unintelligible word
    if after is not None:  # the next utterance starts inside this one
        _mark(tokens, [i for i, w in enumerate(flat) if w.end_ms > after[0] and w.start_ms < after[1]], "⌈", "⌉")
    if before is not None:  # this one starts inside the previous one
        _mark(tokens, [i for i, w in enumerate(flat) if w.start_ms < before[1] and w.end_ms > before[0]], "⌊", "⌋")
    parts, i = [], 0
    for k, stretch in enumerate(utt):
        if k:
            parts.append(f"({(stretch[0].start_ms - utt[k - 1][-1].end_ms) / 1000:.1f})")
        parts += tokens[i : i + len(stretch)]
        i += len(stretch)
    return f"{' '.join(parts)} {NAK}{flat[0].start_ms}_{flat[-1].end_ms}{NAK}"


def write_chat(speakers: list[Speaker], words: list[TimedWord], media: str = "", comments: tuple[str, ...] = ()) -> str:
    """The CHAT file's text (module doc); ``media`` names the recording the bullets point into."""
    known = {s.code for s in speakers}
    if unknown := sorted({w.code for w in words} - known):
        raise ValueError(f"words of speakers {unknown} not in the participants {sorted(known)}")
    lines = ["@UTF8", "@Begin", "@Languages:\teng", "@Participants:\t" + ", ".join(_participant(s) for s in speakers),
             "@Options:\tCA", *(_id_line(s) for s in speakers)]
    if media:
        lines.append(f"@Media:\t{media}, audio")
    lines += [f"@Comment:\t{' '.join(c.split())}" for c in comments]
    utts = _utterances([w for w in words if w.end_ms >= w.start_ms >= 0]) if words else []
    spans = [(u[0][0].start_ms, u[-1][-1].end_ms) for u in utts]
    for k, utt in enumerate(utts):
        before = spans[k - 1] if k and spans[k][0] < spans[k - 1][1] else None
        after = spans[k + 1] if k + 1 < len(utts) and spans[k + 1][0] < spans[k][1] else None
        lines.append(f"*{utt[0][0].code}:\t{_main_tier(utt, before, after)}")
    lines.append("@End")
    return "\n".join(lines) + "\n"
