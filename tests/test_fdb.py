"""Full-Duplex-Bench v1.0 metrics (evals/fdb.py) on timelines built by hand; every expected value
is worked out in the comments from the rules in fdb.py's docstring."""

from __future__ import annotations

from session_log import barge_in_session, write

from rtchat.evals import fdb
from rtchat.evals.analyze import Span, analyze, read_events, spread_words

S = 1_000_000_000
GAP = S  # turn_gap 1.0 s, the analyzer's default


def span(a: float, b: float, text: str = "") -> Span:
    return Span(round(a * S), round(b * S), text)


def figures(user, agent_chunks, turn_gap_ns=GAP) -> dict:
    """What analyze() does with the spans: agent chunks are IPUs here (none closer than 0.3 s)."""
    return fdb.summarize([fdb.samples(user, agent_chunks, spread_words(agent_chunks), turn_gap_ns)])


def test_the_take_over_rule_is_one_second_or_more_than_three_words():
    assert not fdb.takes_turn([])
    assert fdb.takes_turn(spread_words([span(0, 1.0, "yes")]))  # 1 word over exactly 1.0 s
    assert fdb.takes_turn(spread_words([span(0, 0.2, "a b c d")]))  # 4 words > 3, in 0.2 s
    assert not fdb.takes_turn(spread_words([span(0, 0.99, "a b c")]))  # 3 words, 0.99 s


def test_a_backchannel_in_a_pause_and_a_turn_answered_and_one_not():
    user = [span(0.0, 1.0), span(1.6, 2.5), span(5.0, 6.0)]  # turns: [0–1, 1.6–2.5] (gap 0.6 ≤ 1) and [5–6]
    agent = [span(1.2, 1.5, "yeah"), span(2.9, 4.4, "sure I can help"), span(6.2, 6.7, "ok")]
    got = figures(user, agent)
    # the pause 1.0–1.6 holds "yeah": 1 word, 0.3 s → not taken: 0/1
    assert got["fdb_pause_tor"] == 0.0
    # turn 1: IPUs from its last IPU's start (1.6) to the next turn (5.0): "sure I can help", 4 words → taken,
    # latency 2.9 − 2.5 = 0.4 s; turn 2: from 5.0 on: "ok", 1 word over 0.5 s → not taken. TOR 1/2
    assert got["fdb_smooth_tor"] == 0.5 and got["fdb_smooth_latency_ms"] == 400.0
    assert got["fdb_interruption_tor"] is None and got["fdb_interruption_latency_ms"] is None
    # backchannels: "yeah" (0.3 s < 1 s, 1 word ≤ 2) inside turn 1; user turn time 2.5 + 1.0 = 3.5 s → 1 / 3.5
    assert got["fdb_backchannel_rate"] == 0.286
    assert got["fdb_n"] == {"pauses": 1, "turn_ends": 2, "interruptions": 0, "backchannels": 1, "user_turn_s": 3.5}


def test_an_interruption_the_agent_yields_to_and_answers():
    user = [span(0.0, 2.0), span(3.1, 3.8), span(4.2, 4.6)]  # turns [0–2] and [3.1–3.8, 4.2–4.6] (1.1 s > 1 s apart)
    agent = [span(2.3, 3.3, "well I think"), span(5.0, 6.2, "okay let us stop")]
    got = figures(user, agent)
    # turn 1: "well I think" starts at 2.3 (before the next turn at 3.1): 3 words over 2.3–3.3 = 1.0 s → taken,
    # latency 2.3 − 2.0 = 0.3 s
    assert got["fdb_smooth_tor"] == 1.0 and got["fdb_smooth_latency_ms"] == 300.0
    # turn 2 starts at 3.1 while "well I think" sounds (2.3–3.3): an interruption, ending at 4.6. From 4.6 on:
    # "okay let us stop", 4 words → taken, latency 5.0 − 4.6 = 0.4 s
    assert got["fdb_interruption_tor"] == 1.0 and got["fdb_interruption_latency_ms"] == 400.0
    # its pause 3.8–4.2 holds no agent speech: 0/1
    assert got["fdb_pause_tor"] == 0.0
    # no agent IPU starts inside a user turn: 0 backchannels over 2.0 + 1.5 = 3.5 s
    assert got["fdb_backchannel_rate"] == 0.0


def test_taking_over_a_pause_and_talking_through_an_interruption():
    user = [span(0.0, 1.0), span(1.5, 3.0), span(5.0, 5.5)]  # turns [0–1, 1.5–3] and [5–5.5]
    agent = [span(0.4, 0.7, "mm"), span(1.1, 2.6, "so what do you mean"),
             span(4.0, 7.0, "and another thing is that I wanted to say")]
    got = figures(user, agent)
    # the pause 1.0–1.5: "so what do you mean" starts at 1.1: 5 words → taken: 1/1
    assert got["fdb_pause_tor"] == 1.0
    # turn 1: IPUs starting in [1.5, 5.0): the 9-word one at 4.0 → taken, latency 4.0 − 3.0 = 1.0 s
    assert got["fdb_smooth_tor"] == 1.0 and got["fdb_smooth_latency_ms"] == 1000.0
    # turn 2 starts at 5.0 inside the 4.0–7.0 IPU: an interruption ending at 5.5. Its words are 1/3 s each
    # (4.0 + i/3); those still sounding after 5.5 are i = 4…8, the first clipped to start at 5.5: they span
    # 5.5–7.0 = 1.5 s → taken, latency 5.5 − 5.5 = 0 (FDB: an agent that talks on has taken the turn)
    assert got["fdb_interruption_tor"] == 1.0 and got["fdb_interruption_latency_ms"] == 0.0
    # turn 1 holds "mm" (a backchannel) but also the take-over: the turn counts none, as in FDB; 0 / (3.0 + 0.5)
    assert got["fdb_backchannel_rate"] == 0.0 and got["fdb_n"]["backchannels"] == 0


def test_sessions_pool_their_samples():
    a = fdb.Samples(pause=[1, 0], smooth=[1], smooth_latency_ms=[200.0], backchannels=1, user_turn_s=4.0)
    b = fdb.Samples(pause=[0], smooth=[1, 0], smooth_latency_ms=[600.0], interruption=[1],
                    interruption_latency_ms=[100.0], user_turn_s=6.0)
    got = fdb.summarize([a, b])
    assert got["fdb_pause_tor"] == 0.333  # 1 of 3 pauses
    assert got["fdb_smooth_tor"] == 0.667 and got["fdb_smooth_latency_ms"] == 400.0  # 2 of 3; (200 + 600) / 2
    assert got["fdb_interruption_tor"] == 1.0 and got["fdb_interruption_latency_ms"] == 100.0
    assert got["fdb_backchannel_rate"] == 0.1  # 1 backchannel / 10 s of user turns


def test_an_empty_session_has_no_figures():
    got = figures([], [])
    assert {k: v for k, v in got.items() if k != "fdb_n"} == dict.fromkeys(
        ("fdb_pause_tor", "fdb_smooth_tor", "fdb_smooth_latency_ms", "fdb_interruption_tor",
         "fdb_interruption_latency_ms", "fdb_backchannel_rate"))
    assert "pause TOR n/a" in fdb.legend(got)


def test_analyze_reports_them_from_a_log(tmp_path):
    write(tmp_path / "events.rtlog", barge_in_session())  # user 1.0–2.0 and 2.8–4.0; agent "hi!" 2.5–3.0, "sure" 4.3–4.9
    events, _ = read_events(tmp_path)
    report = analyze(events)  # turn_gap 1.0: the 0.8 s silence is a pause inside one user turn
    # the pause 2.0–2.8 holds "hi!": 1 word, 0.5 s → not taken; the turn end at 4.0 gets "sure": 1 word, 0.6 s → not taken
    assert report["fdb_pause_tor"] == 0.0 and report["fdb_smooth_tor"] == 0.0 and report["fdb_smooth_latency_ms"] is None
    # "hi!" is a backchannel inside the turn 1.0–4.0: 1 / 3.0 s
    assert report["fdb_backchannel_rate"] == 0.333 and report["fdb_backchannels"][0]["into_turn_s"] == 1.5
    split = analyze(events, turn_gap_s=0.5)  # now 2.8–4.0 is a turn of its own, starting inside "hi!": an interruption
    assert split["fdb_pause_tor"] is None and split["fdb_n"]["interruptions"] == 1
    assert split["fdb_interruption_tor"] == 0.0  # after 4.0 only "sure": not taken
    assert split["fdb_smooth_tor"] == 0.0  # turn 1.0–2.0 gets "hi!" (starts 2.5, before 2.8): not taken
