"""What the agent core needs from a language model, and nothing more.

The core speaks in transcript *text*: it hands the model the whole sequence string each time.
A real implementation (``lm.AgentLM``) keeps its KV cache across calls and re-encodes only
from the first token that changed; a scripted fake (tests) answers from a script.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np


@dataclasses.dataclass(frozen=True, slots=True)
class Generation:
    text: str  # the decoded continuation, with its natural leading space; pad/eos removed
    n_tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class Lookahead:
    """A prediction of the rest of the user's turn and of the next turn after it."""

    completion: str  # the predicted rest of the current turn (leading space kept; "" = a switch now)
    response: str  # from the first " S" token on, e.g. " S2: sure, I think" (a second " S" is not included)
    completion_tokens: int
    embedding: np.ndarray | None  # mean last-layer hidden state over the completion tokens; None if none


class LanguageModel(Protocol):
    def generate(self, text: str, max_new_tokens: int, done: Callable[[str], bool] | None = None) -> Generation:
        """Continue ``text`` by up to max_new_tokens with the configured decoding; stop early at
        the first token after which ``done(continuation so far)`` is true (the tokens before are
        those of the full generation)."""

    def lookahead(
        self, text: str, max_new_tokens: int, max_response_tokens: int, abort: Callable[[], bool] | None = None
    ) -> Lookahead | None:
        """Generate until the second " S" token or max_response_tokens after the first (spec §8.2).
        ``abort()``, asked after every token, cuts it short: None (no prediction) when it did."""

    def embed_continuation(self, context: str, continuation: str) -> np.ndarray | None:
        """Mean last-layer hidden state over ``continuation``'s tokens when it follows ``context``."""

    def next_speaker_prob(self, text: str, tag: str) -> float:
        """The probability that ``text`` continues with the speaker tag ``tag`` (e.g. " S2:") now:
        the listening decision, one forward pass over what is new (issue 19)."""

    def next_speaker_probs(self, texts: list[str], tag: str) -> list[float]:
        """``next_speaker_prob`` of each text; texts that share a beginning (one transcript, then
        pauses of several lengths) in one forward pass (the switch schedule, issue 20)."""

    def split_tokens(self, text: str, n: int) -> list[str]:
        """Re-tokenise ``text`` and split it into pieces of n tokens, each decoded with its leading space."""

    def timings_ns(self) -> dict[str, int]:
        """Time spent in the last call(s) since the previous timings_ns(), by kind (for agent.cycle)."""

    def forwards(self) -> dict[str, int]:
        """Forward passes of the model since the previous forwards(), by kind (for agent.cycle)."""
