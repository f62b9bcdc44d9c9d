"""The terminal conversation: keystrokes → words on the bus, agent events → screen text."""

from __future__ import annotations

from rtchat.bus.events import AgentCancel, AgentPause, AgentRelease, AgentSay, Reset, UserText
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
    _, screen = type_keys(view, "good")
    assert screen == "\nS1: good"


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
