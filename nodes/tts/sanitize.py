"""Agent transcript text → what a TTS engine should say (reference-io-spec §3.5–3.6).

The agent writes TalkBank CHAT-style text: pause tokens ``(0.4)`` / ``<p> (0.8)``, breaths and
unintelligible words (``hhh``, ``ihhh``, ``xxx``, ``hx``), events (``&=laughs``), comments
(``[% sings]``), ``0 [=! whispers]`` and ``0.`` (an utterance without words). Two styles:

- ``plain`` (Piper, espeak, FastSpeech2): pauses are cut out as exact ``Silence`` pieces (or
  dropped when the engine does not render silences); breaths, unintelligible words, comments and
  events are dropped, except laughter, which is spoken as "ha ha".
- ``bark``: pauses become ``...`` inside the text (Bark renders hesitation, not timed silence);
  breaths become ``[breath]``, events and comments become Bark's ``[laughs]``-style cues, a
  singing cue becomes ``♪``.

``split`` turns one chunk of agent text into ``Speech`` and ``Silence`` pieces: speech is cut at
sentence ends (what Piper renders at a time anyway, so the first sentence can play while the rest
renders) and, within a sentence, at word boundaries so no piece is longer than ``max_chars``.
CHAT's untimed short pause ``(.)`` has no length to render: it is dropped in plain style and
becomes ``...`` in Bark style.

Fixed against the reference: ``0.`` is removed only as a word of its own ("10.50" stays "10.50",
the reference said "150"); unintelligible ``xxx`` is dropped in Bark style too instead of becoming
a breath; only a cue about singing becomes ``♪`` (the reference also turned ``[closing]`` into a
note); runs of dots collapse to one ``...``; stray brackets and parentheses never reach an engine.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

Style = Literal["plain", "bark"]
STYLES = ("plain", "bark")


@dataclasses.dataclass(frozen=True, slots=True)
class Speech:
    text: str  # sanitised, never empty


@dataclasses.dataclass(frozen=True, slots=True)
class Silence:
    seconds: float  # the pause token's value, > 0


Piece = Speech | Silence

PAUSE_RE = re.compile(r"(?:<p>\s*)?\((\d+(?:\.\d*)?|\.\d+)\)")  # (0.4), (1.), (.5), <p> (0.8)
SHORT_PAUSE_RE = re.compile(r"(?:<p>\s*)?\(\.\)")  # CHAT's untimed short pause
_HX_WORD = re.compile(r"(?<!\S)(i?)([hx]+)[.,!?;:]*(?!\S)", re.IGNORECASE)
_EVENT = re.compile(r"&=([\w:'-]+)")
_FILLER = re.compile(r"&[-+~]")  # &-um (filler: keep the word), &+fr (fragment), &~ (nonword)
_ZERO_BEFORE_BRACKET = re.compile(r"(?<![\w.])0\s*(?=\[)")
_ZERO_UTTERANCE = re.compile(r"(?<![\w.])0\.(?!\d)")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_SING = re.compile(r"\bsing(?:s|ing)?\b|\bsong\b|\bhums?\b|\bhumming\b", re.IGNORECASE)
_STRAY = re.compile(r"[()<>\[\]]")
_DOTS = re.compile(r"(?:\s*\.){2,}")  # "yeah. ..." and "... ..." → one "..."
_SPACES = re.compile(r"\s+")
_LEADING = re.compile(r"^[\s.,;:!?]+")
_SPEAKABLE = re.compile(r"[^\W_]|♪")
_SENTENCE_END = re.compile(r"(?<=[^.\s][.!?])\s+(?=\S)")
MIN_SENTENCE_CHARS = 12  # a shorter sentence ("Yes.", "Mr.") is rendered together with the next


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown text style {style!r}; allowed: {', '.join(STYLES)}")


def _event(match: re.Match, style: Style) -> str:
    name = match.group(1).replace(":", " ").replace("_", " ").lower()
    if style == "bark":
        return f" [{name}] "
    return " ha ha " if name.startswith("laugh") else " "


def _hx_word(match: re.Match, style: Style) -> str:
    if style == "bark" and "h" in match.group(2).lower():
        return " [breath] "
    return " "  # unintelligible (x…) or a breath in plain style: nothing to say


def _bracket(match: re.Match, style: Style) -> str:
    """A CHAT annotation: dropped in plain style; a Bark cue when it names something Bark does."""
    if style == "plain":
        return " "
    inner = match.group(1).lstrip("%=!:* ").strip().lower()
    if _SING.search(inner):
        return " ♪ "
    return f" [{inner}] " if re.fullmatch(r"[a-z][a-z ']*", inner) else " "


def sanitize(text: str, style: Style = "plain") -> str:
    """What the engine should say for ``text``; "" when nothing is left to say. Pause tokens
    become ``...`` in Bark style and are dropped in plain style (``split`` renders them)."""
    _check_style(style)
    dots = "..." if style == "bark" else " "
    text = PAUSE_RE.sub(dots, text)
    text = SHORT_PAUSE_RE.sub(dots, text).replace("<p>", " ")
    text = _ZERO_BEFORE_BRACKET.sub(" ", text)
    text = _BRACKET.sub(lambda m: _bracket(m, style), text)
    text = _EVENT.sub(lambda m: _event(m, style), text)
    text = _FILLER.sub("", text)
    text = _HX_WORD.sub(lambda m: _hx_word(m, style), text)
    if style == "bark":  # keep the cues' brackets, drop any other stray ones
        cues = re.findall(r"\[[a-z][a-z ']*\]", text)
        text = re.sub(r"\[[a-z][a-z ']*\]", "\x00", text)
        text = _STRAY.sub(" ", text)
        for cue in cues:
            text = text.replace("\x00", cue, 1)
    else:
        text = _STRAY.sub(" ", text)
    text = _ZERO_UTTERANCE.sub(" ", text)
    text = _DOTS.sub("...", text)
    text = _LEADING.sub("", _SPACES.sub(" ", text)).strip()
    return text if _SPEAKABLE.search(text) else ""


def split(text: str, style: Style = "plain", max_chars: int = 400, silences: bool = True) -> list[Piece]:
    """One chunk of agent text as the pieces to render, in order (module doc). ``silences``:
    the engine renders pause tokens as exact silence (plain style only); otherwise they are
    handled inside the text by ``sanitize``."""
    _check_style(style)
    if style == "bark" or not silences:
        return [Speech(t) for t in _cut(sanitize(text, style), max_chars)]
    pieces: list[Piece] = []
    pos = 0
    for match in PAUSE_RE.finditer(text):
        pieces += [Speech(t) for t in _cut(sanitize(text[pos : match.start()], style), max_chars)]
        seconds = float(match.group(1))
        if seconds > 0:
            pieces.append(Silence(seconds))
        pos = match.end()
    pieces += [Speech(t) for t in _cut(sanitize(text[pos:], style), max_chars)]
    return pieces


def _cut(text: str, max_chars: int) -> list[str]:
    """Sentences (short ones joined to the next), each cut at word boundaries to ≤ max_chars."""
    if not text:
        return []
    sentences: list[str] = []
    carry = ""
    for sentence in _SENTENCE_END.split(text):
        sentence = f"{carry} {sentence}" if carry else sentence
        if len(sentence) < MIN_SENTENCE_CHARS:
            carry = sentence
            continue
        sentences.append(sentence)
        carry = ""
    if carry:
        if sentences and len(sentences[-1]) + 1 + len(carry) <= max_chars:
            sentences[-1] += " " + carry
        else:
            sentences.append(carry)
    return [part for sentence in sentences for part in _cut_words(sentence, max_chars)]


def _cut_words(text: str, max_chars: int) -> list[str]:
    parts = []
    while len(text) > max_chars:
        window = text[: max_chars + 1]
        cut = window.rfind(", ", max_chars // 2) + 1 or window.rfind(" ")  # after a comma in the second half, else a space
        if cut <= 0:
            cut = max_chars  # one word longer than max_chars
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        parts.append(text)
    return [p for p in parts if _SPEAKABLE.search(p)]


def normalise(text: str) -> str:
    """Whitespace-normalised text: how cached chunks are matched to a release."""
    return " ".join(text.split())
