"""Predictive lookahead (reference spec §8): the agent's guess of how the user's turn ends and
what it will answer, the reply cache, and what the TTS holds pre-rendered.

While the user holds the floor the core asks, each cycle, whether the last prediction still
holds: the cosine similarity of its completion's embedding with the embedding of what the user
actually said since (``≥ similarity_threshold`` keeps it; −1 when there is no usable embedding,
1 when nothing new was said). A kept prediction is probed with one token; otherwise a new one is
made. A prediction's ``context`` is the transcript body it was made on, so "what was said since"
is always the text that extends it: it follows trims and a growing trailing pause, and a rewrite
of that text (a revised partial) voids it — the reference kept a character offset that rewrites
silently misaligned (§16.10). The cache holds only agent replies (the reference refilled it with
any speaker's), and a reply identical to the one already pre-rendered is not sent again.

A prediction made with no completion at all (``as_stood``: the switch schedule's reply to the
words as they stood, ``schedule.py``) holds while the words differ from its context by at most ``CLOSE_WORDS`` at the
end (``words_close``): a final that revises or adds the last word or two — the common case at the
speech end — keeps the reply ready instead of generating it again after the decision.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from rtchat.nodes.agent.protocol import LanguageModel
from rtchat.nodes.agent.transcript import PAUSE_RE, Transcript, clean_output


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; −1 when either vector is unusable (zero, mismatched, not finite)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.shape != b.shape:
        return -1.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (na > 0 and nb > 0 and np.isfinite(na) and np.isfinite(nb)):
        return -1.0
    return float(np.dot(a, b) / (na * nb))


CLOSE_WORDS = 2  # a reply made for the words as they stood holds while at most this many words differ at the end


def words_close(before: str, after: str) -> bool:
    """``after`` says what ``before`` said, pauses aside, but for its last CLOSE_WORDS words at most
    (a word the final revised or added: "with my fae" → "with my family", "back from a" → "back
    from a trip"); one of before's own words at most is taken back."""
    a, b = PAUSE_RE.sub("", before).split(), PAUSE_RE.sub("", after).split()
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1
    return len(a) - same <= 1 and len(b) - same <= CLOSE_WORDS


@dataclasses.dataclass
class Prediction:
    """One lookahead (§8.1). ``context`` is the body it was made on (None once that text changed)."""

    context: str | None
    embedding: np.ndarray | None  # of the predicted completion: kept while the actual words stay similar
    as_stood: bool = False  # no completion: a reply to the words as they stood, kept while they stay close


class Predictor:
    """The prediction, the agent's cached reply chunks, and what the TTS holds pre-rendered."""

    def __init__(self):
        self.prediction: Prediction | None = None
        self.cache: collections.deque[str] = collections.deque()
        self.prerendered: tuple[str, ...] | None = None

    def clear(self) -> None:
        """At a floor change: the prediction and its reply are stale."""
        self.prediction = None
        self.cache.clear()
        self.prerendered = None

    def similarity(self, t: Transcript, model: LanguageModel) -> float:
        """§8.2 step 1, on text: −1 without a usable prediction, 1 with nothing new."""
        p = self.prediction
        if p is None or p.context is None:
            return -1.0
        body = t.body
        if p.as_stood:  # a reply after the words as they stood (the switch schedule's)
            return 1.0 if words_close(p.context, body) else -1.0
        if p.embedding is None:
            return -1.0
        if not body.startswith(p.context):
            p.context = None
            return -1.0
        actual = body[len(p.context) :]
        if not actual:
            return 1.0
        embedding = model.embed_continuation(t.text[: t.prefix_len + len(p.context)], actual)
        return -1.0 if embedding is None else cosine(p.embedding, embedding)

    def predict(self, t: Transcript, prediction: Prediction, reply: str, model: LanguageModel, n_tokens: int):
        """Adopt a new prediction; its reply (the agent's words, "" for none) becomes the cache.
        Returns the chunks to pre-render, or None when the TTS already holds them (or none)."""
        self.prediction = prediction
        self.cache.clear()
        if not reply:
            return None
        chunks = tuple(c for c in map(clean_output, model.split_tokens(reply, n_tokens)) if c.strip())
        self.cache.extend(chunks)
        if not chunks or chunks == self.prerendered:
            return None
        self.prerendered = chunks
        return chunks

    def follow_trim(self, removed: str, inserted: str) -> None:
        """The body lost ``removed`` from its start and gained ``inserted`` (Transcript.trim)."""
        p = self.prediction
        if p is not None and p.context is not None:
            p.context = inserted + p.context[len(removed) :] if p.context.startswith(removed) else None

    def follow_pause(self, old_body: str, new_body: str) -> None:
        """The trailing pause grew: a context that ended with it goes on ending with it."""
        p = self.prediction
        if p is not None and p.context == old_body:
            p.context = new_body
