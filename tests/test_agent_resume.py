"""A restarted agent process continues the conversation of the one that was killed: its last
``agent.state`` and the input logged after it, read from the run's event log."""

from __future__ import annotations

from agent_harness import FakeAudio, Timeline, agent, answering_model

from rtchat.bus.clock import s
from rtchat.bus.eventlog import LogWriter
from rtchat.bus.events import AgentCancel, AgentSay, AgentState, AsrFinal, Envelope, UserText, VadEnd, VadStart
from rtchat.bus.wire import encode
from rtchat.nodes.agent.node import resume_from_log


def first_process(until_s: float) -> Timeline:
    """The user asks at 0.5–2.5 s; the agent answers (3.2 s) and goes on (4 s)."""
    tl = Timeline(agent(answering_model(), lookahead=False), FakeAudio())
    return tl.user("hello there how are you", 0.5, 2.5, 2.7).run(until_s)


def test_a_restarted_agent_continues_from_its_last_state_with_the_words_said_while_it_was_down():
    before = first_process(4.5)  # killed after its second chunk
    states = [ev for _, ev in before.events if isinstance(ev, AgentState)]
    gen = max(ev.gen for _, ev in before.events if isinstance(ev, AgentState | AgentCancel))
    said_while_down = [
        (s(5.0), VadStart(stream_pos=0, audio_ns=0, at_ns=s(4.9))),
        (s(6.2), VadEnd(stream_pos=0, audio_ns=0, at_ns=s(6.0))),
        (s(6.5), AsrFinal(text="it was fine", utterance=1)),
    ]
    after = agent(answering_model(), lookahead=False)
    after.resume(states[-1], gen, said_while_down, now_ns=s(7.0))
    assert after.turn == before.core.turn + 1 and after.gen == before.core.gen  # the user took the floor: a new turn
    body = after.t.text.split("Transcript:", 1)[1]
    assert body.startswith(states[-1].sequence.split("Transcript:", 1)[1])
    assert body.endswith(" S1: it was fine")
    assert after.floor == "user" and after.opening is None
    tl = Timeline(after)
    tl.now = s(7.0)
    tl.run(9.0)
    assert tl.events and any(isinstance(ev, AgentState) for t, ev in tl.events if t == s(7.0))  # the state goes out at once
    assert all(ev.gen >= gen for _, ev in tl.events if hasattr(ev, "gen"))


def log_of(path, timed_events) -> None:
    w = LogWriter(path, {"run": "t"})
    for i, (t, ev) in enumerate(timed_events):
        w.append(t, encode(ev, Envelope(v=1, src="agent", seq=i, t_ns=t, session="t")))
    w.close()


def test_resume_from_log_reads_the_last_state_and_what_followed_it(tmp_path):
    before = first_process(4.5)
    log_of(tmp_path / "events.rtlog", [*before.events, (s(6.0), UserText(text="tell me more"))])
    core = agent(answering_model(), lookahead=False)
    assert resume_from_log(core, tmp_path / "events.rtlog", now_ns=s(7.0))
    assert core.t.text.endswith(" S1: tell me more") and core.counters["resumes"] == 1
    [say] = [ev for _, ev in before.events if isinstance(ev, AgentSay)][-1:]
    assert say.text.strip() in core.t.text  # what the killed process said is still in the transcript


def test_a_fresh_session_has_nothing_to_resume(tmp_path):
    core = agent(answering_model())
    assert not resume_from_log(core, tmp_path / "events.rtlog", now_ns=s(1))
    log_of(tmp_path / "events.rtlog", [(s(0.5), UserText(text="hi"))])  # events, but no agent state yet
    assert not resume_from_log(core, tmp_path / "events.rtlog", now_ns=s(1))
    assert core.counters["resumes"] == 0
