"""The switch schedule: the listening decision and its reply prepared while the user speaks (issue 20).

A part of ``AgentCore`` (core.py). The listening decision is P(the agent's tag comes next) ≥
``switch_threshold``, read off the transcript as it stands — the user's words and the pause
written after them. The words change while the user speaks; the pause changes only in the
silence, when the decision is due, and in known steps. So after new words arrive, a tick of its
own (``_plan_due``: after the cycle that read them, before a lookahead renewal) asks the model
for the probability of the transcript as it is and after each pause the silence could write
next, ``(0.1)``, ``(0.2)`` … (up to ``schedule_steps``, within the whole second: they share their
first tokens), in one forward pass over the continuations as a prefix tree
(``model.next_speaker_probs``). The result is a *schedule*: "if the user is silent for X, take
the turn" (X the first pause whose probability reaches the threshold; none when none does). The
reply the agent would give after X — or, where the schedule does not fire yet, after the next
pause step — is then generated and pre-rendered (``_schedule_reply``): the recogniser's last word
or two, which often arrive only in the silence, keep it.

In the silence the decision is a look-up: the cycle reads the probability of the transcript as
it stands from the schedule, with no model call on the critical path; a transcript the schedule
does not have (words that came in the silence, a pause past the schedule) gets a probe of its
own, as every decision did before (a plan costs about two probes, and the decision is due now).
When the VAD says the speech stopped — ``vad.pause``, its first ``asr.silence_hop_ms`` of silence,
not ``vad.end`` ``asr.vad_min_silence_ms`` later: where the user has stopped is the model's call,
by the pause it reads, not a silence timeout's — the schedule is *armed*: a decision is due at
once (the pause already written may be X) and then at every pause step, so the turn is taken on
the step that writes X (*fired*) — in a silence the VAD heard, the decisions come at the pause
steps, not on the listening interval's grid. The user speaking again first (``vad.resume``,
``vad.start``) *disarms* it; ``vad.end`` in the same silence only confirms it. With
``schedule_steps`` 0 there is no schedule: every listening decision is a probe of its own.

``agent.schedule`` events record each step (planned / armed / fired / disarmed) for the timeline.
"""

from __future__ import annotations

import dataclasses

from rtchat.bus.clock import s
from rtchat.bus.events import AgentSchedule, Event
from rtchat.nodes.agent.lookahead import Prediction
from rtchat.nodes.agent.transcript import AGENT, NS_PER_TENTH, PAUSE_RE, USER, format_pause


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """P(agent's tag next) for the transcript followed by each pause (tenths; 0: as it stands)."""

    texts: dict[str, float]  # transcript text → probability
    tenths: tuple[int, ...]
    probs: tuple[float, ...]

    def fire_tenths(self, threshold: float) -> int | None:
        """The shortest pause after which the agent takes the turn; None: none in the plan."""
        return next((t for t, p in zip(self.tenths, self.probs, strict=True) if p >= threshold), None)


class SwitchSchedule:
    """The switch schedule of ``AgentCore`` (module doc); its state (``plan``, ``_plan_due``,
    ``armed``, ``_decide_now``) is the core's."""

    def _plan_texts(self) -> tuple[list[str], list[int]]:
        """The transcript as it stands, then with each longer pause the silence could write next:
        up to ``schedule_steps`` of them, within one whole second (`` (0.1)`` … `` (0.9)`` share
        their first tokens, `` (1.0)`` does not: the next second is planned when it comes)."""
        found = self.t.trailing_pause(self._interval_tenths)
        base = self.t.text if found is None else self.t.text[: found[0]]
        start = 0 if found is None else found[1]
        end = start + self.cfg.schedule_steps
        if (start + 1) % 10:
            end = min(end, start + 1 + (9 - (start + 1) % 10))
        tenths = [start, *range(start + 1, end + 1)]
        texts = [self.t.text] + [base + format_pause(t, self.cfg.add_pause_token) for t in tenths[1:]]
        return texts, tenths

    def _plan(self, out: list[Event]) -> Plan:
        """Ask the model for the schedule of the transcript as it stands (one forward pass)."""
        texts, tenths = self._plan_texts()
        probs = self.model.next_speaker_probs(texts, f" {AGENT}:")
        self.plan = Plan(dict(zip(texts, probs, strict=True)), tuple(tenths), tuple(probs))
        self.counters["plans"] += 1
        self._plan_due = False
        fire = self.plan.fire_tenths(self.cfg.switch_threshold)
        out.append(self._schedule_event("planned", fire))
        return self.plan

    def _schedule_reply(self, out: list[Event]) -> bool:
        """The reply the schedule will release, prepared while the user speaks: generated after
        the transcript, the pause the schedule fires on (where it fires for no pause yet: the next
        pause step) and the agent's tag — the words as they stand, no guess of what the user says
        next (a lookahead's completion, up to ``lookahead_max_tokens`` more). It is kept while the
        words stay close to those it was made for (``lookahead.words_close``: the last word or two
        revised or added) — the common case at the speech end, where the recogniser's last word
        comes with the pause: a schedule that did not fire for "do you have any" fires for "do you
        have any ideas", and the reply is ready (made only where the schedule fires, it was ready
        for a third of the switches of a full ``rtchat bench session`` run, half with it). Unlike a lookahead's
        guess it is not cut short by the speech end: it is the reply the switch will need, for the
        words as they are, and cutting it would only make the switch generate it again. False: no
        schedule to prepare for, or no words after its pause (the lookahead then guesses as before)."""
        if self.opening or not self.plan or self.t.text not in self.plan.texts:
            return False
        fire = self.plan.fire_tenths(self.cfg.switch_threshold)
        if fire is None:  # not yet: the reply if the turn were taken at the next pause step
            fire = self.plan.tenths[min(1, len(self.plan.tenths) - 1)]
        if fire == self.plan.tenths[0]:
            context = self.t.text  # the transcript as it stands
        else:
            found = self.t.trailing_pause(self._interval_tenths)
            base = self.t.text if found is None else self.t.text[: found[0]]
            context = base + format_pause(fire, self.cfg.add_pause_token)
        self.counters["schedule_replies"] += 1
        self._tried_reply_for = self.t.text
        text, _ = self._continuation(self._generate(f"{context} {AGENT}:", first_words=True))
        if not PAUSE_RE.sub("", text).strip():
            return False  # no words to say after the pause: the lookahead's guess may have some
        self._adopt(Prediction(self.t.body, None, as_stood=True), text, out)
        return True

    def _schedule_wants_reply(self) -> bool:
        """The schedule has the transcript as it stands and its reply was not tried for it: a
        lookahead guess kept with no reply (it guessed the user goes on) gives way to it."""
        return not (self.opening or not self.plan or self.t.text not in self.plan.texts or self._tried_reply_for == self.t.text)

    def _schedule_event(self, action: str, fire: int | None) -> AgentSchedule:
        plan = self.plan
        return AgentSchedule(
            turn=self.turn,
            gen=self.gen,
            action=action,
            fire_after_ns=-1 if fire is None else fire * NS_PER_TENTH,
            pauses_ns=tuple(t * NS_PER_TENTH for t in plan.tenths) if plan and action == "planned" else (),
            probs=tuple(round(p, 4) for p in plan.probs) if plan and action == "planned" else (),
        )

    def _scheduled_prob(self) -> float:
        """The listening decision's probability: from the schedule when it has this transcript,
        else a probe of its own (one forward pass over what is new: about half a plan's time,
        and the decision is due now)."""
        p = self.plan.texts.get(self.t.text) if self.plan else None
        if p is not None:
            self.counters["schedule_hits"] += 1
            return p
        return self.model.next_speaker_prob(self.t.text, f" {AGENT}:")

    def _words_changed(self) -> None:
        """New user words while the user speaks (or with no VAD: typed input): plan after the
        next decision, on a tick of its own. Words that arrive in a silence the VAD heard (a
        final after ``vad.pause``/``vad.end``) are decided at once, by a probe: a plan would delay the
        decisions due meanwhile, and the armed schedule no longer applies."""
        if self.t.speaker != USER:
            return
        if self.vad_open or not self.counters["vad_events"]:
            self._plan_due = self.cfg.schedule_steps > 0
        elif self.silence_ns is not None:
            self._decide_now = True
            self.armed = False

    def _run_plan(self) -> list[Event]:
        """The planning tick (``_plan_due``)."""
        self._plan_due = False
        if self.t.speaker != USER or (self.plan and self.t.text in self.plan.texts):
            return []
        out: list[Event] = []
        self._plan(out)
        return out

    def _arm(self) -> list[Event]:
        """The VAD heard the speech stop (``vad.pause``, ``vad.end``): decide now, and at every pause
        step after; the schedule, when it has the transcript, is armed."""
        if self.t.speaker != USER:
            return []
        self._decide_now = True
        if not self.plan or self.t.text not in self.plan.texts:
            return []  # words the schedule has not seen: the decisions are probes
        if self.armed:
            return []  # armed at vad.pause; vad.end in the same silence confirms it
        self.armed = True
        return [self._schedule_event("armed", self.plan.fire_tenths(self.cfg.switch_threshold))]

    def _disarm(self) -> list[Event]:
        """The user speaks again before the schedule fired."""
        if not self.armed:
            return []
        self.armed = False
        self.counters["schedule_disarmed"] += 1
        return [self._schedule_event("disarmed", None)]

    def _schedule_decides(self) -> bool:
        """The schedule is armed and has the transcript: the decision now is its look-up."""
        return self.armed and self.plan is not None and self.t.text in self.plan.texts

    def _fired(self) -> list[Event]:
        """The event of a scheduled decision that takes the turn (the switch disarms: cycle.py);
        none when a probe decided (a pause past the schedule's)."""
        if not self._schedule_decides():
            return []
        found = self.t.trailing_pause(self._interval_tenths)
        return [self._schedule_event("fired", 0 if found is None else found[1])]

    def _schedule_due(self) -> int | None:
        """When the next listening decision is due instead of the listening interval: at once
        after ``vad.pause``/``vad.end``; in a silence the VAD heard, when the pause grows next (the transcript
        changes only then, and its step writes the pause the schedule fires on)."""
        if self._decide_now:
            return 0
        if self.silence_ns is not None and not self.vad_open and self.counters["vad_events"]:
            return self.silence_ns + s(self.cfg.user_pause_step_s)
        return None
