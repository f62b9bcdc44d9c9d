"""The terminal conversation: type to the agent as if speaking, read its words as they come.

Keystrokes are read one by one (no Enter needed); each word goes to the agent as ``user.text``
when space or Enter is pressed, so typing speed and hesitations become the user's timing, as
speech would. The agent's words appear as it produces them, its pauses shown as ``(0.8)``.
Typing the word ``--reset`` starts a new conversation; ``--exit`` (or Ctrl-C) quits.

    rtchat chat [--agent-name Ava --user-name Sam --summary "…" --agent-starts --opening "Hi!"]
    python launcher.py --ui terminal          (the same, with the profile's persona)

(the ``chat`` command itself is ``rtchat/chat.py``: the launcher with this front-end.)

In a voice session the user's recognised words (``asr.final``) appear on the user's lines too.

Consumes: agent.say, agent.release, agent.pause, agent.cancel, asr.final, ctl.reset.
Produces: user.text, ctl.reset.
"""

from __future__ import annotations

import os
import sys
import termios
import tty

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock
from rtchat.bus.events import AgentCancel, AgentPause, AgentRelease, AgentSay, AsrFinal, Event, Reset, UserText
from rtchat.bus.wire import WireError
from rtchat.configs.schema import Config

USER, AGENT = "S1", "S2"
RESET_WORD, EXIT_WORD = "--reset", "--exit"
BACKSPACES = ("\x7f", "\b")
DIM, PLAIN = "\x1b[2m", "\x1b[0m"


class TerminalView:
    """Pure: turns keystrokes into bus events and bus events into screen text."""

    def __init__(self, color: bool = True):
        self.color = color
        self.speaker: str | None = None  # whose line the cursor is on
        self.word = ""
        self.done = False
        self.pause_ns = 0  # the agent's silence written last, shown as one growing pause
        self.pause_chars = 0  # its width on screen, to overwrite it when it grows

    def _line_for(self, speaker: str) -> str:
        self.pause_ns = self.pause_chars = 0
        if self.speaker == speaker:
            return ""
        self.speaker = speaker
        return f"\n{speaker}:"

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{PLAIN}" if self.color else text

    def on_key(self, ch: str) -> tuple[list[Event], str]:
        """(events to publish, text to write) for one typed character."""
        if ch in (" ", "\n", "\r"):
            return self._submit()
        if ch in BACKSPACES:
            if not self.word:
                return [], ""
            self.word = self.word[:-1]
            return [], "\b \b"
        if ch == "\x04":  # Ctrl-D
            self.done = True
            return [], ""
        if not ch.isprintable():
            return [], ""
        out = self._line_for(USER) + (" " if not self.word else "")
        self.word += ch
        return [], out + ch

    def _submit(self) -> tuple[list[Event], str]:
        word, self.word = self.word, ""
        if not word:
            return [], ""
        if word == EXIT_WORD:
            self.done = True
            return [], self._dim(" (bye)") + "\n"
        if word == RESET_WORD:
            self.speaker = None
            return [Reset(reason="terminal --reset")], self._dim(" — new conversation —") + "\n"
        return [UserText(text=word)], ""

    def on_event(self, ev: Event) -> str:
        if isinstance(ev, (AgentSay, AgentRelease)):
            return self._line_for(AGENT) + self._format(ev.text)
        if isinstance(ev, AgentPause):
            erase = "\b" * self.pause_chars if self.speaker == AGENT else self._line_for(AGENT)
            self.pause_ns += ev.duration_ns
            text = f" ({self.pause_ns / 1e9:.1f})"
            self.pause_chars = len(text)
            return erase + self._dim(text)
        if isinstance(ev, AgentCancel):
            return self._dim(" —")
        if isinstance(ev, AsrFinal) and ev.text.strip() and not self.word:  # not inside a word being typed
            return self._line_for(USER) + " " + ev.text.strip()
        if isinstance(ev, Reset) and ev.reason != "terminal --reset":
            self.speaker = None
            return self._dim("\n— new conversation —\n")
        return ""

    def _format(self, text: str) -> str:
        """Agent text with its pause tokens dimmed."""
        out = []
        for token in text.split(" "):
            is_pause = token.startswith("(") and token.endswith(")") or token == "<p>"
            out.append(self._dim(token) if is_pause else token)
        return " ".join(out)


class TerminalFrontend:
    """The shell: the launcher polls our bus socket and stdin with its own, and calls us."""

    def __init__(self, cfg: Config, clock: Clock, stdin=None, stdout=None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.view = TerminalView(color=self.stdout.isatty())
        self.client = BusClient(cfg.bus, src="terminal", session=cfg.run.id, clock=clock,
                                topics=("agent.", "asr.final", "ctl.reset"))
        self.fd = self.stdin.fileno()
        self.saved = None

    def start(self) -> None:
        self.client.handshake(int(5e9))
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)  # keys one by one, no echo; Ctrl-C still interrupts
        self.write("Type to talk; each word is sent when you press space or Enter. --reset, --exit.\n")

    def poll_items(self) -> list:
        return [self.client.data, self.fd]

    def on_ready(self, item) -> None:
        if item == self.fd:
            data = os.read(self.fd, 1024)
            if not data:
                self.view.done = True
                return
            for ch in data.decode("utf-8", errors="replace"):
                events, text = self.view.on_key(ch)
                self.client.publish_many(events)
                self.write(text)
            return
        while self.client.data.poll(0):
            try:
                ev = self.client.decode(self.client.data.recv_multipart()).event
            except WireError:
                continue
            self.write(self.view.on_event(ev))

    @property
    def done(self) -> bool:
        return self.view.done

    def write(self, text: str) -> None:
        if text:
            self.stdout.write(text)
            self.stdout.flush()

    def close(self) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None
        self.write("\n")
        self.client.close()


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()

