"""The agent's decision cycle and what it says: a part of ``AgentCore`` (core.py).

The cycle (reference §6). The history is trimmed (§4.6). Then:
- user's floor: the listening decision is one look at the model's probability that the agent's
  tag comes next (``model.next_speaker_prob``: one forward pass over the words that are new, no
  tokens generated). Below ``switch_threshold``: ``listen``. At or above it: ``switch`` — the
  agent's reply goes out: the opening, else the cached lookahead reply while its prediction is
  kept (``agent.release``), else words generated after the agent's tag (``agent.say``): with
  ``first_chunk_words`` N > 0, the first N words go out as soon as they are complete, and the
  next cycle — what follows the first chunk, released or said — is due at once, while it plays
  (0: the words up to the first pause, the next cycle ``interval_s`` later); none (an empty
  reply) is ``listen``.
- lookahead on (§8): while listening, a kept prediction (cosine similarity of the predicted and
  the actual completion ≥ ``similarity_threshold``; −1 with no usable embedding, 1 with nothing
  new) stays — unless it holds no reply and the switch schedule's reply to the words as they
  stand was not tried (``_schedule_wants_reply``); a stale one is renewed right after the
  decision went out — a tick of its own (``_renew_due``), so the decision never waits for the
  lookahead's tokens and words that arrived meanwhile are read first. A renewed prediction that
  has the agent reply sends its chunks as ``agent.prerender``. A renewal stops early, with no
  prediction, when the speech stop (``vad.pause``, ``vad.end``) or a control event is waiting
  (``Core.interrupted``: the node's shell looks at the bus after every token), so the decision at
  the speech end never waits for the lookahead's tokens.
- agent's floor: the opening utterance, else the next cached chunk(s) (``agent.release``), else
  7 generated tokens: words → ``agent.say`` (``continue``); ``S2:`` → a new agent utterance;
  ``S1`` (8b), another tag, or nothing → the agent holds the floor silently: the trailing pause
  grows by ``interval_s`` and ``agent.pause(interval)`` goes out (``wait``).
The agent never yields by prediction; the floor passes to the user only when user words arrive.
Generating stops as soon as the tokens so far settle the decision (``S1`` on the agent's floor,
the speaker after the pauses at a barge-in): the decision is the one the full generation gives.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rtchat.bus.clock import s
from rtchat.bus.events import AgentPause, AgentPrerender, AgentRelease, AgentSay, Event
from rtchat.nodes.agent.lookahead import Prediction
from rtchat.nodes.agent.playback import Playback
from rtchat.nodes.agent.transcript import (
    AGENT,
    END_PAUSE_RE,
    LEADING_PAUSE_RE,
    NS_PER_TENTH,
    PAUSE_RE,
    TAG_START_RE,
    agent_says_nothing,
    canonical_pauses,
    clean_output,
    cut_after_first,
    cut_output,
    drop_incomplete_pause,
    ends_in_incomplete_pause,
    first_pause_tenths,
    join_fragment,
    parse_response,
    parse_turn,
    pause_tenths,
    strip_unfinished_pauses,
)

MAX_GENERATIONS = 3  # generate calls per cycle; an empty or unfinished result after these is silence
def _pause_after_words(text: str) -> int | None:
    """Where a pause begins (``(`` or ``<p>``) after the text's first word, or None."""
    seen_word = False
    for m in re.finditer(r"\S+", text):
        if m.group() == "<p>" or m.group().startswith("("):
            if seen_word:
                return m.start()
        else:
            seen_word = True
    return None


def _first_words(text: str) -> str:
    """The text up to where a pause begins after its words."""
    at = _pause_after_words(text)
    return text if at is None else text[:at].rstrip()


# a word: not a pause or its start ("<", "(0."), not a speaker tag or its "S"
_WORD_RE = re.compile(r"(?<!\S)(?!S\d|S(?:\s|$))[\w'][^\s]*")


def _word_ends(text: str) -> list[int]:
    """Where each word of the text ends; pauses, speaker tags and their unfinished starts are no words."""
    return [m.end() for m in _WORD_RE.finditer(text)]


def _past_words(text: str, n: int) -> bool:
    """The text holds more than n words: its first n are complete (a token began the next)."""
    return n > 0 and len(_word_ends(text)) > n


def _cut_words(text: str, n: int) -> str:
    """The text's first n words, with what lies between them."""
    ends = _word_ends(text)
    return text if n <= 0 or len(ends) <= n else text[: ends[n - 1]]


class Cycle:
    """The decision cycle and the speaking of ``AgentCore`` (module doc); the state is the core's."""

    def _cycle_due(self) -> int:
        interval = s(self.cfg.interval_s)
        if self.t.speaker == AGENT:
            if self._more_now:  # a switch's first chunk went out: what follows it, now
                return self.last_cycle_ns
            return self.last_cycle_ns + max(interval, self.agent_wait_ns)
        scheduled = self._schedule_due()  # schedule.py: at vad.pause/vad.end, then at the pause steps
        if scheduled is not None:
            return scheduled
        return self.last_cycle_ns + max(min(interval, s(self.cfg.listen_interval_s)), self.agent_wait_ns)

    def _cycle(self, now_ns: int) -> list[Event]:
        self.counters["cycles"] += 1
        self.last_cycle_ns = now_ns
        self.agent_wait_ns = 0
        self._decide_now = False
        self._more_now = False
        self._trim()
        if self.t.speaker == AGENT:
            return self._agent_cycle()
        if self.cfg.lookahead:
            return self._lookahead_cycle()
        return self._listen_cycle()

    def _trim(self) -> None:
        trimmed = self.t.trim(self.cfg.max_history_words, self.cfg.trim_to_words)
        if trimmed is None:
            return
        self.counters["trims"] += 1
        self._changed = True
        self.look.follow_trim(*trimmed)

    def _generate(self, context: str, settled: Callable[[str], bool] | None = None, first_words: bool = False,
                  max_words: int = 0) -> str:
        """§6 step 6, bounded: cut after the first complete pause; complete an unfinished one
        (stop at ``)``); after MAX_GENERATIONS calls an empty or unfinished result is silence.
        Generating stops early once ``settled(prediction so far)`` says the decision is known.
        ``first_words``: the agent's first words after its tag, which the user is waiting for —
        generating stops where a pause begins after words, and the pause is left out (the next
        cycle writes it, on the agent's floor); completing it took up to two more calls. With
        ``max_words``, it stops as well once that many words are complete (the next one begun)."""
        text = ""
        for _ in range(MAX_GENERATIONS):
            if first_words:
                def done(piece: str, before: str = text) -> bool:
                    return _pause_after_words(before + piece) is not None or _past_words(before + piece, max_words)
            else:
                done = None if settled is None else (lambda piece, before=text: settled(before + piece))
            piece = self.model.generate(context + text, self.cfg.max_new_tokens, done).text
            self.counters["generations"] += 1
            if not piece.strip():
                self.counters["empty_generations"] += 1
            text += cut_after_first(piece, END_PAUSE_RE if text.strip() else PAUSE_RE)
            if first_words and PAUSE_RE.sub("", drop_incomplete_pause(text)).strip():
                return _cut_words(_first_words(drop_incomplete_pause(text)), max_words)
            if text.strip() and not ends_in_incomplete_pause(text):
                return text
        return drop_incomplete_pause(text)

    def _agent_text(self, fragment: str) -> str:
        """Model words as they may be written: one line, pauses canonical and capped; "" if empty."""
        max_tenths = s(self.cfg.max_agent_pause_s) // NS_PER_TENTH
        text = canonical_pauses(clean_output(fragment), self._interval_tenths, max_tenths, self.cfg.add_pause_token)
        text = cut_output(strip_unfinished_pauses(text))
        return "" if not text.strip() or TAG_START_RE.match(text.lstrip()) else text

    def _switch_now(self) -> bool:
        """The listening decision: P(the agent's tag comes next) ≥ switch_threshold — asked only
        while the VAD does not hear the user speak: the agent never takes the turn over the
        user's voice (issue 20), and the probe's time goes to the silence, when it matters."""
        if self.vad_open:
            self.counters["switch_held_by_vad"] += 1
            self.p_switch = 0.0
            return False
        self.counters["floor_probes"] += 1
        self.p_switch = self._scheduled_prob()  # schedule.py: a look-up when the schedule has this transcript
        return self.p_switch >= self.cfg.switch_threshold

    def _probed(self) -> str:
        """What a listening cycle's ``agent.cycle`` records as its prediction: the probability it decided on."""
        return f"P({AGENT}:)={self.p_switch:.3f}"

    def _listen_cycle(self) -> list[Event]:
        """Lookahead off, user's floor: words are generated only when the probe says switch."""
        if self._switch_now():
            fired = self._fired()
            spoken = self._reply()
            if spoken:
                return fired + spoken + [self._cycle_event(self._probed(), "switch")]
        return [self._cycle_event(self._probed(), "listen")]

    def _lookahead_cycle(self) -> list[Event]:
        """§8.3 with the probe deciding: release the kept reply at a switch; renew a stale prediction after."""
        pred = self.look.prediction
        kept = pred is not None and self.look.similarity(self.t, self.model) >= self.cfg.similarity_threshold
        if kept and not self.look.cache and self._schedule_wants_reply():
            kept = False  # a guess that the user goes on, where the schedule fires: its reply is due
        if kept:
            self.counters["lookaheads_kept"] += 1
        elif self.look.cache:
            self.look.cache.clear()  # a reply predicted for words the user did not say
            self.counters["lookaheads_dropped"] += 1
        if self._switch_now():
            fired = self._fired()
            spoken = self._reply()
            if spoken:
                return fired + spoken + [self._cycle_event(self._probed(), "switch")]
            self.look.prediction = None
            kept = False
        # a stale prediction is renewed while the user speaks (or when no VAD is heard of, typed
        # input): in a silence the VAD heard, the decisions every pause step come first
        self._renew_due = not kept and (self.vad_open or not self.counters["vad_events"])
        return [self._cycle_event(self._probed(), "listen")]

    def _renew(self) -> list[Event]:
        """The stale prediction's renewal, a tick after the decision that found it stale."""
        self._renew_due = False
        if self.t.speaker == AGENT or not self.cfg.lookahead:
            return []
        out: list[Event] = []
        self._predict(out)
        return out

    def _predict(self, out: list[Event]) -> None:
        """A new lookahead; its agent reply, chunked, replaces the cache and is pre-rendered. When
        the switch schedule has the transcript, the reply is the one the agent gives after the
        pause it fires on, or the next pause step (``_schedule_reply``), not a guess of the user's
        next words; the guess is made where that reply has no words."""
        if self._schedule_reply(out):
            return
        self.counters["lookaheads"] += 1
        la = self.model.lookahead(self.t.text, self.cfg.lookahead_max_tokens, self.cfg.response_max_tokens, self.interrupted)
        if la is None:  # cut short: the speech stopped (vad.pause/vad.end waits), and the decisions come first
            self.counters["lookaheads_interrupted"] += 1
            return
        speaker, words = parse_response(la.response)
        reply = self._agent_text(words) if speaker == AGENT and not self.opening else ""  # an opening replaces it
        self._adopt(Prediction(self.t.body, la.embedding), reply, out)

    def _adopt(self, prediction: Prediction, reply: str, out: list[Event]) -> None:
        """A new prediction: its reply, chunked, replaces the cache and is pre-rendered."""
        chunks = self.look.predict(self.t, prediction, reply, self.model, self.cfg.max_new_tokens)
        if chunks:
            self.counters["prerenders"] += 1
            out.append(AgentPrerender(turn=self.turn, gen=self.gen, chunks=chunks))

    def _reply(self) -> list[Event]:
        """The agent's first words at a lookahead switch: opening, cached reply, or generated."""
        if self.opening:
            text, self.opening = self.opening, None
            self.look.cache.clear()
            self._switch()
            return [self._say(text)]
        if self.look.cache:
            self._switch()
            self._more_now = self.cfg.first_chunk_words > 0  # its first words play: what follows is generated now
            return [self._release()]
        generated = self._generate(self.t.text + f" {AGENT}:", first_words=True, max_words=self.cfg.first_chunk_words)
        text, _ = self._continuation(generated)
        if not text:
            return []
        self._switch()
        self._more_now = self.cfg.first_chunk_words > 0  # its first words play: what follows is generated now
        return [self._say(text)]

    def _agent_cycle(self) -> list[Event]:
        """The agent holds the floor: opening, cached chunks, or the model's next words (8a–c)."""
        if self.opening:
            text, self.opening = self.opening, None
            return [self._say(text), self._cycle_event(text, "continue")]
        if self.look.cache:
            release = self._release()
            return [release, self._cycle_event(release.text, "continue")]
        prediction = self._generate(self.t.text, agent_says_nothing)
        text, new_utterance = self._continuation(prediction)
        if not text:
            return self._wait(prediction)
        if new_utterance:
            self.t.open_turn(AGENT)
        return [self._say(text), self._cycle_event(prediction, "continue")]

    def _continuation(self, prediction: str) -> tuple[str, bool]:
        """The agent's words in a prediction made while it speaks (8a/8c): words up to the next
        tag; after a leading S2: (a new utterance of the agent, flag True); none after S1 (8b) or
        any other tag."""
        speaker, words = parse_turn(prediction)
        if speaker is None:
            return self._agent_text(cut_output(prediction)), False
        return (self._agent_text(words), True) if speaker == AGENT else ("", False)

    def _wait(self, prediction: str) -> list[Event]:
        """8b: the agent holds the floor silently for one interval, written as a growing pause."""
        interval = s(self.cfg.interval_s)
        self._grow_pause(interval)
        self.agent_wait_ns = interval
        return [AgentPause(turn=self.turn, gen=self.gen, duration_ns=interval), self._cycle_event(prediction, "wait")]

    # ---------------------------------------------------------------- speaking

    def _switch(self) -> None:
        """The floor passes to the agent (a new turn)."""
        self.counters["switches"] += 1
        if self._schedule_decides():
            self.counters["schedule_fired"] += 1
        self.armed = False
        self.plan = None
        self.took_turn_ns = self.last_cycle_ns  # the cycle deciding now
        self.turn += 1
        self.playback = Playback()
        self.look.prediction = None
        self.look.prerendered = None
        self.silence_ns = None
        self.t.marks.clear()
        self.t.open_turn(AGENT)
        self.t.marks["turn"] = len(self.t.text) - len(f" {AGENT}:")

    def _append_chunk(self, text: str, chunk: int) -> str:
        """Append one output chunk; a pause it starts with merges into a pause the transcript
        ends with (one growing pause, as the model was trained on). Returns the text as sent."""
        text = join_fragment(self.t.text, text)
        rest = text
        lead = LEADING_PAUSE_RE.match(text)
        if lead and self.t.trailing_pause(self._interval_tenths):
            self._grow_pause(pause_tenths(lead.group(1), self._interval_tenths) * NS_PER_TENTH)
            rest = text[lead.end() :]
        self.t.marks[("chunk", chunk)] = len(self.t.text)
        self.t.append(rest)
        self.playback.sent(chunk, bool(PAUSE_RE.sub("", text).strip()))
        self._changed = True
        return text

    def _after_output(self, text: str) -> None:
        """The next cycle waits for the first pause the agent wrote (capped)."""
        tenths = first_pause_tenths(text, self._interval_tenths)
        if tenths is not None:
            self.agent_wait_ns = min(tenths * NS_PER_TENTH, s(self.cfg.max_agent_pause_s))

    def _say(self, text: str) -> AgentSay:
        chunk = self.playback.next_chunk
        self.playback.next_chunk += 1
        text = self._append_chunk(text, chunk)
        self._after_output(text)
        self.counters["says"] += 1
        return AgentSay(turn=self.turn, gen=self.gen, text=text, chunk=chunk)

    def _release(self) -> AgentRelease:
        """Cached chunks up to the first one that does not end inside a pause (§6 step 6)."""
        first = self.playback.next_chunk
        parts = []
        while self.look.cache:
            parts.append(self._append_chunk(self.look.cache.popleft(), self.playback.next_chunk))
            self.playback.next_chunk += 1
            if not ends_in_incomplete_pause(self.t.text):
                break
        if ends_in_incomplete_pause(self.t.text):  # a malformed cache: never leave a pause open
            self.t.text = drop_incomplete_pause(self.t.text)
            parts[-1] = drop_incomplete_pause(parts[-1])
        text = "".join(parts)
        self._after_output(text)
        self.counters["releases"] += 1
        return AgentRelease(turn=self.turn, gen=self.gen, n_chunks=len(parts), text=text, chunk=first)
