"""The agent core on virtual time: scripted timelines with exact event sequences (STYLE §5).

Structure, so the same scenarios can run on real models later:
- the models (``ScriptedModel``, ``ChaosModel``) and ``Timeline`` live in ``agent_harness.py``.
- ``SCENARIOS``: model-agnostic timelines, ``scenario(model) -> Timeline``. The scripted tests
  assert their exact story; ``test_invariants_hold_for_any_model`` runs every scenario on the
  ``any_model`` fixture and checks only what must hold for any model (``check_invariants``).
  Add AgentLM instances (tiny random OPT / Llama) to that fixture's params to run them there.
"""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
from agent_harness import ChaosModel, FakeAudio, ScriptedModel, Timeline, agent, answering_model

from rtchat.bus.clock import ms, s
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
    ConfigChange,
    Envelope,
    Reset,
    UserText,
    VadEnd,
    VadStart,
    Word,
)
from rtchat.bus.wire import decode, encode
from rtchat.configs.schema import AgentConfig
from rtchat.nodes.agent.core import AgentCore
from rtchat.nodes.agent.cycle import MAX_GENERATIONS
from rtchat.nodes.agent.silence import VAD_STALE_NS
from rtchat.nodes.agent.transcript import PAUSE_RE, grammar_errors

# ---------------------------------------------------------------- invariants (any model)


def check_invariants(tl: Timeline) -> None:
    """What holds whatever the model says: a well-formed sequence whose floor is its last tag's
    speaker; the floor moves to the agent only by a switch decision (or an input rewrite), to the
    user only on input; events that survive the wire; turn/gen/chunk counters that only grow."""
    turn = gen = 0
    chunks: dict[tuple[int, int], int] = {}
    env = Envelope(v=1, src="agent", seq=0, t_ns=0, session="t")
    interval = s(tl.core.cfg.interval_s)
    for st in tl.steps:
        decisions = [ev.decision for ev in st.out if isinstance(ev, AgentCycle)]
        if st.floor_before == "user" and st.floor_after == "agent" and st.given is None:
            assert "switch" in decisions, f"floor to agent at {st.t} without a switch: {decisions}"
        if st.floor_before == "agent" and st.floor_after == "user":
            assert isinstance(st.given, AsrPartial | AsrFinal | UserText | Reset), f"floor to user at {st.t} on a tick"
        for ev in st.out:
            assert decode(encode(ev, env)).event == ev
            assert ev.turn >= turn and ev.gen >= gen, f"counters went back at {st.t}: {ev}"
            if isinstance(ev, AgentCancel):
                assert ev.gen == gen + 1
            turn, gen = ev.turn, ev.gen
            if isinstance(ev, AgentState):
                prefix_len = ev.sequence.index("Transcript:") + len("Transcript:")
                assert grammar_errors(ev.sequence, prefix_len) == [], (st.t, ev.sequence[prefix_len:])
                last = re.findall(r" (S\d):", ev.sequence[prefix_len:])[-1]
                assert ev.floor == ("agent" if last == "S2" else "user")
            if isinstance(ev, AgentSay | AgentRelease):
                assert ev.text.strip() and "\n" not in ev.text and not ev.text.endswith(" ")
                assert ev.chunk >= chunks.get((ev.turn, ev.gen), 0)
                chunks[(ev.turn, ev.gen)] = ev.chunk + (ev.n_chunks if isinstance(ev, AgentRelease) else 1)
                assert all(float(v) <= tl.core.cfg.max_agent_pause_s for v in PAUSE_RE.findall(ev.text) if v != ".")
            if isinstance(ev, AgentRelease):
                assert ev.n_chunks >= 1
            if isinstance(ev, AgentPrerender):
                assert ev.chunks and all(c.strip() for c in ev.chunks)
            if isinstance(ev, AgentPause):
                assert ev.duration_ns == interval
            if isinstance(ev, AgentCycle):
                assert ev.decision in ("listen", "switch", "continue", "wait", "yield", "hold")
                assert all(isinstance(v, int) for v in ev.timings_ns.values())


# ---------------------------------------------------------------- scenarios (model-agnostic)


def scenario_user_turn(model, **cfg) -> Timeline:
    """User speaks 0.5–2.5 s, final at 2.7 s; the agent answers and goes on."""
    return Timeline(agent(model, **({"lookahead": False} | cfg))).user("hello there how are you", 0.5, 2.5, 2.7).run(5.0)


def scenario_lookahead_turn(model, **cfg) -> Timeline:
    return Timeline(agent(model, **cfg)).user("hello there how are you", 0.5, 2.5, 2.7).run(5.0)


def scenario_agent_starts(model, **cfg) -> Timeline:
    cfg = {"agent_starts": True, "opening_utterance": "Hi! How are you?"} | cfg
    return Timeline(agent(model, **cfg)).run(5.0)


def scenario_barge_in(model, words: str = "wait actually I need to go", **cfg) -> Timeline:
    """The agent answers at length; the user talks over it at 4.3 s."""
    tl = Timeline(agent(model, **({"lookahead": False} | cfg)), FakeAudio(0.25))
    tl.user("hello there how are you", 0.5, 2.5, 2.7)
    tl.at(4.3, AsrPartial(text=words.split()[0], rev=0, utterance=1))
    return tl.at(4.9, AsrFinal(text=words, utterance=1)).run(7.0)


def scenario_partial_revised_after_switch(model, final: str = "so I was thinking", **cfg) -> Timeline:
    tl = Timeline(agent(model, **({"lookahead": False} | cfg)), FakeAudio(0.25))
    tl.at(0.5, AsrPartial(text="so I was thinking", rev=0, utterance=0))
    return tl.at(2.3, AsrFinal(text=final, utterance=0)).run(3.5)


def scenario_long_conversation(model, **cfg) -> Timeline:
    tl = Timeline(agent(model, **({"lookahead": False, "max_history_words": 30} | cfg)), FakeAudio(0.25))
    for i, start in enumerate([0.5, 6.5, 12.5]):
        tl.user(f"turn {i} one two three four five six", start, start + 1.5, start + 1.7, utterance=i)
    return tl.run(18.0)


def scenario_odd_input(model, **cfg) -> Timeline:
    tl = Timeline(agent(model, **({"lookahead": False} | cfg)))
    tl.at(0.3, UserText(text=" \t\n ")).at(0.5, AsrPartial(text="héllo 🙂", rev=0, utterance=0))
    tl.at(0.7, AsrPartial(text="   ", rev=1, utterance=0)).at(0.9, AsrFinal(text="héllo 🙂 S2: naïve\u200b", utterance=0))
    for i in range(200):  # a flood of revisions, faster than any cycle
        tl.at(1.0 + i / 1000, AsrPartial(text=" ".join(["word"] * (i + 1)), rev=i, utterance=1))
    tl.at(1.25, VadStart(stream_pos=0, audio_ns=0))
    return tl.at(1.3, AsrFinal(text="done", utterance=1)).run(4.0)


def scenario_reset_and_config(model, **cfg) -> Timeline:
    tl = Timeline(agent(model, **({"lookahead": False} | cfg)), FakeAudio(0.25))
    tl.user("hello there how are you", 0.5, 2.5, 2.7)
    tl.at(3.3, ConfigChange(changes={"agent.user_name": "Anna", "agent.summary": "new", "tts.voice": "x"}))
    return tl.at(3.5, Reset(reason="test")).run(5.0)


SCENARIOS = {
    "user_turn": scenario_user_turn,
    "lookahead_turn": scenario_lookahead_turn,
    "agent_starts": scenario_agent_starts,
    "barge_in": scenario_barge_in,
    "partial_revised_after_switch": scenario_partial_revised_after_switch,
    "long_conversation": scenario_long_conversation,
    "odd_input": scenario_odd_input,
    "reset_and_config": scenario_reset_and_config,
}


@pytest.fixture(params=["chaos-1", "chaos-2", "chaos-3", "silent", "scripted", "tiny-opt", "tiny-llama"])
def any_model(request):
    """Models for the invariant checks: scripted and random-output fakes, and the real AgentLM
    (default decoding: dynamic contrastive sampling) on tiny randomly initialised OPT (byte-level
    BPE) and Llama (SentencePiece-style) models."""
    kind = request.param
    if kind.startswith("chaos"):
        return ChaosModel(int(kind.split("-")[1]))
    if kind == "silent":
        return ScriptedModel(default_generate="", default_lookahead=("", ""))
    if kind.startswith("tiny"):
        from tiny_models import tiny_llama, tiny_opt

        from rtchat.nodes.agent.lm import AgentLM

        tok = request.getfixturevalue("bpe_tok" if kind == "tiny-opt" else "sp_tok")
        build = tiny_opt if kind == "tiny-opt" else tiny_llama
        cfg = dataclasses.replace(AgentConfig(), device="cpu", lookahead_max_tokens=16, seed=3)
        return AgentLM(build(len(tok)), tok, cfg)
    return answering_model()


@pytest.mark.parametrize("name", SCENARIOS)
def test_invariants_hold_for_any_model(name, any_model):
    check_invariants(SCENARIOS[name](any_model))


class InputSeededChaos(ChaosModel):
    """ChaosModel whose answer to a call depends only on the call's input, not on how many calls
    came before: two runs that call it a different number of times still get the same answers."""

    def __init__(self, seed: int, ignore_done: bool):
        super().__init__(seed)
        self.seed, self.ignore_done = seed, ignore_done

    def _reseed(self, *key) -> None:
        self.rng = random.Random(repr((self.seed, *key)))

    def generate(self, text, max_new_tokens, done=None):
        self._reseed("generate", text)
        return super().generate(text, max_new_tokens, done)

    def lookahead(self, text, max_new_tokens, max_response_tokens, abort=None):
        self._reseed("lookahead", text)
        return super().lookahead(text, max_new_tokens, max_response_tokens, abort)

    def embed_continuation(self, context, continuation):
        self._reseed("embed", context, continuation)
        return super().embed_continuation(context, continuation)

    def next_speaker_prob(self, text, tag):
        self._reseed("switch", text)
        return super().next_speaker_prob(text, tag)


@pytest.mark.parametrize("name", SCENARIOS)
def test_stopping_generation_once_the_decision_is_settled_changes_no_decision(name):
    """The core stops a generation as soon as the text so far settles the decision. Against the
    same model generating in full: every decision, word, pause and state is the same."""
    shortened = 0
    for seed in range(12):
        full, stopped = (SCENARIOS[name](InputSeededChaos(seed, ignore_done=ignore)) for ignore in (True, False))

        def seen(tl: Timeline) -> list:
            return [(t, ev.decision) if isinstance(ev, AgentCycle) else (t, ev) for t, ev in tl.events]

        assert seen(stopped) == seen(full), f"seed {seed}"
        predictions = [
            (a.prediction, b.prediction)
            for (_, a), (_, b) in zip(full.events, stopped.events, strict=True)
            if isinstance(a, AgentCycle)
        ]
        assert all(a.startswith(b) for a, b in predictions)
        shortened += sum(len(b) < len(a) for a, b in predictions)
    assert shortened > 0, "no generation stopped early: the check above compared nothing"


# ---------------------------------------------------------------- scripted scenarios, exact


def test_user_speaks_then_the_agent_takes_the_floor_by_3_2_s():
    tl = scenario_user_turn(answering_model())
    assert tl.story("in", "say", "pause", "cycle") == [
        "1 in partial 'hello there'",
        "1.5 in partial 'hello there how'",
        "2 in partial 'hello there how are'",
        "2.5 in partial 'hello there how are you'",
        "2.7 in final 'hello there how are you'",
        '3.2 say " I\'m good, thanks."',
        "3.2 cycle switch",
        "4 say ' And how was your day today?'",
        "4 cycle continue",
        "4.8 pause 0.8",
        "4.8 cycle wait",
    ]
    assert tl.state_at(3.1) == " S1: (0.9) hello there how are you (0.6)"  # the final kept the pause since 2.5
    assert tl.state_at(5.0) == " S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks. And how was your day today? (0.8)"
    assert [e.turn for _, e in tl.events if isinstance(e, AgentSay)] == [1, 1]
    assert [e.chunk for _, e in tl.events if isinstance(e, AgentSay)] == [0, 1]


def test_every_cycle_records_its_input_prediction_decision_and_timings():
    tl = scenario_user_turn(answering_model())
    cycles = {t: e for t, e in tl.events if isinstance(e, AgentCycle)}
    assert cycles[s(2.8)] == AgentCycle(
        turn=0,
        gen=0,
        input_text="~hello there how are you *hello there how are you",
        prediction="P(S2:)=0.000",
        decision="listen",
        timings_ns={"model": 1000},
        forwards={"model": 1},
    )
    assert (cycles[s(2.0)].input_text, cycles[s(2.4)].input_text) == ("~hello there how are", "")
    assert (cycles[s(3.2)].prediction, cycles[s(3.2)].decision) == ("P(S2:)=1.000", "switch")


def test_listening_cycles_every_0_4_s_discard_predictions_not_starting_with_s2():
    tl = scenario_user_turn(answering_model())
    listens = [line.split()[0] for line in tl.story("listen")]
    assert listens == ["0.4", "0.8", "1.2", "1.6", "2", "2.4", "2.8"]


def test_user_silence_grows_one_pause_in_steps():
    tl = Timeline(agent(ScriptedModel(), lookahead=False)).at(0.25, UserText(text="hi")).run(0.7)
    assert tl.story("state") == [
        "0.1 state user: S1: (0.1)",
        "0.2 state user: S1: (0.2)",
        "0.25 state user: S1: (0.2) hi",
        "0.35 state user: S1: (0.2) hi (0.1)",
        "0.45 state user: S1: (0.2) hi (0.2)",
        "0.55 state user: S1: (0.2) hi (0.3)",
        "0.65 state user: S1: (0.2) hi (0.4)",
    ]


def test_a_late_tick_writes_the_exact_silence():
    core = agent(ScriptedModel(), lookahead=False, interval_s=5.0, listen_interval_s=5.0)
    core.on_tick(ms(730))
    assert core.t.body == " S1: (0.7)"
    assert core.deadline_ns() == ms(830)


def test_agent_waits_for_the_pause_it_wrote_capped():
    model = answering_model(generate=[(r"thanks\.$", " Well (2.5) you know S1:"), (r"Well \(2\.5\)$", " you know (99999.9) yes")])
    tl = scenario_user_turn(model).run(17.0)
    assert tl.story("say", "pause", "cycle") == [
        '3.2 say " I\'m good, thanks."',
        "3.2 cycle switch",
        "4 say ' Well (2.5)'",  # cut after the first pause; the next cycle waits 2.5 s, not 0.8
        "4 cycle continue",
        "6.5 say ' you know (10.0)'",  # an "endless" pause is capped at max_agent_pause_s
        "6.5 cycle continue",
        "16.5 say ' (0.2)'",
        "16.5 cycle continue",
    ]


def test_agent_pause_8b_grows_and_the_agent_resumes():
    model = ScriptedModel(
        generate=[
            (r"you \(0\.[5-9]\)$", " S2: I'm good. S1:"),
            (r"good\.( \(\d+\.\d\))?$", [" S1: and", " S1: and", " S1: and", " So anyway."]),
        ]
    )
    tl = scenario_user_turn(model).run(7.0)
    assert tl.story("say", "pause", "cycle") == [
        '3.2 say " I\'m good."',
        "3.2 cycle switch",
        "4 pause 0.8",
        "4 cycle wait",
        "4.8 pause 0.8",
        "4.8 cycle wait",
        "5.6 pause 0.8",
        "5.6 cycle wait",
        "6.4 say ' So anyway.'",
        "6.4 cycle continue",
    ]
    assert tl.state_at(7.0).endswith("S2: I'm good. (2.4) So anyway.")  # exactly 3 × 0.8 s, as sent to the TTS


def test_agent_pauses_stay_exact_with_an_interval_off_the_tenths():
    tl = scenario_agent_starts(ScriptedModel(default_generate=" S1: hm"), opening_utterance="", interval_s=0.25)
    pauses = [line.split(":", 2)[2] for line in tl.story("state")][:5]
    assert pauses == [" (0.3)", " (0.5)", " (0.8)", " (1.0)", " (1.3)"]  # 0.25 s each, rounded from the exact sum


def test_switch_with_lookahead_prerenders_and_releases_the_reply():
    reply = " S2: I'm fine, thanks! And how was your day today? S"
    model = ScriptedModel(
        lookahead=[
            (r"are you( \(0\.[0-4]\))?$", (" (0.6)", reply)),
            (r"hello there( how)?( are)?( \(\d\.\d\))?$", (" how are you", reply)),
        ],
        switch=[(r"you \(0\.[6-9]\)$", True)],
        generate=[(r"today\?$", " S1: yes")],
    )
    tl = scenario_lookahead_turn(model)
    assert tl.story("in", "prerender", "release", "say", "pause", "cycle") == [
        "1 in partial 'hello there'",
        "1.2 prerender [\" I'm fine, thanks! And how was your\", ' day today?']",  # later identical ones are not re-sent
        "1.5 in partial 'hello there how'",
        "2 in partial 'hello there how are'",
        "2.5 in partial 'hello there how are you'",
        "2.7 in final 'hello there how are you'",
        '3.2 release 1 " I\'m fine, thanks! And how was your"',
        "3.2 cycle switch",
        "4 release 1 ' day today?'",
        "4 cycle continue",
        "4.8 pause 0.8",
        "4.8 cycle wait",
    ]
    releases = [e for _, e in tl.events if isinstance(e, AgentRelease)]
    assert [(r.turn, r.gen, r.chunk) for r in releases] == [(1, 0, 0), (1, 0, 1)]
    # the model is asked for the switch schedule once per change of words (the pauses after them
    # side by side: partials at 1, 1.5, 2 and 2.5; the final repeats the last) and the listening
    # cycles look their probability up; a new prediction after every cycle whose context was
    # rewritten; at 3.2 the prediction made at 2.8 on "you (0.3)" is kept (only its pause grew)
    # and the schedule says the agent's tag comes next
    assert (model.count("lookahead"), model.count("schedule"), model.count("embed")) == (7, 4, 1)
    assert tl.core.counters["schedule_hits"] >= 4
    # before each guess the reply to the words as they stood was asked for first (the schedule's,
    # fired or not yet: after the pause it fires on or its next step), came back without words
    # (the scripted " (0.2)"), and the lookahead guessed instead
    assert tl.core.counters["schedule_replies"] == 5 and model.count("generate") == 6


def test_a_reply_to_the_words_as_they_stood_holds_while_only_the_last_word_or_two_change():
    from rtchat.nodes.agent.lookahead import words_close

    assert words_close(" S1: with my fae", " S1: with my family (0.3)")  # the final revised the last word
    assert words_close(" S1: back from a", " S1: back from a trip")  # … or added one
    assert words_close(" S1: so (0.2)", " S1: so yes we")
    assert not words_close(" S1: so", " S1: so yes we went")  # three new words: a new reply
    assert not words_close(" S1: we went to the lake", " S1: we went to a river")  # two of its own taken back


def test_lookahead_keeps_a_prediction_the_actual_words_confirm():
    model = ScriptedModel(lookahead=[(r"how are$", (" you", " S2: fine S"))], switch=[(r"you( \(\d\.\d\))?$", True)])
    tl = Timeline(agent(model)).at(0.4, UserText(text="how are")).at(0.7, UserText(text="you")).run(0.8)
    assert tl.story("prerender", "release", "cycle") == ["0.4 prerender [' fine']", "0.8 release 1 ' fine'", "0.8 cycle switch"]
    assert ("embed", " (0.2) you (0.1)") in model.calls and model.count("lookahead") == 1
    assert tl.state_at(0.8) == " S1: (0.3) how are (0.2) you (0.1) S2: fine"


def test_a_kept_prediction_without_a_reply_gets_one_generated_when_the_probe_says_the_turn_ends():
    # the prediction made on "so" has the user pause and go on (no reply); only silence follows,
    # which the prediction matched (kept, no new lookahead); once the probe says the agent's tag
    # comes next after the grown pause, the reply is generated after the tag and said at once
    # (no switch schedule here: with one, the reply after its pause is prepared instead, below)
    model = ScriptedModel(lookahead=[(r"so$", (" (0.2)", ""))], switch=[(r"so \((0\.[5-9]|1\.\d)\)$", True)],
                          generate=[(r"so \(\d\.\d\)$", " S2: go on")])
    tl = Timeline(agent(model, schedule_steps=0)).at(0.35, UserText(text="so")).run(1.3)
    assert tl.story("prerender", "release", "say", "cycle") == ["0.8 say ' go on'", "0.8 cycle switch"]
    assert model.count("lookahead") == 1 and model.count("schedule") == 0 and tl.core.counters["lookaheads_kept"] == 1


def test_the_reply_after_the_scheduled_pause_is_prepared_while_the_user_speaks_and_released_at_the_switch():
    """Issue 20: the schedule of "so" fires at (0.5); the reply the agent gives after that pause is
    generated and pre-rendered at once — no guess of the user's next words — kept while the user
    says nothing new, and released when the schedule's pause comes."""
    model = ScriptedModel(lookahead=[(r"so$", (" (0.2)", ""))], switch=[(r"so \((0\.[5-9]|1\.\d)\)$", True), (".", False)],
                          generate=[(r"so \(\d\.\d\)$", " S2: go on")])
    tl = Timeline(agent(model)).at(0.35, UserText(text="so")).run(1.3)
    assert tl.story("schedule", "prerender", "release", "say", "cycle") == [
        "0.35 schedule planned 0.5", "0.4 prerender [' go on']", "1.2 release 1 ' go on'", "1.2 cycle switch",
    ]  # typed words, no VAD: decisions on the 0.4 s listening grid of these scenarios; the first at (0.5) or later
    assert [text.rsplit("S1:", 1)[1] for kind, text in model.calls if kind == "generate"] == [" (0.3) so (0.5)"]  # then " S2:"
    assert model.count("lookahead") == 0 and tl.state_at(1.3).endswith("S1: (0.3) so (0.8) S2: go on")


def test_a_rewrite_of_the_predicted_context_forces_a_new_prediction():
    model = ScriptedModel(lookahead=[(r"", (" there", " S1: ok S"))])
    tl = Timeline(agent(model)).at(0.1, AsrPartial(text="hello", rev=0, utterance=0))
    tl.at(0.5, AsrPartial(text="yellow there", rev=1, utterance=0)).run(0.8)
    assert model.count("lookahead") == 2 and model.count("embed") == 0  # the reference compared shifted text


def test_agent_continues_in_chunks_and_opens_a_new_utterance_on_s2():
    model = answering_model(generate=[(r"today\?$", " S2: Anyway. S1:")])
    tl = scenario_user_turn(model)
    assert tl.story("say")[-1] == "4.8 say ' Anyway.'"
    assert tl.state_at(5.0).endswith("S2: I'm good, thanks. And how was your day today? S2: Anyway.")
    assert tl.core.turn == 1


def test_user_barges_in_and_the_agent_yields_keeping_only_played_words():
    model = answering_model(generate=[(r"S1: wait$", " actually I"), (r"today\?$", " S1: it was")])
    tl = scenario_barge_in(model)
    assert tl.story("in", "played", "say", "cancel", "cycle")[5:] == [
        '3.2 say " I\'m good, thanks."',
        "3.2 cycle switch",
        '3.95 played 0 "I\'m good, thanks."',
        "4 say ' And how was your day today?'",
        "4 cycle continue",
        "4.3 in partial 'wait'",
        "4.3 cancel gen=1",
        "4.3 cycle yield",
        "4.9 in final 'wait actually I need to go'",
    ]
    assert tl.state_at(4.3) == " S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks. S1: wait"
    assert tl.state_at(4.9) == " S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks. S1: wait actually i need to go"
    assert (tl.core.turn, tl.core.gen, tl.core.floor) == (2, 1, "user")


def test_barge_in_is_decided_on_what_the_user_heard():
    model = answering_model(generate=[(r"S1: wait$", " actually I")])
    tl = scenario_barge_in(model)
    asked = [text for kind, text in model.calls if kind == "generate" and text.endswith("S1: wait")]
    assert [a.split("Transcript:")[1] for a in asked] == [
        " S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks. S1: wait"  # not the queued words
    ]
    assert tl.core.stats()["decision_yield"] == 1


def test_barge_in_before_anything_played_removes_the_agent_turn():
    model = answering_model(generate=[(r"S1: wait$", " no")])
    tl = Timeline(agent(model, lookahead=False), FakeAudio(0.25)).user("hello there how are you", 0.5, 2.5, 2.7)
    tl.at(3.3, AsrPartial(text="wait", rev=0, utterance=1)).run(3.5)
    assert tl.story("say", "cancel", "cycle") == [
        '3.2 say " I\'m good, thanks."',
        "3.2 cycle switch",
        "3.3 cancel gen=1",
        "3.3 cycle yield",
    ]
    assert tl.state_at(3.3) == " S1: (0.9) hello there how are you (0.7) wait"  # the user never heard the agent


def test_backchannel_is_ignored_and_the_agent_continues():
    model = answering_model(generate=[(r"S1: mm-hmm$", " S2: So")])
    tl = scenario_barge_in(model, words="mm-hmm")
    assert tl.story("in", "played", "say", "pause", "cancel", "cycle")[5:] == [
        '3.2 say " I\'m good, thanks."',
        "3.2 cycle switch",
        '3.95 played 0 "I\'m good, thanks."',
        "4 say ' And how was your day today?'",
        "4 cycle continue",
        "4.3 in partial 'mm-hmm'",
        "4.3 cycle hold",
        "4.8 pause 0.8",
        "4.8 cycle wait",
        "4.9 in final 'mm-hmm'",
        "4.9 cycle hold",
        "5.5 played 1 'And how was your day today?'",
        "5.6 say ' (0.2)'",
        "5.6 cycle continue",
        "6.4 say ' (0.2)'",
        "6.4 cycle continue",
        "6.5 played 2 ''",
        "6.7 played 3 ''",
    ]
    assert tl.core.t.body == " S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks. And how was your day today? (1.2)"
    assert (tl.core.turn, tl.core.gen, tl.core.floor) == (1, 0, "agent")


def test_typed_words_without_audio_reports_just_take_the_floor():
    tl = Timeline(agent(answering_model(), lookahead=False)).at(0.5, UserText(text="hello there how are you"))
    tl.at(2.1, UserText(text="wait")).run(2.3)
    assert tl.story("say", "cancel", "cycle") == [
        '1.2 say " I\'m good, thanks."',
        "1.2 cycle switch",
        "2 say ' And how was your day today?'",
        "2 cycle continue",
    ]
    assert (
        tl.state_at(2.3)
        == " S1: (0.4) hello there how are you (0.7) S2: I'm good, thanks. And how was your day today? S1: wait (0.2)"
    )


def test_partial_revised_after_the_agent_started_gives_the_floor_back():
    model = ScriptedModel(generate=[(r"thinking \(0\.[5-9]\)$", " S2: yeah. S1:"), (r"yeah\.$", " S1: so")])
    tl = scenario_partial_revised_after_switch(model)
    assert tl.story("in", "played", "say", "pause", "cancel", "cycle") == [
        "0.5 in partial 'so I was thinking'",
        "1.2 say ' yeah.'",
        "1.2 cycle switch",
        "1.45 played 0 'yeah.'",
        "2 pause 0.8",
        "2 cycle wait",
        "2.3 in final 'so I was thinking'",
        "2.8 say ' (0.2)'",
        "2.8 cycle continue",
        "3 played 1 ''",
    ]
    assert tl.state_at(2.0) == " S1: (0.4) so i was thinking (0.7) S2: yeah. (0.8)"
    # the final says what the partial said: it commits and nothing moves (the reference lost the user's pause)
    assert tl.state_at(2.3) == " S1: (0.4) so i was thinking (0.7) S2: yeah. (0.8)"
    assert (tl.core.turn, tl.core.floor) == (1, "agent")


def test_a_final_that_confirms_a_short_partial_after_the_agent_started_is_no_barge_in():
    """Issue 20 (seen in a bench session): the agent took the turn on the partial "family"; the
    final "Family." arrived while it spoke. Rolled back and laid again, a ≤ 2-word chunk goes after
    the agent's turn (rewrite.py's deferral), which read as the user barging in, and the agent
    yielded its reply to its own user's last word."""
    model = ScriptedModel(generate=[(r"family \(0\.[5-9]\)$", " S2: that sounds great S1:"), (r"great$", " S1: so")])
    tl = Timeline(agent(model, lookahead=False), FakeAudio(0.25))
    tl.at(0.3, AsrFinal(text="we went with my", utterance=0)).at(0.5, AsrPartial(text="family", rev=0, utterance=1))
    tl.at(1.4, AsrFinal(text="Family.", utterance=1)).run(1.9)
    assert tl.story("cancel", "cycle") == ["1.2 cycle switch"]
    assert tl.state_at(1.5) == " S1: (0.2) we went with my (0.1) family (0.7) S2: that sounds great"
    assert tl.core.counters["finals_confirming"] == 1 and tl.core.floor == "agent"


def test_more_words_in_a_final_after_the_agent_started_are_a_barge_in():
    model = ScriptedModel(generate=[(r"thinking \(0\.[5-9]\)$", " S2: well I think that is fine S1:"), (r"next week$", " and")])
    tl = scenario_partial_revised_after_switch(model, final="so I was thinking about the trip to Rome next week")
    assert tl.story("in", "say", "cancel", "cycle") == [
        "0.5 in partial 'so I was thinking'",
        "1.2 say ' well I think that is fine'",
        "1.2 cycle switch",
        "2 say ' (0.2)'",
        "2 cycle continue",
        "2.3 in final 'so I was thinking about the trip to Rome next week'",
        "2.3 cancel gen=1",
        "2.3 cycle yield",
    ]
    assert tl.state_at(2.3) == " S1: (0.4) so i was thinking about the trip to rome next week"


def test_two_more_words_in_a_final_are_not_a_barge_in():
    model = ScriptedModel(generate=[(r"thinking \(0\.[5-9]\)$", " S2: well I think that is fine S1:")])
    tl = scenario_partial_revised_after_switch(model, final="so I was thinking about the trip")
    assert tl.story("cancel", "cycle") == ["1.2 cycle switch", "2 cycle continue", "2.8 cycle continue"]
    assert tl.state_at(2.3) == " S1: (0.4) so i was thinking about the trip S2: well I think that is fine (0.2)"


def test_history_is_trimmed_at_speaker_tags():
    model = answering_model(generate=[(r"five six \(0\.[5-9]\)$", " S2: I see. S1:"), (r"see\.$", " S1: and")])
    tl = scenario_long_conversation(model)  # max_history_words=30
    assert tl.state_at(13.1) == (
        " S1: (0.9) turn 0 one two three four five six (0.8) S2: I see. (1.6)"
        " S1: turn 1 one two three four five six (0.8) S2: I see. (1.6) S1: turn 2 one (0.1)"
    )
    assert tl.state_at(13.2) == (  # 32 words: the last 30 start inside the first turn; cut at the next tag
        " S2: I see. (1.6) S1: turn 1 one two three four five six (0.8) S2: I see. (1.6) S1: turn 2 one (0.2)"
    )
    assert tl.state_at(15.6) == (
        " S1: turn 1 one two three four five six (0.8) S2: I see. (1.6)"
        " S1: turn 2 one two three four five six (0.8) S2: I see. (0.8)"
    )
    assert tl.core.stats()["trims"] == 2


def test_opening_utterance_replaces_the_predicted_reply():
    reply = " S2: I'm fine, thanks! And how was your day today? S"
    model = ScriptedModel(lookahead=[(r"you \(0\.[3-9]\)$", ("", reply))], generate=[(r"How are you\?$", " S1: good")])
    tl = scenario_lookahead_turn(model, opening_utterance="Hi! How are you?")
    assert tl.story("prerender", "release", "say", "cycle") == [
        "2.8 say ' Hi! How are you?'",  # no prerender of a reply the opening replaces; nothing released later
        "2.8 cycle switch",
        "3.6 cycle wait",
        "4.4 say ' (0.2)'",
        "4.4 cycle continue",
    ]
    assert tl.core.opening is None and not tl.core.look.cache


def test_agent_starts_with_its_opening_utterance():
    tl = scenario_agent_starts(ScriptedModel(generate=[(r"you\?( \(\d+\.\d\))?$", " S1: fine")]))
    assert tl.story("say", "pause", "cycle") == [
        "0.8 say ' Hi! How are you?'",
        "0.8 cycle continue",
        "1.6 pause 0.8",
        "1.6 cycle wait",
        "2.4 pause 0.8",
        "2.4 cycle wait",
        "3.2 pause 0.8",
        "3.2 cycle wait",
        "4 pause 0.8",
        "4 cycle wait",
        "4.8 pause 0.8",
        "4.8 cycle wait",
    ]
    assert tl.state_at(5.0) == " S2: Hi! How are you? (4.0)"


def test_an_opening_utterance_that_cleans_to_nothing_is_no_opening():
    tl = scenario_agent_starts(ScriptedModel(generate=[(r"S2:$", " Hello!")]), opening_utterance=" <p> \n ")
    assert tl.story("say")[0] == "0.8 say ' Hello!'"


def test_agent_starts_without_an_opening_the_model_speaks_first():
    tl = scenario_agent_starts(ScriptedModel(generate=[(r"S2:$", " Hello!")]), opening_utterance="")
    assert tl.story("say")[0] == "0.8 say ' Hello!'"
    assert tl.state_at(1.0) == " S2: Hello!"


def test_user_speaking_first_replaces_the_agents_empty_turn():
    tl = Timeline(agent(ScriptedModel(default_generate=" S1: x"), agent_starts=True)).at(0.3, UserText(text="hey"))
    tl.run(0.5)
    assert tl.state_at(0.5) == " S1: hey (0.2)" and tl.core.turn == 1


def test_reset_cancels_unplayed_output_and_starts_over():
    tl = scenario_reset_and_config(answering_model())
    lines = tl.story("say", "cancel", "cycle", "state")
    at = lines.index("3.2 cycle switch")
    assert lines[at - 1 : at + 6] == [
        '3.2 say " I\'m good, thanks."',
        "3.2 cycle switch",
        "3.2 state agent: S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks.",
        "3.3 state agent: S1: (0.9) hello there how are you (0.7) S2: I'm good, thanks.",  # the prefix changed
        "3.5 cancel gen=1",  # "I'm good, thanks." had not finished playing
        "3.5 state user: S1:",
        "3.6 state user: S1: (0.1)",
    ]
    assert tl.state_at(3.3) == tl.state_at(3.2)
    assert [e.sequence[:40] for t, e in tl.events if isinstance(e, AgentState) and t == s(3.3)] == [
        "Participants: S1 (name: Anna, age: unkno"
    ]
    assert "S1 (name: Anna" in tl.core.t.text and "Summary: new;" in tl.core.t.text
    assert (tl.core.turn, tl.core.gen) == (2, 1)


def test_identity_change_rebuilds_the_prefix_at_once_summary_waits_for_reset():
    core = agent(ScriptedModel(), summary="old")
    core.on_event(AsrPartial(text="hello there", rev=0, utterance=0), ms(100))
    out = core.on_event(ConfigChange(changes={"agent.agent_name": "Ava", "agent.summary": "new"}), ms(200))
    assert out[0].sequence.startswith("Participants: S1 (name: unknown, age: unknown, sex: unknown), S2 (name: Ava,")
    assert "Summary: old;" in core.t.text
    assert core.t.text[core.t.partial_pos :] == " hello there"  # the partial's position followed the prefix
    core.on_event(AsrPartial(text="hello there you", rev=1, utterance=0), ms(300))
    assert core.t.body == " S1: hello there you"
    core.on_event(Reset(), ms(400))
    assert "Summary: new;" in core.t.text and "name: Ava" in core.t.text


def test_bad_config_changes_are_rejected_whole():
    core = agent(ScriptedModel())
    with pytest.raises(ValueError, match="unknown agent config keys \\['nope'\\]; allowed: "):
        core.on_event(ConfigChange(changes={"agent.nope": 1, "agent.user_name": "x"}), 0)
    before = core.cfg
    with pytest.raises(ValueError, match="interval_s"):
        core.on_event(ConfigChange(changes={"agent.interval_s": -1}), 0)
    assert core.cfg == before


def test_decoding_changes_go_to_the_model_timing_changes_apply_next_cycle():
    model = ScriptedModel()
    seen = []
    model.configure = seen.append
    core = agent(model)
    core.on_event(ConfigChange(changes={"agent.top_p": 0.9, "agent.listen_interval_s": 0.2}), 0)
    assert [c.top_p for c in seen] == [0.9] and core.deadline_ns() == ms(100)
    core.on_event(ConfigChange(changes={"agent.lookahead": False}), 0)
    assert len(seen) == 1 and core.look.prediction is None


def test_long_summary_is_cut_and_reported():
    core = agent(ScriptedModel(), summary="word " * 100, max_summary_chars=22)
    assert "Summary: word word word word; Transcript:" in core.t.text
    assert core.warnings == ["summary cut from 499 to 19 characters (agent.max_summary_chars=22)"]
    assert core.stats()["summary_cuts"] == 1


def test_whitespace_emoji_and_floods_of_words():
    tl = scenario_odd_input(ScriptedModel())
    assert tl.story("in", "state")[2:13] == [
        "0.3 in final ' \\t\\n '",  # typed whitespace: nothing at all
        "0.3 state user: S1: (0.3)",
        "0.4 state user: S1: (0.4)",
        "0.5 in partial 'héllo 🙂'",
        "0.5 state user: S1: (0.4) héllo",  # in the corpus's form: lower case, words only
        "0.6 state user: S1: (0.4) héllo (0.1)",
        "0.7 in partial '   '",
        "0.7 state user: S1: (0.4)",  # a blank partial takes the pending one back
        "0.8 state user: S1: (0.5)",
        "0.9 in final 'héllo 🙂 S2: naïve\\u200b'",
        "0.9 state user: S1: (0.5) héllo s2 naïve",  # a word that reads as a tag is defused
    ]
    flood = [st for st in tl.steps if isinstance(st.given, AsrPartial) and st.t >= s(1.0)]
    assert len(flood) == 200 and all([type(e) for e in st.out] == [AgentState] for st in flood)
    assert tl.state_at(1.199).endswith("naïve" + " word" * 200)
    assert tl.state_at(1.3) == " S1: (0.5) héllo s2 naïve done"  # the final replaced the long partial
    assert tl.core.stats()["inputs"] == 204 and tl.core.stats()["vad_events"] == 1


def test_empty_generations_terminate_and_count_as_silence():
    model = ScriptedModel(default_generate="")
    tl = scenario_agent_starts(model, opening_utterance="")
    assert tl.story("say", "pause", "cycle")[:2] == ["0.8 pause 0.8", "0.8 cycle wait"]
    cycles = tl.core.stats()["cycles"]
    assert model.count("generate") == MAX_GENERATIONS * cycles
    assert tl.core.stats()["empty_generations"] == MAX_GENERATIONS * cycles


def test_empty_generations_while_listening_just_listen():
    model = ScriptedModel(default_generate="", switch=[(".", True)])  # the probe says switch; the reply is empty
    tl = Timeline(agent(model, lookahead=False)).run(1.0)
    assert tl.story("listen") == ["0.4 listen listen", "0.8 listen listen"]
    assert model.count("generate") == 2 * MAX_GENERATIONS


def test_a_listening_cycle_generates_nothing_unless_the_probe_says_switch():
    """Issue 19: deciding to listen costs one look at the probability, not generated tokens."""
    model = ScriptedModel(default_generate=" S2: hi")
    model.rules["switch"] = [(r"\(0\.[0-7]\)$", False)]  # the agent's tag is unlikely until 0.8 s of silence
    tl = Timeline(agent(model, lookahead=False)).at(0.1, UserText(text="well")).run(1.3)
    assert tl.story("say", "cycle") == ["1.2 say ' hi'", "1.2 cycle switch"]
    # the schedule of "well" covers pauses up to 0.9 s; the cycle at 1.2 reads "(1.1)": a probe of its own
    assert model.count("generate") == 1 and model.count("schedule") == 1


@pytest.mark.parametrize(
    "generated, expected_say",
    [
        (" S2:", None),  # the reference crashed on search(...)[0]
        (" S2: S1: hi", None),
        (" S3: who is this", None),
        (" S23 hmm", None),
        ("S2:hi there", "' hi there'"),
        (" S2 okay then", "' okay then'"),
        # the first words stop where a pause begins (issue 20: the user is waiting; the agent's
        # next cycle writes its pauses, capped and canonical: test_agent_pause_* below)
        (" S2: well (99999.9) ok", "' well'"),
        (" S2: wait <p> (0.4) ok", "' wait'"),
    ],
)
def test_malformed_switches_have_defined_outcomes(generated, expected_say):
    model = ScriptedModel(generate=[(r"you \(0\.[5-9]\)$", generated)], default_generate=" (0.2)")
    tl = Timeline(agent(model, lookahead=False)).user("hello there how are you", 0.5, 2.5, 2.7).run(3.3)
    says = tl.story("say")
    assert says == ([] if expected_say is None else [f"3.2 say {expected_say}"])
    check_invariants(tl)


def test_the_first_words_at_a_switch_stop_where_a_pause_begins_in_one_call():
    """Issue 20: the user waits for the agent's first words; a pause the model begins after them
    is not completed first (that took up to two more generate calls): the words go out, and the
    agent's next cycle goes on from them."""
    model = ScriptedModel(generate=[(r"you \(0\.[5-9]\)$", " S2: sure (0."), (r"sure$", " (0.3) so")])
    tl = Timeline(agent(model, lookahead=False)).user("hello there how are you", 0.5, 2.5, 2.7).run(3.3)
    assert tl.story("say") == ["3.2 say ' sure'"]
    assert model.count("generate") == 1


def test_an_unfinished_pause_is_completed_then_given_up():
    model = answering_model(generate=[(r"thanks\.$", " well (0."), (r"well \(0\.$", "5) and so")])
    tl = scenario_user_turn(model)
    assert tl.story("say")[1] == "4 say ' well (0.5)'"
    stuck = answering_model(generate=[(r"thanks\.$", " well (0."), (r"\(0\.$", "")])
    tl = scenario_user_turn(stuck)
    assert tl.story("say")[1] == "4 say ' well'"
    assert stuck.count("generate") > 0 and grammar_errors(tl.core.t.text, tl.core.t.prefix_len) == []


def test_stats_count_what_happened():
    stats = scenario_barge_in(answering_model(generate=[(r"S1: wait$", " actually")])).core.stats()
    assert stats["decision_switch"] == 1 and stats["decision_yield"] == 1 and stats["cancels"] == 1
    assert stats["says"] == 2 and stats["turn"] == 2 and stats["gen"] == 1 and stats["audio_played"] >= 1


# ---------------------------------------------------------------- the user's real silence (voice)


def _final(text: str, until_s: float) -> AsrFinal:
    return AsrFinal(text=text, utterance=0, words=(Word(text=text, start_ns=0, end_ns=0),), spoken_until_ns=ms(until_s * 1000))


def test_the_pause_counts_from_the_end_of_speech_not_from_the_words_arrival():
    tl = (Timeline(agent(ScriptedModel(), lookahead=False))
          .at(0.05, VadStart(stream_pos=0, audio_ns=0, at_ns=ms(50)))
          .at(1.5, _final("hello there", until_s=1.0))  # the recogniser is 0.5 s late
          .at(1.6, VadEnd(stream_pos=0, audio_ns=0, at_ns=ms(1100)))  # speech ended at 1.1 s
          .run(1.75))
    assert tl.story("state") == [
        "1.5 state user: S1: hello there",  # the VAD is open: no pause grows while the words are late
        "1.6 state user: S1: hello there (0.5)",  # 1.6 - 1.1: the silence the user really left
        "1.7 state user: S1: hello there (0.6)",
    ]


def test_while_the_vad_is_open_no_pause_grows_and_a_lost_vad_end_times_out():
    core = agent(ScriptedModel(), lookahead=False, interval_s=60.0, listen_interval_s=60.0)
    core.on_event(VadStart(stream_pos=0, audio_ns=0, at_ns=ms(10)), ms(10))
    core.on_event(_final("so i was", until_s=0.9), ms(1200))
    core.on_tick(ms(3000))
    assert core.t.body == " S1: so i was"  # 1.8 s after the words, but the user is still speaking
    assert core.deadline_ns() == ms(1200) + VAD_STALE_NS
    core.on_tick(ms(1200) + VAD_STALE_NS)  # no vad.end ever came: counted closed, silence since 0.9 s
    assert core.t.body == " S1: so i was (5.3)" and core.counters["vad_stale"] == 1


def test_speech_resuming_stops_the_pause_where_it_was():
    core = agent(ScriptedModel(), lookahead=False, interval_s=60.0, listen_interval_s=60.0)
    core.on_event(VadStart(stream_pos=0, audio_ns=0, at_ns=ms(10)), ms(10))
    core.on_event(_final("well", until_s=0.5), ms(900))
    core.on_event(VadEnd(stream_pos=0, audio_ns=0, at_ns=ms(600)), ms(1000))
    core.on_tick(ms(1300))
    assert core.t.body == " S1: well (0.7)"
    core.on_event(VadStart(stream_pos=0, audio_ns=0, at_ns=ms(1350)), ms(1450))
    core.on_tick(ms(2500))
    assert core.t.body == " S1: well (0.8)"  # 0.6 → 1.35 s: written up to the onset, then no more


def test_typed_words_count_silence_from_their_arrival_even_after_voice():
    core = agent(ScriptedModel(), lookahead=False, interval_s=60.0, listen_interval_s=60.0)
    core.on_event(_final("hi", until_s=0.1), ms(500))  # voice without a VAD: from the word's end
    core.on_tick(ms(800))
    assert core.t.body == " S1: hi (0.7)"
    core.on_event(UserText(text="and you"), ms(5000))
    core.on_tick(ms(5300))
    assert core.t.body.endswith("and you (0.3)")  # not from the old word's end


def test_a_stale_prediction_is_renewed_after_the_decision_went_out_and_after_words_that_arrived_meanwhile():
    """Issue 19/20: the listening decision never waits for the lookahead's tokens. The cycle that
    finds the prediction stale decides and returns; the renewal is due at once, and words that
    arrive before it are read first, so it predicts from them."""
    model = ScriptedModel(lookahead=[(r"hello there$", (" how are you", " S2: fine S"))])
    core = agent(model)
    core.on_event(UserText(text="hello"), s(0.1))
    out = core.on_tick(s(0.4))  # the cycle: one probe, no lookahead yet
    assert [e.decision for e in out if isinstance(e, AgentCycle)] == ["listen"]
    assert [kind for kind, _ in model.calls] == ["switch"] and core.deadline_ns() == s(0.4)
    core.on_event(UserText(text="hello there"), s(0.4))  # arrived while the decision went out
    out = core.on_tick(s(0.4))  # the schedule of the words so far first (one short call) …
    assert model.count("schedule") == 1 and model.count("lookahead") == 0 and core.deadline_ns() == s(0.4)
    out = core.on_tick(s(0.4))  # … then the renewal
    assert [kind for kind, _ in model.calls][-1] == "lookahead" and model.count("lookahead") == 1
    assert model.calls[-1][1].endswith("S1: hello (0.3) hello there")
    assert [list(e.chunks) for e in out if isinstance(e, AgentPrerender)] == [[" fine"]]
    assert not any(isinstance(e, AgentCycle) for e in out) and core.deadline_ns() > s(0.4)


def test_a_renewal_cut_short_by_the_speech_end_leaves_no_prediction_and_the_decision_goes_first():
    """Issue 20: the shell says the speech end is waiting (``interrupted``): the lookahead renewal
    stops with no prediction and no prerender, and the decisions go on at the pause steps. (No
    pause in the schedule reaches the threshold here, so the lookahead, not the schedule's reply,
    prepares the reply.)"""
    model = ScriptedModel(lookahead=[(r"so yes$", (" and then", " S2: right S"))],
                          switch=[(r"\(1\.\d\)$", True), (".", False)], generate=[(r"\(1\.\d\)$", " S2: right")])
    core = AgentCore(AgentConfig(), model, 0)
    core.interrupted = lambda: True
    tl = Timeline(core).at(0.05, VadStart(stream_pos=0, audio_ns=0, at_ns=s(0.05)))
    tl.at(0.3, AsrPartial(text="so yes", rev=0, utterance=0)).at(0.6, VadEnd(stream_pos=0, audio_ns=0, at_ns=s(0.4))).run(1.5)
    assert model.count("lookahead") >= 1 and core.counters["lookaheads_interrupted"] == model.count("lookahead")
    assert tl.story("prerender") == []
    assert tl.story("schedule", "say", "cycle") == [
        "0.3 schedule planned none", "0.6 schedule armed none", "1.4 say ' right'", "1.4 cycle switch",
        "1.4 say ' (0.2)'", "1.4 cycle continue",  # what follows the first words: generated at once
    ]  # 1.0 s after the speech end, decided by a probe (the schedule covers the first second)


def test_by_default_a_listening_agent_decides_every_pause_step_and_never_over_the_users_voice():
    """Issue 20: the decision's resolution is the pause step (0.1 s), not a 0.4 s grid; while the
    VAD hears the user, nothing is probed and the turn is not taken."""
    model = ScriptedModel(switch=[(r"\(0\.[6-9]\)$", True), (".", False)], generate=[(r"\(0\.\d\)$", " S2: sure")])
    core = AgentCore(AgentConfig(), model, 0)
    tl = Timeline(core).at(0.05, VadStart(stream_pos=0, audio_ns=0, at_ns=s(0.05)))
    tl.at(0.3, AsrPartial(text="so yes", rev=0, utterance=0)).at(0.5, VadEnd(stream_pos=0, audio_ns=0, at_ns=s(0.5))).run(1.3)
    # the model is asked once, for the schedule of "so yes" and the pauses after it, while the
    # user speaks; at the speech end the schedule is armed and fires when the pause reads 0.6
    assert model.count("schedule") == 1
    probes = [text[-6:].strip() for kind, text in model.calls if kind == "switch"]
    assert probes == ["so yes"] + [f"({x / 10:.1f})" for x in range(1, 10)]  # the pauses within the first second
    assert tl.story("schedule", "say", "release", "cycle") == [
        "0.3 schedule planned 0.6", "0.5 schedule armed 0.6", "1.1 schedule fired 0.6",
        "1.1 release 1 ' sure'", "1.1 cycle switch", "1.1 say ' (0.2)'", "1.1 cycle continue",
    ]
    listens = [line.split()[0] for line in tl.story("listen")]
    assert listens[-6:] == ["0.5", "0.6", "0.7", "0.8", "0.9", "1"]  # a decision at every pause step from the speech end
    assert core.counters["switch_held_by_vad"] == 4  # the cycles at 0.1 … 0.4 s, while the VAD was open


def test_user_words_enter_the_transcript_in_the_corpus_form_the_model_was_trained_on():
    """Issue 20: Whisper writes "So, I was thinking about." — capitals, and a full stop where its
    window ended mid-sentence; the training corpus is lower case without punctuation."""
    core = agent(ScriptedModel())
    core.on_event(AsrPartial(text="So, I was thinking about.", rev=0, utterance=0), s(0.1))
    assert core.t.body == " S1: so i was thinking about"
    core.on_event(AsrFinal(text="So, I was thinking about... Rome? It's far-off!", utterance=0), s(0.2))
    assert core.t.body == " S1: so i was thinking about rome it's far-off"
