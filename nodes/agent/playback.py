"""Barge-in: which of the agent's chunks really played, and what user words over unplayed ones do.

A part of ``AgentCore`` (core.py). When user words (partial or final) arrive while the agent holds
the floor and some of its word chunks of this turn have not been reported by ``audio.played``, and
the words would open a new user turn (not merely revise a partial that began before the agent's
turn, §5), the model decides who speaks next: the candidate sequence is the agent's turn cut to
the chunks that really played, then the user's words as a new ``S1:`` turn; ``max_new_tokens``
tokens are generated from it. If they start (after any pauses) with ``S2`` the agent goes on — the
words were a backchannel and are not written (a held final commits the pending partial as it
stands) — decision ``hold``. Otherwise it yields: ``agent.cancel(gen+1)``, the transcript becomes
the candidate (the agent's turn keeps only what played; nothing played → no agent turn at all),
the floor is the user's — decision ``yield``. Playback is tracked once the session has shown it
has audio (an ``asr.*`` event or an ``audio.played``); in a typed session without audio every
chunk counts as played and user words simply take the floor. A release of n chunks occupies chunk
indices ``chunk … chunk+n-1``; a chunk that holds only pauses needs no report.
"""

from __future__ import annotations

from rtchat.bus.events import AgentCancel, AudioPlayed, Event
from rtchat.nodes.agent.transcript import AGENT, PAUSE_RE, Transcript, parse_turn, speaker_after_pauses_known


class Playback:
    """The agent's chunks of one turn, and which of them audio.played reported."""

    def __init__(self):
        self.next_chunk = 0
        self.spoken: list[int] = []  # chunks with words, in order
        self.played: set[int] = set()

    def sent(self, chunk: int, has_words: bool) -> None:
        if has_words:
            self.spoken.append(chunk)

    def first_unplayed(self) -> int | None:
        return next((c for c in self.spoken if c not in self.played), None)

    def any_played(self) -> bool:
        return any(c in self.played for c in self.spoken)


class BargeIn:
    """Playback tracking and barge-in of ``AgentCore`` (module doc); the state is the core's."""

    def _played(self, ev: AudioPlayed) -> None:
        self.counters["audio_played"] += 1
        self.audio_seen = True
        if ev.turn == self.turn and ev.gen == self.gen:
            self.playback.played.add(ev.chunk)

    def _unplayed(self) -> bool:
        return (self.audio_seen or self.voice) and self.playback.first_unplayed() is not None

    def _cancel(self) -> list[Event]:
        self.gen += 1
        self.counters["cancels"] += 1
        return [AgentCancel(turn=self.turn, gen=self.gen)]

    def _barge_in(self, words: str, partial: bool, now_ns: int) -> list[Event]:
        """User words over unplayed agent output: the model says who speaks next (module doc)."""
        candidate = self.t.copy()
        self._cut_to_played(candidate)
        self._rewrite(candidate, words, partial)
        prediction = self.model.generate(candidate.text, self.cfg.max_new_tokens, speaker_after_pauses_known).text
        self.counters["generations"] += 1
        speaker, _ = parse_turn(PAUSE_RE.sub("", prediction))
        if speaker == AGENT:
            if not partial:
                self.t.partial_pos = None
            return [self._cycle_event(prediction, "hold")]
        out = self._cancel()
        self.t = candidate
        self._changed = True
        self._floor_changed(AGENT, now_ns)
        return out + [self._cycle_event(prediction, "yield")]

    def _cut_to_played(self, t: Transcript) -> None:
        """The agent's turn cut before its first unplayed chunk; with nothing played, removed."""
        first = self.playback.first_unplayed()
        if not self.playback.any_played() and "turn" in t.marks:
            t.replace_tail(t.marks["turn"], "")
        elif ("chunk", first) in t.marks:
            t.replace_tail(t.marks[("chunk", first)], "")
        if t.ends_with_bare_tag():  # an utterance whose words never played
            t.replace_tail(t.text.rindex(" "), "")
