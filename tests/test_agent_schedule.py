"""The switch schedule (issue 20, nodes/agent/schedule.py): the listening decision prepared while
the user speaks, armed when the VAD hears the speech stop, fired on the pause step it names,
disarmed when the user speaks again — on the pure core with a scripted model, in virtual time."""

from __future__ import annotations

import pytest
from agent_harness import ScriptedModel, Timeline

from rtchat.bus.clock import s
from rtchat.bus.events import AsrFinal, AsrPartial, VadEnd, VadPause, VadResume, VadStart, Word
from rtchat.configs.schema import AgentConfig
from rtchat.nodes.agent.core import AgentCore


def vad(kind, t_s: float):
    return kind(stream_pos=0, audio_ns=0, at_ns=s(t_s))


def model() -> ScriptedModel:
    """The agent's tag comes next after 0.6 s of silence or more; it then says "sure"."""
    return ScriptedModel(switch=[(r"\((0\.[6-9]|[1-9]\.\d)\)$", True), (".", False)], generate=[(r"\(\d\.\d\)$", " S2: sure")])


def test_a_user_who_speaks_again_disarms_the_schedule_and_the_next_silence_arms_a_new_one():
    m = model()
    core = AgentCore(AgentConfig(), m, 0)
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.3, AsrPartial(text="so", rev=0, utterance=0))
    tl.at(0.5, vad(VadEnd, 0.5)).at(0.8, vad(VadStart, 0.8))  # a hesitation of 0.3 s: not long enough
    tl.at(1.0, AsrPartial(text="so yes", rev=0, utterance=0)).at(1.2, vad(VadEnd, 1.2)).run(2.5)
    assert tl.story("schedule", "prerender", "release", "say", "cycle") == [
        "0.3 schedule planned 0.6",
        "0.3 prerender [' sure']",  # the reply after (0.6), ready while the user speaks
        "0.5 schedule armed 0.6",
        "0.8 schedule disarmed none",
        "1 schedule planned 0.6",  # the reply after "so yes (0.6)" is the same: not sent again
        "1.2 schedule armed 0.6",
        "1.8 schedule fired 0.6",  # 0.6 s after the speech ended, on the step that wrote (0.6)
        "1.8 release 1 ' sure'",
        "1.8 cycle switch",
        "1.8 say ' (0.2)'",  # what follows the reply's first words is generated at once, while they play
        "1.8 cycle continue",
    ]
    assert tl.state_at(2.0).endswith(" S1: so yes (0.6) S2: sure (0.2)")  # the partial took back "so (0.3)"
    assert core.counters["schedule_fired"] == 1 and core.counters["schedule_disarmed"] == 1
    assert m.count("schedule") == 2  # one plan per change of words while the user spoke; the silences were look-ups


def test_words_that_arrive_in_the_silence_are_decided_by_probes_until_the_user_speaks_again():
    """A final that changes the words after vad.end: the schedule no longer has the transcript, so
    each decision is a probe of its own (planning then would delay the decisions due meanwhile)."""
    m = model()
    core = AgentCore(AgentConfig(), m, 0)
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.3, AsrPartial(text="so", rev=0, utterance=0))
    words = (Word(text="so", start_ns=s(0.1), end_ns=s(0.2)), Word(text="yes", start_ns=s(0.25), end_ns=s(0.45)))
    tl.at(0.5, vad(VadEnd, 0.5)).at(0.7, AsrFinal(text="so yes", utterance=0, words=words, spoken_until_ns=s(0.45))).run(1.5)
    assert m.count("schedule") == 1
    probed = [text.rsplit("Transcript:", 1)[1] for kind, text in m.calls if kind == "switch"][10:]  # after the plan's own
    # decided at once when the final came (0.25 s after the last word: "(0.3)"), then every pause step
    assert probed == [" S1: so yes (0.3)", " S1: so yes (0.4)", " S1: so yes (0.5)", " S1: so yes (0.6)"]
    # the reply prepared for "so" still holds for "so yes" (one word added: lookahead.words_close)
    assert tl.story("schedule", "prerender", "release", "say", "cycle") == [
        "0.3 schedule planned 0.6", "0.3 prerender [' sure']", "0.5 schedule armed 0.6",
        "1 release 1 ' sure'", "1 cycle switch",  # not "fired": probes decided
        "1 say ' (0.2)'", "1 cycle continue",
    ]


def test_the_schedule_arms_at_the_first_silence_of_a_pause_and_fires_before_vad_end_when_the_model_says_so():
    """vad.pause (the silence's first 64 ms) arms the schedule, so it fires on the pause step the
    model names — here (0.1) after "so yes" — not when vad.end comes 200 ms into the silence; a
    pause the user speaks through (vad.resume) disarms it and stays written until the words move."""
    m = ScriptedModel(switch=[(r"yes \(0\.[1-9]\)$", True), (".", False)], generate=[(r"\(\d\.\d\)$", " S2: sure")])
    core = AgentCore(AgentConfig(), m, 0)
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.2, AsrPartial(text="so", rev=0, utterance=0))
    tl.at(0.364, VadPause(stream_pos=0, audio_ns=0, at_ns=s(0.3))).at(0.55, VadResume(stream_pos=0, audio_ns=0, at_ns=s(0.5)))
    tl.at(0.7, AsrPartial(text="so yes", rev=1, utterance=0)).at(0.864, VadPause(stream_pos=0, audio_ns=0, at_ns=s(0.8)))
    tl.at(1.0, VadEnd(stream_pos=0, audio_ns=0, at_ns=s(0.8))).run(1.3)
    assert tl.story("schedule", "prerender", "release", "cycle")[:8] == [
        "0.2 schedule planned none",
        "0.2 prerender [' sure']",  # the reply to "so" if the turn were taken at the next step
        "0.364 schedule armed none",  # the user paused after "so": nothing to fire on
        "0.55 schedule disarmed none",  # and went on
        "0.7 schedule planned 0.1",  # the reply after "so yes (0.1)" is the same: not sent again
        "0.864 schedule armed 0.1",  # the silence's first 64 ms; vad.end at 1.0 only confirms it
        "0.9 schedule fired 0.1",  # 0.1 s into the silence, 0.1 s before vad.end
        "0.9 release 1 ' sure'",
    ]
    assert tl.state_at(0.6).endswith(" S1: so (0.2)")  # the pause spoken through, as the training corpus writes it
    assert tl.state_at(0.9).endswith(" S1: so yes (0.1) S2: sure (0.2)")  # the next partial took it back with its words


def late_revision_session(revised_until_s: float):
    """The user asks "do you have any idea", stops at 0.5 s; the schedule fires at (0.1); then the
    recogniser revises the last word ("ideas"), its end at ``revised_until_s``."""
    m = ScriptedModel(switch=[(r"idea \(0\.[1-9]\)$", True), (".", False)], generate=[(r"\(\d\.\d\)$", " S2: sure")])
    core = AgentCore(AgentConfig(), m, 0)

    def said(text: str, until_s: float) -> tuple[Word, ...]:
        return (Word(text=text, start_ns=s(until_s - 0.1), end_ns=s(until_s)),)

    tl = Timeline(core).at(0.05, vad(VadStart, 0.05))
    tl.at(0.3, AsrFinal(text="do you have any", utterance=0, words=said("any", 0.3), spoken_until_ns=s(0.3)))
    tl.at(0.35, AsrPartial(text="idea", rev=1, utterance=0, words=said("idea", 0.45), spoken_until_ns=s(0.45)))
    tl.at(0.564, VadPause(stream_pos=0, audio_ns=0, at_ns=s(0.5)))
    revised = said("ideas", revised_until_s)
    tl.at(0.65, AsrPartial(text="ideas", rev=2, utterance=0, words=revised, spoken_until_ns=s(revised_until_s)))
    return core, tl.run(1.0)


def test_a_word_revised_after_the_switch_but_spoken_before_it_revises_the_users_turn_and_is_no_barge_in():
    """Armed at vad.pause, the schedule often fires before the pause hypothesis's words arrive; a
    revision of the last word spoken before the switch ("idea" → "ideas") belongs before the
    agent's turn — laid after it (the ≤ 2-word deferral) it read as the user barging in, and the
    agent cancelled the reply it had just begun."""
    core, tl = late_revision_session(0.48)
    assert "0.6 schedule fired 0.1" in tl.story("schedule") and tl.story("cancel") == []
    assert tl.state_at(0.7).endswith(" S1: do you have any ideas S2: sure (0.2)")
    assert core.counters["late_revisions"] == 1
    # the same words, ending after the agent took the turn (0.6), are the user speaking over it
    core, tl = late_revision_session(0.62)
    assert tl.story("cancel") == ["0.65 cancel gen=1"] and core.counters["late_revisions"] == 0


def test_with_no_schedule_every_decision_is_a_probe():
    m = model()
    core = AgentCore(AgentConfig(schedule_steps=0), m, 0)
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.3, AsrPartial(text="so yes", rev=0, utterance=0))
    tl.at(0.5, vad(VadEnd, 0.5)).run(1.3)
    assert tl.story("schedule") == [] and m.count("schedule") == 0
    assert tl.story("say", "cycle")[:2] == ["1.1 say ' sure'", "1.1 cycle switch"]  # the same decision, made by probes
    assert m.count("switch") == 7  # at the speech end and every pause step up to (0.6)


@pytest.mark.parametrize("steps", [-1])
def test_schedule_steps_must_not_be_negative(steps):
    with pytest.raises(ValueError, match="agent.schedule_steps.*allowed: an integer >= 0"):
        AgentConfig(schedule_steps=steps)


def test_the_reply_to_the_words_as_they_stand_is_ready_before_the_schedule_fires_for_them():
    """The reply is prepared for the words as they stand even where the schedule does not fire for
    them yet (after "so" the user has not finished): the recogniser's last word or two, which
    often come only in the silence, keep it (``words_close``), so the switch releases it instead
    of generating it. A lookahead guess is made only where that reply has no words."""
    m = model()
    m.rules["switch"].insert(0, (r" so \(\d\.\d\)$", False))  # after "so" alone the user has not finished
    m.rules["lookahead"] = [(r" so$", (" i think", " S1: yes"))]  # a guess would hold no reply
    core = AgentCore(AgentConfig(), m, 0)
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.3, AsrPartial(text="so", rev=0, utterance=0))
    tl.at(0.6, VadEnd(stream_pos=0, audio_ns=0, at_ns=s(0.6)))
    tl.at(0.8, AsrFinal(text="so yes", utterance=0, words=(), spoken_until_ns=s(0.55))).run(1.6)
    assert tl.story("schedule", "prerender", "release", "cycle")[:5] == [
        "0.3 schedule planned none",
        "0.3 prerender [' sure']",  # made for "so", before the schedule fires for anything
        "0.6 schedule armed none",
        "1.4 release 1 ' sure'",  # "so yes" (one word more) kept it: a probe decided at (0.6), nothing generated
        "1.4 cycle switch",
    ]
    assert m.count("generate") == 2  # the reply, and what follows it after the switch


def test_a_reply_generated_at_the_switch_says_its_first_word_then_the_rest_at_once():
    """With no reply ready at the switch (lookahead off), the agent's first word goes out as soon
    as it is known (the next one begun), and the rest of its words follow in the next cycle, at
    once, while the first plays — not a listening interval later."""
    m = ScriptedModel(switch=[(r"\((0\.[6-9]|[1-9]\.\d)\)$", True), (".", False)],
                      generate=[(r"\(\d\.\d\)$", " S2: sure thing (0.4) so"), (r"S2: sure$", " thing my friend (0.4)")])
    core = AgentCore(AgentConfig(lookahead=False), m, 0)
    assert core.cfg.first_chunk_words == 1  # the default
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.3, AsrPartial(text="so", rev=0, utterance=0))
    tl.at(0.5, vad(VadEnd, 0.5)).run(1.5)
    says = [(t, ev.text, ev.chunk) for t, ev in tl.events if type(ev).__name__ == "AgentSay"]
    assert says[:2] == [(s(1.1), " sure", 0), (s(1.1), " thing my friend (0.4)", 1)]  # at once, not interval_s later
    assert tl.state_at(1.4).endswith(" S1: so (0.6) S2: sure thing my friend (0.4)")


def test_with_first_chunk_words_0_a_reply_is_said_up_to_its_first_pause_and_goes_on_an_interval_later():
    """The reference's cadence: the first words up to the pause in one chunk; the next cycle
    ``interval_s`` (0.8 s) later writes the pause and what follows."""
    m = ScriptedModel(switch=[(r"\((0\.[6-9]|[1-9]\.\d)\)$", True), (".", False)],
                      generate=[(r"\(\d\.\d\)$", " S2: sure thing (0.4) so"), (r"thing$", " (0.4) so")])
    core = AgentCore(AgentConfig(lookahead=False, first_chunk_words=0), m, 0)
    tl = Timeline(core).at(0.05, vad(VadStart, 0.05)).at(0.3, AsrPartial(text="so", rev=0, utterance=0))
    tl.at(0.5, vad(VadEnd, 0.5)).run(2.0)
    assert tl.story("say") == ["1.1 say ' sure thing'", "1.9 say ' (0.4)'"]


def test_first_chunk_words_must_not_be_negative():
    with pytest.raises(ValueError, match="first_chunk_words.*got -1; allowed: an integer >= 0"):
        AgentConfig(first_chunk_words=-1)
