"""The agent's clock of the user's silence: where the trailing pause starts and how it grows.

A part of ``AgentCore`` (core.py). The user's trailing pause is the real silence since they
stopped speaking, not the time since their words arrived. In a voice session the recogniser's
words come about a second after they were spoken; counting from their arrival, the model would
read "(0.2)" where the user has been silent for 1.2 s and wait a second longer than a listener
would. So the pause clock starts at the end of the last word (``spoken_until_ns`` of ``asr.*``) or
at the VAD's speech end (``at_ns`` of ``vad.pause``, the first ``asr.silence_hop_ms`` of silence,
or of ``vad.end``), whichever is later, never in the future; and while the VAD says the user is
speaking (``vad.start`` or ``vad.resume`` since the last ``vad.pause``/``vad.end``) no pause
grows, however long the recogniser takes. A pause the user then speaks through stays written,
as inside a turn of the training corpus. A VAD that stays open with no ``vad.*``/``asr.*`` event for ``VAD_STALE_NS``
counts as closed (a lost ``vad.end`` must not silence the agent for good). Typed input and
sessions without a VAD keep the arrival clock.
"""

from __future__ import annotations

from rtchat.bus.clock import s
from rtchat.bus.events import VadEnd, VadPause, VadResume, VadStart
from rtchat.nodes.agent.transcript import NS_PER_TENTH, USER, tenths_of_ns

VAD_STALE_NS = 5_000_000_000  # an open VAD with no vad.*/asr.* event this long counts as closed


class SilenceClock:
    """The pause clock of ``AgentCore`` (module doc); its state (``silence_ns``, ``vad_open``,
    ``vad_activity_ns``, ``spoken_until_ns``) is the core's."""

    def _silence_start(self, now_ns: int, since_ns: int) -> int | None:
        """Where the user's pause clock starts: None while they speak (VAD open), else the real
        end of their speech when known (never in the future), else now."""
        if self.vad_open:
            return None
        return min(now_ns, since_ns) if since_ns > 0 else now_ns

    def _vad(self, ev: VadStart | VadEnd | VadPause | VadResume, now_ns: int) -> None:
        self.counters["vad_events"] += 1
        self.vad_activity_ns = now_ns
        self.vad_open = isinstance(ev, VadStart | VadResume)
        if self.t.speaker != USER:
            return
        if self.vad_open:
            # the silence up to the onset stays written; it grows no more
            self._grow_user_pause(min(now_ns, ev.at_ns) if ev.at_ns > 0 else now_ns, final=True)
            self.silence_ns = None
        elif self.silence_ns is None:
            self.silence_ns = self._silence_start(now_ns, max(ev.at_ns, self.spoken_until_ns))
            self._grow_user_pause(now_ns)  # the silence already past is written at once

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
        step = elapsed >= s(self.cfg.user_pause_step_s)
        rest = final and elapsed > 0 and self.t.trailing_pause(self._interval_tenths) is not None
        if step or rest:  # the pause is looked up only when the silence ends, not at every tick
            self._grow_pause(elapsed)
            self.silence_ns = now_ns
