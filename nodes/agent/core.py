"""The agent's pure core: one timed transcript, a causal LM, and a decision several times a second.

Consumes: ``asr.partial`` (the reference's ``~``), ``asr.final`` and ``user.text`` (``*``),
``audio.played`` (which agent chunks really played), ``vad.start``/``vad.end`` and
``vad.pause``/``vad.resume`` (when the user's silence really began: see silence.py; the words and
the model decide, not a hand-written rule),
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
simply accumulates. User words are written in the training corpus's form (lower case, no
punctuation: ``datasets.lines.corpus_words``), not as the recogniser wrote them. ``turn``
increments at every floor change; ``gen`` at every cancel.

The core is one class in four modules, each with the rules it implements: this one (the Core
interface, input, control, restart), ``cycle.py`` (the decision cycle and what the agent says),
``silence.py`` (the user's pause clock) and ``playback.py`` (what played, barge-in).

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
import re

from rtchat.bus.clock import s
from rtchat.bus.core import Core
from rtchat.bus.events import (
    AgentCycle,
    AgentState,
    AsrFinal,
    AsrPartial,
    AudioPlayed,
    ConfigChange,
    Event,
    Reset,
    UserText,
    VadEnd,
    VadPause,
    VadResume,
    VadStart,
)
from rtchat.configs.schema import AgentConfig
from rtchat.datasets.lines import build_prefix, clip_summary, corpus_words
from rtchat.nodes.agent.cycle import Cycle
from rtchat.nodes.agent.lookahead import Predictor
from rtchat.nodes.agent.playback import BargeIn, Playback
from rtchat.nodes.agent.protocol import LanguageModel
from rtchat.nodes.agent.rewrite import rewrite_input
from rtchat.nodes.agent.schedule import SwitchSchedule
from rtchat.nodes.agent.silence import VAD_STALE_NS, SilenceClock
from rtchat.nodes.agent.transcript import (
    AGENT,
    PAUSE_RE,
    SEQUENCE_SPLIT_RE,
    USER,
    Transcript,
    clean_words,
    identities_of,
    tenths_of_ns,
)

log = logging.getLogger(__name__)

_OPENING_TAG_RE = re.compile(rf"\A\s*{USER}:")
IDENTITY_KEYS = ("user_name", "user_age", "user_sex", "agent_name", "agent_age", "agent_sex")
MODEL_KEYS = tuple(  # decoding and loading: the model's business (model.configure)
    "model adapter device dtype threads seed decoding top_k top_p typical_p temperature min_penalty_alpha "
    "max_penalty_alpha prevent_special_tokens".split()
)


class AgentCore(Cycle, SwitchSchedule, SilenceClock, BargeIn, Core):
    name = "agent"
    topics = ("asr.", "user.text", "audio.played", "vad.")
    control_topics = ("ctl.",)
    urgent_topics = ("vad.end", "vad.pause", "ctl.")  # a lookahead renewal stops for them: the decision, a reset, come first

    def __init__(self, cfg: AgentConfig, model: LanguageModel, now_ns: int):
        self.cfg = cfg
        self.model = model
        self.turn = 0
        self.gen = 0
        self.counters: collections.Counter[str] = collections.Counter()
        self.warnings: list[str] = []
        self.audio_seen = False  # an audio.played was heard of: playback is tracked
        self.vad_open = False  # vad.start/vad.resume without a vad.pause/vad.end since: the user is speaking now
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
            out = self._input(ev.text, partial=True, typed=False, now_ns=now_ns, spoken_ns=ev.spoken_until_ns if ev.words else 0)
        elif isinstance(ev, AsrFinal | UserText):
            spoken_ns = ev.spoken_until_ns if isinstance(ev, AsrFinal) and ev.words else 0
            out = self._input(ev.text, partial=False, typed=isinstance(ev, UserText), now_ns=now_ns, spoken_ns=spoken_ns)
        elif isinstance(ev, AudioPlayed):
            self._played(ev)
        elif isinstance(ev, VadStart | VadEnd | VadPause | VadResume):
            self._vad(ev, now_ns)
            out = self._disarm() if self.vad_open else self._arm()
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
        due = self._cycle_due()  # before the pause grows: a scheduled decision is due at its step
        self._grow_user_pause(now_ns)
        if now_ns >= due:
            out = self._cycle(now_ns)
        elif self._plan_due:
            out = self._run_plan()
        elif self._renew_due:
            out = self._renew()
        else:
            out = []
        return out + self._state()

    def deadline_ns(self) -> int:
        due = self._cycle_due()
        if self._plan_due or self._renew_due:
            due = min(due, self.last_cycle_ns)  # at once, after what arrived meanwhile (cycle.py, schedule.py)
        if self.silence_ns is not None:
            due = min(due, self.silence_ns + s(self.cfg.user_pause_step_s))
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
            if isinstance(ev, AsrPartial | AsrFinal | UserText | VadStart | VadEnd | VadPause | VadResume):
                self.on_event(ev, t_ns)
        self.counters["resumes"] += 1
        self._changed = True

    # ---------------------------------------------------------------- state

    @property
    def floor(self) -> str:
        return "agent" if self.t.speaker == AGENT else "user"

    @property
    def _interval_tenths(self) -> int:
        return tenths_of_ns(s(self.cfg.interval_s))

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
        self._renew_due = False  # a stale lookahead prediction to renew after the decision (cycle.py)
        self.plan = None  # the switch schedule of the transcript as it stands (schedule.py)
        self._plan_due = False  # new words: plan on a tick of its own
        self.armed = False  # the VAD heard the speech stop; the schedule decides at every pause step
        self._decide_now = False  # a decision is due at once (vad.pause, vad.end)
        self._more_now = False  # a switch's first chunk went out: the next cycle is due at once (cycle.py)
        self._tried_reply_for: str | None = None  # the transcript the schedule's reply was last made for (schedule.py)
        self.p_switch = 0.0  # the last listening decision's P(the agent's tag next)
        self.agent_wait_ns = 0
        self.took_turn_ns = 0  # when the agent last took the turn (cycle.py): words spoken before are no barge-in
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

    # ---------------------------------------------------------------- input

    def _input(self, text: str, partial: bool, typed: bool, now_ns: int, spoken_ns: int = 0) -> list[Event]:
        """User words. ``spoken_ns``: when their last word ended (capture clock; 0 = unknown)."""
        # in the form the model was trained on: "About." would read as a finished sentence
        words = corpus_words(clean_words(text))
        if typed and not words:
            return []
        self.counters["inputs"] += 1
        self._inputs.append(("~" if partial else "*") + words)
        if not partial and self._confirms_partial(words):
            # the final says what the pending partial said: it commits, nothing moves — rolled
            # back, a short partial would be laid after the agent's turn taken meanwhile (the
            # ≤ 2-word deferral, rewrite.py) and read as the user barging in
            self.t.partial_pos = None
            self.counters["finals_confirming"] += 1
            return []
        defer = not self._late_revision(spoken_ns)
        if words and self.t.speaker == AGENT and self._unplayed():
            probe = self.t.copy()
            self._rewrite(probe, words, partial, defer)
            if probe.speaker != AGENT:
                return self._barge_in(words, partial, now_ns)
        self._apply_input(words, partial, now_ns, since_ns=0 if typed else self.spoken_until_ns, defer=defer)
        return []

    def _late_revision(self, spoken_ns: int) -> bool:
        """Words of the pending partial that were spoken before the agent took the turn (the
        recogniser revised the last word after the switch): they revise the user's turn before
        the agent's, they are no barge-in. With the schedule armed at ``vad.pause`` the turn is
        often taken before the pause hypothesis's words arrive."""
        late = (0 < spoken_ns <= self.took_turn_ns and self.t.speaker == AGENT and self.t.partial_pos is not None
                and self.t.partial_pos < self.t.marks.get("turn", -1))
        self.counters["late_revisions"] += late
        return late

    def _confirms_partial(self, words: str) -> bool:
        """The pending partial's words (up to the next tag, pauses aside) are exactly ``words``."""
        pos = self.t.partial_pos
        if pos is None:
            return False
        said = _OPENING_TAG_RE.sub("", self.t.text[pos:], count=1)  # the partial may have opened the turn
        said = SEQUENCE_SPLIT_RE.split(said, maxsplit=1)[0]
        return PAUSE_RE.sub("", said).split() == words.split()

    @staticmethod
    def _rewrite(t: Transcript, words: str, partial: bool, defer: bool = True) -> None:
        rw = rewrite_input(t.text, t.partial_pos, words, partial, defer=defer)
        t.replace_tail(rw.start, rw.tail, rw.moves)
        t.partial_pos = rw.partial_pos
        if not t.body:  # everything said was taken back: an empty user turn, as at a reset
            t.text += f" {USER}:"

    def _apply_input(self, words: str, partial: bool, now_ns: int, since_ns: int = 0, defer: bool = True) -> None:
        """§5 on the transcript. A trailing user pause inside the rolled-back span survives when
        the words did not change (a final repeating the last partial), and so does its clock."""
        before, old = self.t.speaker, self.t.text
        kept = None
        pause = self.t.trailing_pause(self._interval_tenths) if before == USER else None
        if pause and self.t.partial_pos is not None and pause[0] >= self.t.partial_pos:
            kept = (old[: pause[0]], old[pause[0] :])
        self._rewrite(self.t, words, partial, defer)
        if kept and self.t.text == kept[0]:
            self.t.text += kept[1]
        else:
            self._floor_changed(before, now_ns, since_ns)
            if self.t.speaker == USER:
                self.silence_ns = self._silence_start(now_ns, since_ns)
                self._grow_user_pause(now_ns)  # the silence already past is written at once
        if self.t.text != old:
            self._changed = True
            self._words_changed()

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
