"""What every TTS engine provides to the TTS core (``core.py``).

The core sanitises agent text for the engine's ``text_style`` (``sanitize.py``), cuts pause
tokens out as exact silence when ``handles_pauses`` is true, and calls ``synthesize`` on each
piece of text. An engine never sees a pause token, never reads a clock and never touches the bus.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

import numpy as np


class TtsLoadError(RuntimeError):
    """An engine cannot load (missing package, model, or an unknown voice); the message says
    what was wrong and what is allowed."""


class TtsBackend(Protocol):
    name: str  # "piper", "espeak", "bark", "fastspeech2"
    sample_rate: int  # rate of every array synthesize yields
    # plain: pauses become silence, events/fillers are spoken or dropped (Piper, espeak, FastSpeech2);
    # bark: pauses become "...", events become [laughs]-style cues (reference-io-spec §3.5–3.6)
    text_style: Literal["plain", "bark"]
    handles_pauses: bool  # True: the core renders pause tokens as exact silence between pieces

    def voices(self) -> list[str]:
        """The voices this engine offers (what the UI lists)."""
        ...

    def set_voice(self, voice: str) -> None:
        """Switch voice; "" = the engine's default. Unknown voice → ValueError naming the allowed ones."""
        ...

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """int16 mono audio for sanitised ``text`` (never empty), streamed in pieces as they are
        rendered (e.g. one per sentence) so the first sound can play before the rest exists."""
        ...
