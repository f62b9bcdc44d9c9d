"""The agent's pure core: one timed transcript, a causal LM, and a decision several times a second.

Consumes: ``asr.partial`` (the reference's ``~``), ``asr.final`` and ``user.text`` (``*``),
``audio.played`` (which agent chunks really played), ``vad.start``/``vad.end`` (when the user's
silence really began: see "Silence"; the words and the model decide, not a hand-written rule),
``ctl.reset``, ``ctl.config``.
Produces: ``agent.say``, ``agent.pause``, ``agent.prerender``, ``agent.release``, ``agent.cancel``,
``agent.cycle`` (every decision), ``agent.state`` (whenever the sequence changed, once per call).

Virtual time: no clock reads, sleeps or randomness here; ``now_ns`` comes with every call and
``deadline_ns()`` is the earlier of
- the next user-pause step: while the user holds the floor and is silent, the trailing pause
  grows every ``user_pause_step_s`` to the exact silence since the last words (``(0.1)`` …
  ``(1.3)``; one pause, re-rounded to 0.1 s from the exact value, so it never drifts);
- the next decision cycle: ``min(interval_s, listen_interval_s)`` after the last one while
  listening, ``interval_s`` while speaking, or longer after the agent wrote a pause: its first
  pause, capped at ``max_agent_pause_s``.
Input events are applied when they arrive (§5, ``rewrite.py``); a flood of words between cycles
simply accumulates. ``turn`` increments at every floor change; ``gen`` at every cancel.

The cycle (reference §6). The history is trimmed (§4.6). Then:
- user's floor, lookahead on (§8): a kept prediction (cosine similarity of the predicted and the
  actual completion ≥ ``similarity_threshold``; −1 with no usable embedding, 1 with nothing new)
  is probed with one token; otherwise a new one is made and, if it predicts an agent reply, its
  chunks go out as ``agent.prerender``. A switch (empty completion, or a probe returning " S")
  to the agent releases the reply: ``agent.release`` (decision ``switch``). Else ``listen``.
- user's floor, lookahead off: 7 tokens are generated; they count only if they start with
  ``S2:`` (``switch``, ``agent.say``); otherwise they are discarded (``listen``).
- agent's floor: the opening utterance, else the next cached chunk(s) (``agent.release``), else
  7 generated tokens: words → ``agent.say`` (``continue``); ``S2:`` → a new agent utterance;
  ``S1`` (8b), another tag, or nothing → the agent holds the floor silently: the trailing pause
  grows by ``interval_s`` and ``agent.pause(interval)`` goes out (``wait``).
The agent never yields by prediction; the floor passes to the user only when user words arrive.
Generating stops as soon as the tokens so far settle the decision (``S1`` on the agent's floor,
anything but the start of ``S2:`` on the user's, the speaker after the pauses at a barge-in):
the decision is the one the full generation gives, and a silent cycle costs two tokens, not 7.

Barge-in. When user words (partial or final) arrive while the agent holds the floor and some of
its word chunks of this turn have not been reported by ``audio.played``, and the words would open
a new user turn (not merely revise a partial that began before the agent's turn, §5), the model
decides who speaks next: the candidate sequence is the agent's turn cut to the chunks that really
played, then the user's words as a new ``S1:`` turn; ``max_new_tokens`` tokens are generated from
it. If they start (after any pauses) with ``S2`` the agent goes on — the words were a backchannel
and are not written (a held final commits the pending partial as it stands) — decision ``hold``.
Otherwise it yields: ``agent.cancel(gen+1)``, the transcript becomes the candidate (the agent's
turn keeps only what played; nothing played → no agent turn at all), the floor is the user's —
decision ``yield``. Playback is tracked once the session has shown it has audio (an ``asr.*``
event or an ``audio.played``); in a typed session without audio every chunk counts as played and
user words simply take the floor. A release of n chunks occupies chunk indices
``chunk … chunk+n-1``; a chunk that holds only pauses needs no report.

Silence. The user's trailing pause is the real silence since they stopped speaking, not the time
since their words arrived. In a voice session the recogniser's words come about a second after
they were spoken; counting from their arrival, the model would read "(0.2)" where the user has
been silent for 1.2 s and wait a second longer than a listener would. So the pause clock starts
at the end of the last word (``spoken_until_ns`` of ``asr.*``) or at ``vad.end`` (``at_ns``),
whichever is later, never in the future; and while the VAD says the user is speaking
(``vad.start`` without its ``vad.end``) no pause grows, however long the recogniser takes. A VAD
that stays open with no ``vad.*``/``asr.*`` event for ``VAD_STALE_NS`` counts as closed (a lost
``vad.end`` must not silence the agent for good). Typed input and sessions without a VAD keep
the arrival clock.

Restart. A restarted agent process rejoins the conversation (``resume``): the shell reads the
run's event log and hands over the last ``agent.state`` the previous process published (the
transcript, ``turn``, ``gen``) and the input events logged after it (words and VAD edges that
arrived while no agent ran); they are applied as if they had just arrived, with no output. The
generation goes on from the highest the log shows (``agent.state`` or ``agent.cancel``), so the
TTS and audio nodes, which drop generations below the newest they saw, take the new agent's
output; what was queued to play still plays, and counts as played.

Control. ``ctl.reset`` starts a new conversation (§4.2), cancelling unplayed output. ``ctl.config``
``agent.*`` changes: identities rebuild the prefix at once; ``summary``, ``max_summary_chars``,
``agent_starts`` and ``opening_utterance`` apply at the next reset; timing, history, lookahead and
pause-token settings apply from the next cycle; decoding and model settings are the model's
business — they are passed to ``model.configure(cfg)`` when the model has such a method.
Unknown keys or bad values raise ValueError (the node reports it) and change nothing.

Fixed against the reference (§16): the ``S2:``-with-nothing crash (13) — an empty reply says
nothing; the endless release loop on empty generations (14) — at most ``MAX_GENERATIONS`` calls
per cycle, then silence; the opening utterance (15) replaces the predicted reply and clears the
cache instead of discarding one chunk and releasing the rest later, and is never consumed by a
listening cycle; the lookahead context follows the text instead of a stale offset (10, see
``lookahead.py``); a cache underrun never mixes released and generated text; 8b grows the
transcript's pause by exactly the silence sent to the TTS (the reference added the elapsed time
but sent ``interval``), and a pause the agent writes right after one merges into it; a final that
repeats the pending partial keeps the user's trailing pause and its clock (the reference restarted
the silence at every final); model output is cleaned before it is written (one line, canonical
capped pauses, unfinished pauses and glued tags removed), so a model that writes malformed tags or
endless pauses cannot break the transcript; the floor is always the speaker of the last tag, and
the agent opens a turn only when it has something to say, so the transcript never holds an empty
turn. There is no ``(0.0)`` flush: ``agent.state`` carries the floor, and every ``agent.say`` is
complete on its own.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable

from rtchat.bus.core import Core
from rtchat.bus.events import (
    AgentCancel,
    AgentCycle,
    AgentPause,
    AgentPrerender,
    AgentRelease,
    AgentSay,
    AgentState,
    AsrFinal,
    AsrPartial,
    AudioPlayed,
    ConfigChange,
    Event,
    Reset,
    UserText,
    VadEnd,
    VadStart,
)
from rtchat.configs.schema import AgentConfig
from rtchat.datasets.lines import build_prefix, clip_summary
from rtchat.nodes.agent.lookahead import Prediction, Predictor
from rtchat.nodes.agent.protocol import LanguageModel
from rtchat.nodes.agent.rewrite import rewrite_input
from rtchat.nodes.agent.transcript import (
    AGENT,
    END_PAUSE_RE,
    LEADING_PAUSE_RE,
    NS_PER_TENTH,
    PAUSE_RE,
    TAG_START_RE,
    USER,
    Transcript,
    agent_says_nothing,
    canonical_pauses,
    clean_output,
    clean_words,
    cut_after_first,
    cut_output,
    drop_incomplete_pause,
    ends_in_incomplete_pause,
    first_pause_tenths,
    identities_of,
    join_fragment,
    no_switch_to_agent,
    parse_response,
    parse_turn,
    pause_tenths,
    speaker_after_pauses_known,
    strip_unfinished_pauses,
    tenths_of_ns,
)

log = logging.getLogger(__name__)

VAD_STALE_NS = 5_000_000_000  # an open VAD with no vad.*/asr.* event this long counts as closed
MAX_GENERATIONS = 3  # generate calls per cycle; an empty or unfinished result after these is silence
IDENTITY_KEYS = ("user_name", "user_age", "user_sex", "agent_name", "agent_age", "agent_sex")
MODEL_KEYS = tuple(  # decoding and loading: the model's business (model.configure)
    "model adapter device dtype threads seed decoding top_k top_p typical_p temperature min_penalty_alpha "
    "max_penalty_alpha prevent_special_tokens".split()
)


def ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


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


class AgentCore(Core):
    name = "agent"
    topics = ("asr.", "user.text", "audio.played", "vad.")
    control_topics = ("ctl.",)

    def __init__(self, cfg: AgentConfig, model: LanguageModel, now_ns: int):
        self.cfg = cfg
        self.model = model
        self.turn = 0
        self.gen = 0
        self.counters: collections.Counter[str] = collections.Counter()
        self.warnings: list[str] = []
        self.audio_seen = False  # an audio.played was heard of: playback is tracked
        self.vad_open = False  # vad.start without its vad.end: the user is speaking now
        self.spoken_until_ns = 0  # capture-clock end of the user's last word (0 = unknown)
        self.vad_activity_ns = 0  # the last vad.* / asr.* event while the VAD is open
        self.voice = False  # asr words were heard of: a voice session, playback is tracked
        self._changed = False
        self._reset(now_ns)

    # ---------------------------------------------------------------- Core interface

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        self._changed = False
        out: list[Event] = []
        if isinstance(ev, AsrPartial | AsrFinal):
            self.voice = True
            self.vad_activity_ns = now_ns
            if ev.words:
                self.spoken_until_ns = ev.spoken_until_ns
        if isinstance(ev, AsrPartial):
            out = self._input(ev.text, partial=True, typed=False, now_ns=now_ns)
        elif isinstance(ev, AsrFinal | UserText):
            out = self._input(ev.text, partial=False, typed=isinstance(ev, UserText), now_ns=now_ns)
        elif isinstance(ev, AudioPlayed):
            self._played(ev)
        elif isinstance(ev, VadStart | VadEnd):
            self._vad(ev, now_ns)
        elif isinstance(ev, Reset):
            out = self._cancel() if self._unplayed() else []
            self.turn += 1
            self._reset(now_ns)
        elif isinstance(ev, ConfigChange):
            self._configure(ev.changes)
        return out + self._state()

    def on_tick(self, now_ns: int) -> list[Event]:
        self._changed = False
        if self.vad_open and now_ns - self.vad_activity_ns >= VAD_STALE_NS:
            self.counters["vad_stale"] += 1
            self.vad_open = False
            if self.t.speaker == USER and self.silence_ns is None:
                self.silence_ns = self._silence_start(now_ns, self.spoken_until_ns)
        self._grow_user_pause(now_ns)
        out = self._cycle(now_ns) if now_ns >= self._cycle_due() else []
        return out + self._state()

    def deadline_ns(self) -> int:
        due = self._cycle_due()
        if self.silence_ns is not None:
            due = min(due, self.silence_ns + ns(self.cfg.user_pause_step_s))
        if self.vad_open:
            due = min(due, self.vad_activity_ns + VAD_STALE_NS)
        return due

    def stats(self) -> dict[str, int | float]:
        return dict(self.counters) | {"turn": self.turn, "gen": self.gen, "sequence_chars": len(self.t.text)}

    def resume(self, state: AgentState, gen: int, later: list[tuple[int, Event]], now_ns: int) -> None:
        """Continue the conversation of a previous agent process (module doc, "Restart"):
        ``state`` is its last ``agent.state``, ``gen`` the highest generation it used, ``later``
        the (receive time, event) pairs logged after the state."""
        text = state.sequence
        prefix = build_prefix(identities_of(self.cfg), self.summary)
        if not text.startswith(prefix + " "):  # the identities changed live (ctl.config)
            at = text.find("Transcript:")
            prefix = text[: at + len("Transcript:")] if at >= 0 else prefix
        self.t = Transcript(prefix, USER)
        self.t.text = text
        self.turn, self.gen = state.turn, max(gen, state.gen)
        self.opening = None  # said (or overtaken) by the previous process
        self.last_cycle_ns = now_ns
        self.silence_ns = now_ns if self.t.speaker == USER else None
        for t_ns, ev in later:
            if isinstance(ev, AsrPartial | AsrFinal | UserText | VadStart | VadEnd):
                self.on_event(ev, t_ns)
        self.counters["resumes"] += 1
        self._changed = True

    # ---------------------------------------------------------------- state

    @property
    def floor(self) -> str:
        return "agent" if self.t.speaker == AGENT else "user"

    @property
    def _interval_tenths(self) -> int:
        return tenths_of_ns(ns(self.cfg.interval_s))

    def _reset(self, now_ns: int) -> None:
        """§4.2: a new transcript; the summary, first speaker and opening come from the config now."""
        self.summary, warning = clip_summary(self.cfg.summary, self.cfg.max_summary_chars)
        if warning:
            self.warnings.append(warning)
            self.counters["summary_cuts"] += 1
            log.warning("%s", warning)
        prefix = build_prefix(identities_of(self.cfg), self.summary)
        self.t = Transcript(prefix, AGENT if self.cfg.agent_starts else USER)
        self.opening = self._agent_text(" " + clean_words(self.cfg.opening_utterance)) or None
        self.look = Predictor()
        self.playback = Playback()
        self.last_cycle_ns = now_ns
        self.agent_wait_ns = 0
        self.silence_ns = now_ns if self.t.speaker == USER else None
        self._pause_memo: tuple[str, int] | None = None
        self._inputs: list[str] = []
        self._changed = True
        self.counters["resets"] += 1

    def _state(self) -> list[Event]:
        if not self._changed:
            return []
        return [AgentState(turn=self.turn, gen=self.gen, sequence=self.t.text, floor=self.floor)]

    def _cycle_event(self, prediction: str, decision: str) -> AgentCycle:
        self.counters[f"decision_{decision}"] += 1
        inputs, self._inputs = " ".join(self._inputs), []
        timings = {k: int(v) for k, v in self.model.timings_ns().items()}
        forwards = {k: int(v) for k, v in self.model.forwards().items()}
        log.debug("cycle turn=%d gen=%d %s: %r", self.turn, self.gen, decision, prediction)
        return AgentCycle(
            turn=self.turn, gen=self.gen, input_text=inputs, prediction=prediction, decision=decision, timings_ns=timings,
            forwards=forwards,
        )

    def _floor_changed(self, before: str, now_ns: int, since_ns: int = 0) -> None:
        """After an input edit: a new turn if the floor moved; the agent's turn state is dropped."""
        if self.t.speaker == before:
            return
        self.turn += 1
        self.playback = Playback()
        self.look.clear()
        self.agent_wait_ns = 0
        self.t.marks.clear()
        self.silence_ns = self._silence_start(now_ns, since_ns) if self.t.speaker == USER else None

    def _silence_start(self, now_ns: int, since_ns: int) -> int | None:
        """Where the user's pause clock starts: None while they speak (VAD open), else the real
        end of their speech when known (never in the future), else now."""
        if self.vad_open:
            return None
        return min(now_ns, since_ns) if since_ns > 0 else now_ns

    def _vad(self, ev: VadStart | VadEnd, now_ns: int) -> None:
        self.counters["vad_events"] += 1
        self.vad_activity_ns = now_ns
        self.vad_open = isinstance(ev, VadStart)
        if self.t.speaker != USER:
            return
        if self.vad_open:
            # the silence up to the onset stays written; it grows no more
            self._grow_user_pause(min(now_ns, ev.at_ns) if ev.at_ns > 0 else now_ns, final=True)
            self.silence_ns = None
        elif self.silence_ns is None:
            self.silence_ns = self._silence_start(now_ns, max(ev.at_ns, self.spoken_until_ns))
            self._grow_user_pause(now_ns)  # the silence already past is written at once

    # ---------------------------------------------------------------- input

    def _input(self, text: str, partial: bool, typed: bool, now_ns: int) -> list[Event]:
        words = clean_words(text)
        if typed and not words:
            return []
        self.counters["inputs"] += 1
        self._inputs.append(("~" if partial else "*") + words)
        if words and self.t.speaker == AGENT and self._unplayed():
            probe = self.t.copy()
            self._rewrite(probe, words, partial)
            if probe.speaker != AGENT:
                return self._barge_in(words, partial, now_ns)
        self._apply_input(words, partial, now_ns, since_ns=0 if typed else self.spoken_until_ns)
        return []

    @staticmethod
    def _rewrite(t: Transcript, words: str, partial: bool) -> None:
        rw = rewrite_input(t.text, t.partial_pos, words, partial)
        t.replace_tail(rw.start, rw.tail, rw.moves)
        t.partial_pos = rw.partial_pos
        if not t.body:  # everything said was taken back: an empty user turn, as at a reset
            t.text += f" {USER}:"

    def _apply_input(self, words: str, partial: bool, now_ns: int, since_ns: int = 0) -> None:
        """§5 on the transcript. A trailing user pause inside the rolled-back span survives when
        the words did not change (a final repeating the last partial), and so does its clock."""
        before, old = self.t.speaker, self.t.text
        kept = None
        pause = self.t.trailing_pause(self._interval_tenths) if before == USER else None
        if pause and self.t.partial_pos is not None and pause[0] >= self.t.partial_pos:
            kept = (old[: pause[0]], old[pause[0] :])
        self._rewrite(self.t, words, partial)
        if kept and self.t.text == kept[0]:
            self.t.text += kept[1]
        else:
            self._floor_changed(before, now_ns, since_ns)
            if self.t.speaker == USER:
                self.silence_ns = self._silence_start(now_ns, since_ns)
                self._grow_user_pause(now_ns)  # the silence already past is written at once
        self._changed |= self.t.text != old

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

    # ---------------------------------------------------------------- control

    def _configure(self, changes: dict) -> None:
        agent = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("agent.")}
        if not agent:
            return
        allowed = sorted(f.name for f in dataclasses.fields(AgentConfig))
        unknown = sorted(set(agent) - set(allowed))
        if unknown:
            raise ValueError(f"unknown agent config keys {unknown}; allowed: {', '.join(allowed)}")
        try:
            new = dataclasses.replace(self.cfg, **agent)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"agent config change {agent} rejected: {exc}") from exc
        old, self.cfg = self.cfg, new
        self.counters["config_changes"] += 1
        if any(getattr(old, k) != getattr(new, k) for k in IDENTITY_KEYS):
            self.t.set_prefix(build_prefix(identities_of(new), self.summary))
            self._changed = True
        if not new.lookahead:
            self.look.clear()
        configure = getattr(self.model, "configure", None)
        if configure is not None and any(getattr(old, k) != getattr(new, k) for k in MODEL_KEYS):
            configure(new)

    # ---------------------------------------------------------------- pauses

    def _grow_pause(self, add_ns: int) -> None:
        """The trailing pause grows by add_ns (or one is appended); exact across steps."""
        found = self.t.trailing_pause(self._interval_tenths)
        memo = self._pause_memo
        if found and memo and self.t.text.endswith(memo[0]):
            base = memo[1]
        else:
            base = found[1] * NS_PER_TENTH if found else 0
        old_body = self.t.body
        self.t.set_trailing_pause(tenths_of_ns(base + add_ns), self.cfg.add_pause_token, self._interval_tenths)
        self._pause_memo = (self.t.text[-48:], base + add_ns)
        if found is not None:
            self.look.follow_pause(old_body, self.t.body)
        self._changed = True

    def _grow_user_pause(self, now_ns: int, final: bool = False) -> None:
        """Grow the user's pause to now in steps; ``final``: the silence ends now, write any rest."""
        if self.silence_ns is None or self.t.speaker != USER:
            return
        elapsed = now_ns - self.silence_ns
        step = elapsed >= ns(self.cfg.user_pause_step_s)
        rest = final and elapsed > 0 and self.t.trailing_pause(self._interval_tenths) is not None
        if step or rest:  # the pause is looked up only when the silence ends, not at every tick
            self._grow_pause(elapsed)
            self.silence_ns = now_ns

    # ---------------------------------------------------------------- the cycle

    def _cycle_due(self) -> int:
        interval = ns(self.cfg.interval_s)
        if self.t.speaker != AGENT:
            interval = min(interval, ns(self.cfg.listen_interval_s))
        return self.last_cycle_ns + max(interval, self.agent_wait_ns)

    def _cycle(self, now_ns: int) -> list[Event]:
        self.counters["cycles"] += 1
        self.last_cycle_ns = now_ns
        self.agent_wait_ns = 0
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

    def _generate(self, context: str, settled: Callable[[str], bool] | None = None) -> str:
        """§6 step 6, bounded: cut after the first complete pause; complete an unfinished one
        (stop at ``)``); after MAX_GENERATIONS calls an empty or unfinished result is silence.
        Generating stops early once ``settled(prediction so far)`` says the decision is known."""
        text = ""
        for _ in range(MAX_GENERATIONS):
            done = None if settled is None else (lambda piece, before=text: settled(before + piece))
            piece = self.model.generate(context + text, self.cfg.max_new_tokens, done).text
            self.counters["generations"] += 1
            if not piece.strip():
                self.counters["empty_generations"] += 1
            text += cut_after_first(piece, END_PAUSE_RE if text.strip() else PAUSE_RE)
            if text.strip() and not ends_in_incomplete_pause(text):
                return text
        return drop_incomplete_pause(text)

    def _agent_text(self, fragment: str) -> str:
        """Model words as they may be written: one line, pauses canonical and capped; "" if empty."""
        max_tenths = ns(self.cfg.max_agent_pause_s) // NS_PER_TENTH
        text = canonical_pauses(clean_output(fragment), self._interval_tenths, max_tenths, self.cfg.add_pause_token)
        text = cut_output(strip_unfinished_pauses(text))
        return "" if not text.strip() or TAG_START_RE.match(text.lstrip()) else text

    def _listen_cycle(self) -> list[Event]:
        """Lookahead off, user's floor: only a prediction starting with S2: counts (8a/8d)."""
        prediction = self._generate(self.t.text, no_switch_to_agent)
        speaker, words = parse_turn(prediction)
        if speaker == AGENT:
            text = self.opening or self._agent_text(words)
            if text:
                self.opening = None
                self._switch()
                return [self._say(text), self._cycle_event(prediction, "switch")]
        return [self._cycle_event(prediction, "listen")]

    def _lookahead_cycle(self) -> list[Event]:
        """§8.3: keep or renew the prediction; switch when it says the agent speaks now."""
        out: list[Event] = []
        sim = self.look.similarity(self.t, self.model)
        pred = self.look.prediction
        if pred is not None and sim >= self.cfg.similarity_threshold:
            self.counters["lookaheads_kept"] += 1
            switch = self.model.next_is_turn_switch(self.t.text)
            if switch and pred.speaker != AGENT:
                # the probe says the turn ends now, but the kept prediction has the user go on (no
                # reply to release): predict again. Without this, a prediction that the user keeps
                # talking, kept while only the silence grows (similarity 1), left the agent mute.
                self.counters["lookaheads_renewed"] += 1
                pred = self._predict(out)
                switch = pred.completion_tokens == 0
        else:
            pred = self._predict(out)
            switch = pred.completion_tokens == 0
        if switch and pred.speaker == AGENT:
            spoken = self._reply()
            if spoken:
                return out + spoken + [self._cycle_event(pred.text, "switch")]
            self.look.prediction = None
        return out + [self._cycle_event(pred.text, "listen")]

    def _predict(self, out: list[Event]) -> Prediction:
        """A new lookahead; its agent reply, chunked, replaces the cache and is pre-rendered."""
        self.counters["lookaheads"] += 1
        la = self.model.lookahead(self.t.text, self.cfg.lookahead_max_tokens, self.cfg.response_max_tokens)
        speaker, words = parse_response(la.response)
        pred = Prediction(self.t.body, la.completion + la.response, la.completion_tokens, speaker, la.embedding)
        reply = self._agent_text(words) if speaker == AGENT and not self.opening else ""  # an opening replaces it
        chunks = self.look.predict(self.t, pred, reply, self.model, self.cfg.max_new_tokens)
        if chunks:
            self.counters["prerenders"] += 1
            out.append(AgentPrerender(turn=self.turn, gen=self.gen, chunks=chunks))
        return pred

    def _reply(self) -> list[Event]:
        """The agent's first words at a lookahead switch: opening, cached reply, or generated."""
        if self.opening:
            text, self.opening = self.opening, None
            self.look.cache.clear()
            self._switch()
            return [self._say(text)]
        if self.look.cache:
            self._switch()
            return [self._release()]
        text, _ = self._continuation(self._generate(self.t.text + f" {AGENT}:"))
        if not text:
            return []
        self._switch()
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
        interval = ns(self.cfg.interval_s)
        self._grow_pause(interval)
        self.agent_wait_ns = interval
        return [AgentPause(turn=self.turn, gen=self.gen, duration_ns=interval), self._cycle_event(prediction, "wait")]

    # ---------------------------------------------------------------- speaking

    def _switch(self) -> None:
        """The floor passes to the agent (a new turn)."""
        self.counters["switches"] += 1
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
            self.agent_wait_ns = min(tenths * NS_PER_TENTH, ns(self.cfg.max_agent_pause_s))

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
