"""The terminal conversation: keystrokes → words on the bus, agent events → screen text."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from rtchat.bus.eventlog import LogReader
from rtchat.bus.events import AgentCancel, AgentPause, AgentRelease, AgentSay, AsrFinal, Reset, UserText
from rtchat.bus.wire import decode
from rtchat.ui.terminal import TerminalView


def type_keys(view: TerminalView, keys: str):
    events, screen = [], ""
    for ch in keys:
        evs, text = view.on_key(ch)
        events += evs
        screen += text
    return events, screen


def test_each_word_is_sent_when_space_or_enter_is_pressed():
    view = TerminalView(color=False)
    events, screen = type_keys(view, "hello  there\nfri")
    assert events == [UserText(text="hello"), UserText(text="there")]
    assert screen == "\nS1: hello there fri"
    assert view.word == "fri"


def test_backspace_edits_the_word_being_typed():
    view = TerminalView(color=False)
    events, screen = type_keys(view, "helo\x7flo ")
    assert events == [UserText(text="hello")]
    assert screen.endswith("helo\b \blo")


def test_agent_words_and_pauses_appear_on_the_agent_line():
    view = TerminalView(color=False)
    type_keys(view, "hi ")
    out = view.on_event(AgentRelease(turn=1, gen=0, n_chunks=1, text=" Hey there!", chunk=0))
    out += view.on_event(AgentSay(turn=1, gen=0, text=" How are (0.4) you?", chunk=1))
    out += view.on_event(AgentPause(turn=1, gen=0, duration_ns=800_000_000))
    assert out == "\nS2: Hey there! How are (0.4) you? (0.8)"
    out = view.on_event(AgentPause(turn=1, gen=0, duration_ns=800_000_000))
    assert out == "\b" * 6 + " (1.6)"  # one growing silence, as in the transcript
    _, screen = type_keys(view, "good")
    assert screen == "\nS1: good"


def test_spoken_words_appear_on_the_user_line_but_not_inside_a_word_being_typed():
    view = TerminalView(color=False)
    out = view.on_event(AsrFinal(text=" Hello there,", utterance=0))
    out += view.on_event(AsrFinal(text="how are you", utterance=0))
    out += view.on_event(AgentSay(turn=1, gen=0, text=" good", chunk=0))
    assert out == "\nS1: Hello there, how are you\nS2: good"
    type_keys(view, "wai")
    assert view.on_event(AsrFinal(text="later", utterance=1)) == ""
    assert view.on_event(AsrFinal(text=" ", utterance=1)) == ""


def test_pauses_are_dimmed_on_a_colour_terminal():
    view = TerminalView(color=True)
    out = view.on_event(AgentSay(turn=1, gen=0, text=" well (0.5) yes", chunk=0))
    assert "\x1b[2m(0.5)\x1b[0m" in out and "\x1b[2mwell" not in out


def test_reset_and_exit_words_are_commands_not_speech():
    view = TerminalView(color=False)
    events, screen = type_keys(view, "--reset ")
    assert events == [Reset(reason="terminal --reset")] and "new conversation" in screen
    events, _ = type_keys(view, "--exit\n")
    assert events == [] and view.done


def test_control_characters_and_emoji():
    view = TerminalView(color=False)
    events, _ = type_keys(view, "\x1b\x01héllo🙂 ")
    assert events == [UserText(text="héllo🙂")]
    assert view.on_event(AgentCancel(turn=2, gen=3)) == " —"


# ---------------------------------------------------------------- a real terminal (tmux)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


def wait_for_screen(session: str, predicate, timeout_s: float) -> str:
    end = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < end:
        screen = tmux("capture-pane", "-p", "-t", session)
        if predicate(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"screen after {timeout_s} s:\n{screen}")


@pytest.mark.slow
@pytest.mark.model
def test_chat_works_in_a_real_terminal(tmp_path):
    assert shutil.which("tmux"), "tmux is installed by scripts/setup-env.sh"
    session = f"rtchat-chat-{os.getpid()}"
    command = " ".join(
        shlex.quote(a)
        for a in [
            sys.executable, "-m", "rtchat.cli", "chat", f"run.runs_dir={tmp_path}",
            "--agent-starts", "--opening", "Hi! How are you?", "--agent-name", "Ava", "agent.seed=1",
        ]
    )
    tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "40", f"{command}; echo EXITED=$?; sleep 60")
    try:
        wait_for_screen(session, lambda s: "S2: Hi! How are you?" in s, 240)
        tmux("send-keys", "-t", session, "-l", "--", "good thanks ")
        screen = wait_for_screen(session, lambda s: "S1: good thanks" in s, 20)
        assert "S2: Hi! How are you?" in screen
        tmux("send-keys", "-t", session, "-l", "--", "--exit ")
        screen = wait_for_screen(session, lambda s: "EXITED=" in s, 60)
        assert "EXITED=0" in screen, screen
    finally:
        tmux("kill-session", "-t", session)
    [run_dir] = [d for d in tmp_path.iterdir() if d.is_dir()]
    texts = [decode(r.frames).event for r in LogReader(run_dir)]
    assert [e.text for e in texts if isinstance(e, UserText)][:2] == ["good", "thanks"]
