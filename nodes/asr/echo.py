"""Self-echo suppression: drop committed words that are the agent's own voice heard back.

Without a headset the microphone hears the speaker, and the recogniser writes the agent's
words as the user's (reference §5.4, §6.3 #1). The audio node reports what really played
(``audio.played``: its text and start/end on the capture clock); mapped to audio time, those
chunks say when the agent was audible and what it said. A committed word is dropped when
- its [start, end] overlaps a played chunk widened by ``margin_s`` on both sides (the
  acoustic path's delay and the recogniser's timing error), and
- its normalised text is one of that chunk's normalised words.
A user who says the agent's own word during its playback loses that word; words that differ,
and all words outside playback, are kept. Mode ``none`` drops nothing (headset, or the
browser's echo cancellation). Chunks older than ``horizon_s`` behind the newest are forgotten.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Literal

from rtchat.bus.events import Word
from rtchat.nodes.asr.policy import normalise

EchoMode = Literal["none", "played_words"]
ECHO_MODES = ("none", "played_words")


@dataclasses.dataclass(frozen=True)
class EchoConfig:
    mode: EchoMode = "played_words"  # none: keep every word
    margin_s: float = 0.5  # a word this close to a played chunk counts as overlapping it
    horizon_s: float = 30.0  # played chunks kept, behind the newest one

    def __post_init__(self):
        if self.mode not in ECHO_MODES:
            raise ValueError(f"echo mode {self.mode!r}: allowed {', '.join(ECHO_MODES)}")
        if self.margin_s < 0 or self.horizon_s <= 0:
            raise ValueError(f"need margin_s >= 0 and horizon_s > 0, got {self.margin_s}, {self.horizon_s}")


@dataclasses.dataclass(frozen=True, slots=True)
class PlayedSpan:
    """One played chunk of agent audio, in audio time, with its normalised words."""

    start_ns: int
    end_ns: int
    words: frozenset[str]


def capture_offset_ns(t_capture_ns: int, audio_ns: int) -> int:
    """Capture-clock time minus audio time for one input frame (``t_capture_ns`` of the frame,
    ``audio_ns`` of its first sample). Subtracting it maps ``audio.played`` times to audio time."""
    return t_capture_ns - audio_ns


class EchoFilter:
    """Remembers recent playback and filters committed words against it (module doc)."""

    def __init__(self, cfg: EchoConfig | None = None):
        self.cfg = cfg or EchoConfig()
        self.margin_ns = round(self.cfg.margin_s * 1e9)
        self.horizon_ns = round(self.cfg.horizon_s * 1e9)
        self.spans: collections.deque[PlayedSpan] = collections.deque()
        self.dropped = 0

    def played(self, start_ns: int, end_ns: int, text: str) -> None:
        """One chunk played from start_ns to end_ns (audio time) carrying ``text``."""
        words = frozenset(filter(None, (normalise(w) for w in text.split())))
        if words and end_ns > start_ns:
            self.spans.append(PlayedSpan(start_ns, end_ns, words))
        newest = max(s.end_ns for s in self.spans) if self.spans else end_ns
        while self.spans and self.spans[0].end_ns < newest - self.horizon_ns:
            self.spans.popleft()

    def is_echo(self, word: Word) -> bool:
        if self.cfg.mode == "none":
            return False
        key = normalise(word.text)
        m = self.margin_ns
        return any(word.start_ns <= s.end_ns + m and word.end_ns >= s.start_ns - m and key in s.words for s in self.spans)

    def filter(self, words: Iterable[Word]) -> tuple[tuple[Word, ...], tuple[Word, ...]]:
        """Split words into (kept, dropped as echo)."""
        kept, dropped = [], []
        for w in words:
            (dropped if self.is_echo(w) else kept).append(w)
        self.dropped += len(dropped)
        return tuple(kept), tuple(dropped)

    def reset(self) -> None:
        self.spans.clear()
