"""The page's view of the conversation, folded from bus events on virtual time (pure: no clock
reads, sockets or threads; ``now_ns`` comes with every call).

What it keeps:
- the transcript: turns of the user (S1) and the agent (S2); the user's committed words
  (``asr.final``, ``user.text``) apart from the current partial hypothesis (``asr.partial``,
  replaced by each new one, dropped when the final arrives); the agent's words (``agent.say``,
  ``agent.release``), its pauses (``agent.pause``, and pause tokens such as ``(0.5)`` in its text)
  and where it was cut (``agent.cancel``);
- who holds the floor (``agent.state``) and who is audible now (the VAD for the user, the agent's
  audio still to play for the agent);
- timeline spans of the last ``window_ns``: the user's speech from ``vad.start``/``vad.end``
  (capture clock), typed words as instants, the agent's chunks from ``audio.played``;
- per-stage latencies, the median of the last ``LATENCY_SAMPLES`` of each: ``asr`` (the end of
  the last word, ``spoken_until_ns``, else of the speech → the final words), ``agent`` (the
  user's last words → the agent's first words), ``tts`` (the agent's words → their first audio),
  ``response`` (end of the user's speech or typed words → the agent's first audio playing);
- node health: the last heartbeat of each node, restarts (``node.restarted``); a node is
  ``ok``, ``silent`` (no heartbeat for ``stale_ns``) or ``restarting`` (until the new process
  heartbeats);
- notes for the page (a clipped summary, a refused setting), the last few.

Each part is bounded, so a state message is too however long the session or however fast a page
types: a turn keeps its last ``MAX_TURN_CHARS`` characters of words (cut at the front, marked
"…") and ``MAX_TURN_PARTS`` parts, the timeline ``MAX_SPANS`` spans, a span's or note's text
``SPAN_TEXT_CHARS`` / ``NOTE_CHARS`` characters.

``ctl.reset`` clears the transcript and the floor; the timeline, latencies and nodes stay.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from dataclasses import dataclass, field

from rtchat.bus.events import (
    AgentCancel,
    AgentPause,
    AgentRelease,
    AgentSay,
    AgentState,
    AsrFinal,
    AsrPartial,
    AudioPlayed,
    Event,
    NodeHeartbeat,
    NodeRestarted,
    Reset,
    TtsAudio,
    UserText,
    VadEnd,
    VadStart,
)

NS = 1_000_000_000
USER, AGENT = "user", "agent"
LATENCY_SAMPLES = 20
MAX_TURNS = 40
MAX_NOTES = 5
MAX_TURN_CHARS = 4000  # a turn's words shown (about 700 words); earlier ones are cut
MAX_TURN_PARTS = 200
MAX_SPANS = 300  # timeline spans kept (typed messages are one each)
SPAN_TEXT_CHARS = 80
NOTE_CHARS = 300
PAUSE_RE = re.compile(r"^(?:<p>)?\((\d*\.?\d+)\)$")


@dataclass
class Turn:
    who: str
    parts: list[dict] = field(default_factory=list)  # {"w": words} | {"p": seconds} | {"cut": True}
    partial: str = ""  # the user's revisable words (user turns only)

    def words(self, text: str) -> None:
        for token in text.split():
            m = PAUSE_RE.match(token)
            if m:
                self.pause(float(m.group(1)))
            elif token != "<p>":
                if self.parts and "w" in self.parts[-1]:
                    self.parts[-1]["w"] += " " + token
                else:
                    self.parts.append({"w": token})
        self._trim()

    def _trim(self) -> None:
        del self.parts[:-MAX_TURN_PARTS]
        chars = sum(len(p.get("w", "")) for p in self.parts)
        while chars > MAX_TURN_CHARS and len(self.parts) > 1:
            chars -= len(self.parts.pop(0).get("w", ""))
        first = self.parts[0] if self.parts else {}
        if chars > MAX_TURN_CHARS and "w" in first:  # one long run of words: keep its end, from a word start
            tail = first["w"][-MAX_TURN_CHARS:]
            first["w"] = "…" + (tail.split(" ", 1)[1] if " " in tail else tail)

    def pause(self, seconds: float) -> None:
        if self.parts and "p" in self.parts[-1]:  # a pause right after one grows it
            self.parts[-1]["p"] = round(self.parts[-1]["p"] + seconds, 1)
        else:
            self.parts.append({"p": round(seconds, 1)})

    def text(self) -> str:
        """Plain text (committed words and pauses), for tests and logs."""
        out = []
        for p in self.parts:
            out.append(p["w"] if "w" in p else f"({p['p']:.1f})" if "p" in p else "—")
        return " ".join(out)

    def as_json(self) -> dict:
        return {"who": self.who, "parts": list(self.parts), "partial": self.partial}


class PageState:
    def __init__(self, window_ns: int = 60 * NS, stale_ns: int = 3 * NS):
        self.window_ns = window_ns
        self.stale_ns = stale_ns
        self.turns: deque[Turn] = deque(maxlen=MAX_TURNS)
        self.floor = "none"
        self.vad_open_ns: int | None = None  # the user's speech started here and has not ended
        self.agent_audio_until = 0  # the agent's received audio lasts until about then
        self.spans: deque[dict] = deque(maxlen=MAX_SPANS)  # {"who", "start_ns", "end_ns", "text"}
        self.lat: dict[str, deque[float]] = {k: deque(maxlen=LATENCY_SAMPLES) for k in ("asr", "agent", "tts", "response")}
        self.nodes: dict[str, dict] = {}
        self.notes: deque[str] = deque(maxlen=MAX_NOTES)
        self.resets = 0
        self.version = 0  # +1 at every change; the bridge sends a snapshot when it moved
        # pending latency starts
        self._speech_end: int | None = None  # vad.end, waiting for asr.final
        self._user_words: int | None = None  # the user's last words arrived, waiting for the agent's
        self._agent_words: dict[tuple[int, int, int], int] = {}  # (turn, gen, chunk) said at, waiting for audio
        self._user_done: int | None = None  # end of the user's speech / typed words, waiting for audio.played

    # ---------------------------------------------------------------- folding

    def _turn(self, who: str) -> Turn:
        if not self.turns or self.turns[-1].who != who:
            self.turns.append(Turn(who))
        return self.turns[-1]

    def _user_turn_for_words(self) -> Turn:
        """The turn the user's words go to: the open user turn holding a partial, else the last turn if it is the user's."""
        for turn in reversed(self.turns):
            if turn.who == USER and turn.partial:
                return turn
        return self._turn(USER)

    def _lat(self, key: str, start: int | None, end: int) -> None:
        if start is not None and end >= start:
            self.lat[key].append((end - start) / 1e6)

    def note(self, text: str) -> None:
        self.notes.append(text[:NOTE_CHARS])
        self.version += 1

    def on_event(self, ev: Event, now_ns: int) -> bool:
        """Fold one event in; True if the page's view changed."""
        changed = self._fold(ev, now_ns)
        if changed:
            self.version += 1
        return changed

    def _fold(self, ev: Event, now: int) -> bool:
        if isinstance(ev, AsrPartial):
            turn = self._user_turn_for_words()
            turn.partial = ev.text.strip()
            return True
        if isinstance(ev, AsrFinal):
            turn = self._user_turn_for_words()
            turn.partial = ""
            turn.words(ev.text)
            self._lat("asr", ev.spoken_until_ns or self._speech_end, now)
            self._speech_end = None
            self._user_words = now
            return True
        if isinstance(ev, UserText):
            self._turn(USER).words(ev.text)
            self._user_words = self._user_done = now
            self._span(USER, now, now, ev.text)
            return True
        if isinstance(ev, (AgentSay, AgentRelease)):
            if ev.text.strip():
                self._turn(AGENT).words(ev.text)
            self._lat("agent", self._user_words, now)
            self._user_words = None
            self._agent_words.setdefault((ev.turn, ev.gen, ev.chunk), now)
            return True
        if isinstance(ev, AgentPause):
            self._turn(AGENT).pause(ev.duration_ns / NS)
            return True
        if isinstance(ev, AgentCancel):
            if self.turns and self.turns[-1].who == AGENT or len(self.turns) > 1 and self.turns[-2].who == AGENT:
                turn = self.turns[-1] if self.turns[-1].who == AGENT else self.turns[-2]
                if not turn.parts or "cut" not in turn.parts[-1]:
                    turn.parts.append({"cut": True})
            self.agent_audio_until = now
            self._agent_words.clear()
            return True
        if isinstance(ev, AgentState):
            if ev.floor == self.floor:
                return False
            self.floor = ev.floor
            return True
        if isinstance(ev, TtsAudio):
            start = self._agent_words.pop((ev.turn, ev.gen, ev.chunk), None)
            self._lat("tts", start, now)
            self.agent_audio_until = max(self.agent_audio_until, now) + ev.n_samples * NS // max(ev.sr_hz, 1)
            return start is not None
        if isinstance(ev, AudioPlayed):
            if ev.end_ns > ev.start_ns:
                self._span(AGENT, ev.start_ns, ev.end_ns, ev.text.strip())
                self._lat("response", self._user_done, ev.start_ns)
                self._user_done = None
            return True
        if isinstance(ev, VadStart):
            self.vad_open_ns = ev.at_ns or now
            self._user_done = None
            return True
        if isinstance(ev, VadEnd):
            end = ev.at_ns or now
            if self.vad_open_ns is not None:
                self._span(USER, self.vad_open_ns, end, "")
            self.vad_open_ns = None
            self._speech_end = self._user_done = end
            return True
        if isinstance(ev, NodeHeartbeat):
            node = self.nodes.setdefault(ev.node, {"restarts": 0, "reason": ""})
            fresh = node.get("pid") != ev.pid or node.get("restarting", False)
            node.update(pid=ev.pid, uptime_s=round(ev.uptime_ns / NS, 1), seen_ns=now, restarting=False)
            return fresh
        if isinstance(ev, NodeRestarted):
            node = self.nodes.setdefault(ev.node, {"restarts": 0, "reason": ""})
            node.update(restarts=node["restarts"] + 1, reason=ev.reason, restarting=True, pid=ev.pid)
            return True
        if isinstance(ev, Reset):
            self.turns.clear()
            self.floor = "none"
            self.agent_audio_until = now
            self.resets += 1
            self._speech_end = self._user_words = self._user_done = None
            self._agent_words.clear()
            return True
        return False

    def _span(self, who: str, start: int, end: int, text: str) -> None:
        self.spans.append({"who": who, "start_ns": start, "end_ns": end, "text": text[:SPAN_TEXT_CHARS]})

    # ---------------------------------------------------------------- the page's view

    def node_status(self, name: str, now_ns: int) -> str:
        node = self.nodes[name]
        if node.get("restarting"):
            return "restarting"
        return "silent" if now_ns - node.get("seen_ns", now_ns) > self.stale_ns else "ok"

    def latencies(self) -> dict[str, float | None]:
        return {k: (round(statistics.median(v)) if v else None) for k, v in self.lat.items()}

    def snapshot(self, now_ns: int) -> dict:
        """The JSON-able state message; times relative to now (ms before it) so the page needs no clock of ours."""
        while self.spans and self.spans[0]["end_ns"] < now_ns - self.window_ns:
            self.spans.popleft()
        spans = [
            {"who": s["who"], "from_ms": (now_ns - s["start_ns"]) // 1_000_000, "to_ms": (now_ns - s["end_ns"]) // 1_000_000,
             "text": s["text"]}
            for s in self.spans
        ]
        if self.vad_open_ns is not None:
            open_ms = max(0, now_ns - self.vad_open_ns) // 1_000_000
            spans.append({"who": USER, "from_ms": open_ms, "to_ms": 0, "text": "", "open": True})
        return {
            "type": "state",
            "transcript": [t.as_json() for t in self.turns],
            "floor": self.floor,
            "speaking": {USER: self.vad_open_ns is not None, AGENT: now_ns < self.agent_audio_until},
            "timeline": {"window_ms": self.window_ns // 1_000_000, "spans": spans},
            "latencies_ms": self.latencies(),
            "nodes": {
                name: {"status": self.node_status(name, now_ns), "restarts": n["restarts"], "reason": n["reason"],
                       "uptime_s": n.get("uptime_s")}
                for name, n in sorted(self.nodes.items())
            },
            "notes": list(self.notes),
            "resets": self.resets,
        }

    def transcript_text(self) -> list[tuple[str, str, str]]:
        """(who, committed text, partial) per turn, for tests."""
        return [(t.who, t.text(), t.partial) for t in self.turns]
