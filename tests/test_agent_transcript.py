"""The transcript format and its string rules (nodes/agent/transcript.py, rewrite.py): the
reference's verified examples verbatim, and the bugs it documents, fixed."""

from __future__ import annotations

import pytest

from rtchat.configs.schema import AgentConfig
from rtchat.datasets.lines import build_prefix, clip_summary
from rtchat.nodes.agent.rewrite import rewrite_input
from rtchat.nodes.agent.transcript import (
    INCOMPLETE_PAUSE_RE,
    PAUSE_RE,
    Identity,
    Transcript,
    canonical_pauses,
    clean_output,
    clean_words,
    cut_after_first,
    cut_output,
    drop_incomplete_pause,
    first_pause_tenths,
    format_pause,
    grammar_errors,
    identities_of,
    join_fragment,
    parse_response,
    parse_turn,
    pause_tenths,
    strip_unfinished_pauses,
    tenths_of_ns,
)

PREFIX = (
    "Participants: S1 (name: unknown, age: unknown, sex: unknown), S2 (name: unknown, age: unknown, sex: unknown); Transcript:"
)


def transcript(body: str, partial_at: str | None = None) -> Transcript:
    """A transcript with the given body (starting with a space); the pending partial begins at
    the separating space before the first occurrence of partial_at."""
    t = Transcript(PREFIX, "S1")
    t.text = PREFIX + body
    if partial_at is not None:
        t.partial_pos = len(PREFIX) + body.index(" " + partial_at)
    return t


def apply(t: Transcript, words: str, partial: bool = False, defer: bool = True) -> Transcript:
    rw = rewrite_input(t.text, t.partial_pos, words, partial, defer=defer)
    t.replace_tail(rw.start, rw.tail, rw.moves)
    t.partial_pos = rw.partial_pos
    return t


# ---------------------------------------------------------------- prefix (§1.1)


def test_default_prefix_is_the_reference_string():
    t = Transcript(build_prefix(identities_of(AgentConfig()), ""), "S1")
    assert t.text == PREFIX + " S1:"
    assert t.speaker == "S1" and t.body == " S1:"


def test_prefix_with_identities_and_summary():
    ids = {"S1": Identity("Anna", "30", "female"), "S2": Identity(" ", "", "unknown")}
    prefix = build_prefix(ids, "S1 and S2 are talking about what's new in their lives.")
    assert prefix == (
        "Participants: S1 (name: Anna, age: 30, sex: female), S2 (name: unknown, age: unknown, sex: unknown); "
        "Summary: S1 and S2 are talking about what's new in their lives.; Transcript:"
    )


def test_identity_values_are_one_line():
    assert Identity("Mary\nJane", "4\t2").describe("S1") == "S1 (name: Mary Jane, age: 4 2, sex: unknown)"


def test_long_summary_is_cut_at_a_word_boundary_with_a_warning():
    text, warning = clip_summary("S1 and S2 talk about the weather today", 20)
    assert text == "S1 and S2 talk about"
    assert warning == "summary cut from 38 to 20 characters (agent.max_summary_chars=20)"
    assert clip_summary("short", 20) == ("short", None)
    assert clip_summary("abcdefghijklmnop", 5)[0] == "abcde"  # one long word: a hard cut
    assert clip_summary("anything", 0)[0] == ""  # no Summary section at all


# ---------------------------------------------------------------- pauses (§1.2, §3, §4.5)


def test_pause_format_and_values():
    assert format_pause(4, False) == " (0.4)"
    assert format_pause(1006, True) == " <p> (100.6)"
    assert pause_tenths(".", 8) == 8 and pause_tenths("5.", 8) == 50 and pause_tenths(".5", 8) == 5
    assert pause_tenths("0.55", 8) == 6
    assert tenths_of_ns(150_000_000) == 2 and tenths_of_ns(149_999_999) == 1


@pytest.mark.parametrize("tail", ["(", "(0", "(0.", "(0.5", "<p>", "<p> ", "<p> (0"])
def test_incomplete_pause_matches_unfinished_pauses(tail):
    assert INCOMPLETE_PAUSE_RE.search("S1: hello " + tail)


@pytest.mark.parametrize("tail", ["(laughs", "(0.5)", "(..", "hello"])
def test_incomplete_pause_ignores_other_text(tail):
    assert not INCOMPLETE_PAUSE_RE.search("S1: hello " + tail)


def test_untimed_chat_pauses_are_not_pauses():
    assert PAUSE_RE.search("(.)") and not PAUSE_RE.search("(..)") and not PAUSE_RE.search("(...)")


def test_incrementing_pause_merges_into_one_growing_pause():
    t = transcript(" S1: hello (0.3)")
    for tenths, expected in [(6, "(0.6)"), (8, "(0.8)"), (10, "(1.0)")]:
        t.set_trailing_pause(tenths, False, 8)
        assert t.body == f" S1: hello {expected}"


def test_incrementing_pause_appends_when_the_body_ends_in_words_or_a_tag():
    t = transcript(" S1:")
    t.set_trailing_pause(1, False, 8)
    assert t.body == " S1: (0.1)"


def test_pause_token_of_100_s_grows_instead_of_duplicating():
    t = transcript(" S1: hello <p> (100.2)")
    assert t.trailing_pause(8) == (len(PREFIX) + 10, 1002)
    t.set_trailing_pause(1006, True, 8)
    assert t.body == " S1: hello <p> (100.6)"  # the reference wrote "<p> <p> (100.6)"


def test_interval_pause_reads_as_one_interval():
    assert transcript(" S2: so (.)").trailing_pause(8)[1] == 8


def test_agent_pauses_are_canonical_and_capped():
    assert canonical_pauses(" well(.) I (5.) think (99999.9)", 8, 100, False) == " well (0.8) I (5.0) think (10.0)"
    assert canonical_pauses(" hi <p> (0.4)", 8, 100, False) == " hi (0.4)"
    assert canonical_pauses(" hi (0.4)", 8, 100, True) == " hi <p> (0.4)"
    assert first_pause_tenths(" a (1.5) b (0.2)", 8) == 15 and first_pause_tenths(" a", 8) is None


# ---------------------------------------------------------------- trimming (§4.6)


def test_trim_keeps_the_window_from_its_first_tag():
    t = transcript(" S1: hello (1.0) S2: well I think that is a good idea (0.5) S1: yeah me too and")
    removed, inserted = t.trim(12)
    assert t.body == " S1: yeah me too and"
    assert removed == " S1: hello (1.0) S2: well I think that is a good idea (0.5)" and inserted == ""


def test_trim_to_fewer_words_cuts_further_and_only_past_the_limit():
    body = " S1: a b c S2: d e f S1: g h i S2: j k"
    assert transcript(body).trim(15, keep_words=8) is None  # 15 words: within the limit
    t = transcript(body + " l")  # 16 words: over it
    assert t.trim(15, keep_words=8) == (" S1: a b c S2: d e f", "")
    assert t.body == " S1: g h i S2: j k l"  # the last 8 words, from their first tag
    for keep in (0, 40):  # 0 or more than the limit: the limit
        u = transcript(body + " l")
        u.trim(15, keep_words=keep)
        assert u.body == " S2: d e f S1: g h i S2: j k l"


def test_trim_does_nothing_within_the_limit():
    t = transcript(" S1: a b c")
    assert t.trim(4) is None and t.body == " S1: a b c"


def test_trim_shifts_positions_after_the_cut_and_drops_those_before():
    t = transcript(" S1: one two S2: three four five S1: six", partial_at="six")
    t.marks = {"early": len(PREFIX) + 3, "late": len(t.text) - 3}
    late_text = t.text[t.marks["late"] :]
    t.trim(6)
    assert t.body == " S2: three four five S1: six"
    assert "early" not in t.marks and t.text[t.marks["late"] :] == late_text
    assert t.text[t.partial_pos :] == " six"


def test_trim_never_cuts_into_the_pending_partial():
    t = transcript(" S2: hi S1: a b c d e f g h", partial_at="a")
    assert t.trim(4) == (" S2: hi", "")
    assert t.body == " S1: a b c d e f g h"  # longer than 4 words: the partial's turn is kept whole
    assert t.text[t.partial_pos :] == " a b c d e f g h"


def test_trim_with_no_usable_tag_reopens_the_turn():
    t = transcript(" S1: hi S2: one two three four five six S1:")
    removed, inserted = t.trim(4)
    assert t.body == " S2: five six S1:" and inserted == " S2:"
    assert grammar_errors(t.text, t.prefix_len) == []


# ---------------------------------------------------------------- partial/final rewriting (§5)


def test_partial_replaces_the_last_partial_and_its_pauses():
    t = apply(transcript(" S1: hello (0.3)", partial_at="hello"), "hello there", partial=True)
    assert t.body == " S1: hello there"
    assert t.text[t.partial_pos :] == " hello there"


def test_agent_turn_taken_during_a_partial_survives_a_final():
    t = apply(transcript(" S1: hello there (1.2) S2: Hi! (0.5)", partial_at="hello"), "hello there how are you")
    assert t.body == " S1: hello there how are you S2: Hi! (0.5)"
    assert t.speaker == "S2" and t.partial_pos is None


def test_a_final_can_give_the_floor_back_to_the_agent():
    t = apply(transcript(" S1: so I was thinking S2: yeah.", partial_at="so"), "so I was thinking")
    assert t.body == " S1: so I was thinking S2: yeah." and t.speaker == "S2"


def test_deferred_words_land_after_the_next_turn_without_an_empty_turn():
    t = apply(transcript(" S1: so I S2: yeah. S1: was S2: mhm.", partial_at="so"), "so I was going to the store")
    # the reference leaves an empty turn: "S1: S2: yeah. S1: so I S2: mhm. S1: was going to the store"
    assert t.body == " S2: yeah. S1: so I S2: mhm. S1: was going to the store"
    assert t.speaker == "S1" and grammar_errors(t.text, t.prefix_len) == []


def test_deferral_keeps_an_earlier_user_turn():
    t = apply(transcript(" S1: hi (0.5) so I S2: yeah. S1: was S2: mhm.", partial_at="so"), "so I was going to the store")
    assert t.body == " S1: hi (0.5) S2: yeah. S1: so I S2: mhm. S1: was going to the store"


def test_a_short_first_chunk_is_deferred_after_the_agent_turn():
    t = apply(transcript(" S1: hi S2: Hi! How are you? (0.5)", partial_at="hi"), "hi there my friend")
    assert t.body == " S2: Hi! How are you? (0.5) S1: hi there my friend"


def test_words_spoken_before_the_agent_turn_revise_the_users_turn_instead_of_being_deferred():
    """defer=False (the core knows the words ended before the agent took the turn): a revised last
    word stays in the user's turn, before the agent's — deferred, it would open a new user turn."""
    before = " S1: do you have any idea (0.1) S2: um well i think"
    assert apply(transcript(before, partial_at="idea"), "ideas", partial=True).body == (
        " S1: do you have any S2: um well i think S1: ideas")  # the deferral: read as the user barging in
    t = apply(transcript(before, partial_at="idea"), "ideas", partial=True, defer=False)
    assert t.body == " S1: do you have any ideas S2: um well i think" and t.speaker == "S2"
    assert grammar_errors(t.text, t.prefix_len) == []


def test_blank_final_deletes_the_pending_partial():
    t = apply(transcript(" S2: hi (0.4) S1: uh (0.2)", partial_at="S1:"), "")
    assert t.body == " S2: hi (0.4)" and t.speaker == "S2" and t.partial_pos is None


def test_two_leftover_words_join_the_user_text_before_the_agent_turn():
    t = apply(transcript(" S1: so I was S2: mm-hmm.", partial_at="so"), "so I was thinking today")
    assert t.body == " S1: so I was thinking today S2: mm-hmm."


def test_more_leftover_words_open_a_new_user_turn():
    t = apply(transcript(" S1: so I was S2: mm-hmm.", partial_at="so"), "so I was thinking about it now")
    assert t.body == " S1: so I was S2: mm-hmm. S1: thinking about it now" and t.speaker == "S1"


def test_new_words_after_an_agent_turn_open_a_user_turn():
    t = apply(transcript(" S1: hi S2: hello there"), "how are you", partial=True)
    assert t.body == " S1: hi S2: hello there S1: how are you"
    assert t.text[t.partial_pos :] == " S1: how are you"


def test_words_replace_an_empty_agent_turn():
    t = apply(transcript(" S2:"), "hello")
    assert t.body == " S1: hello"


def test_positions_inside_a_carried_turn_move_with_it():
    t = transcript(" S1: hi there my S2: Hi! How are you? (0.5)", partial_at="hi")
    t.marks = {"turn": t.text.index(" S2:"), "chunk": t.text.index(" How")}
    apply(t, "hi there my friend")
    assert t.body == " S1: hi there my friend S2: Hi! How are you? (0.5)"
    assert t.text[t.marks["turn"] :].startswith(" S2: Hi!") and t.text[t.marks["chunk"] :].startswith(" How")


# ---------------------------------------------------------------- output and predictions (§6.9, §7, §8.2)


def test_output_is_cut_at_any_following_tag_or_a_dangling_s():
    assert cut_output(" I think so S1: yes") == " I think so"
    assert cut_output(" I think so S") == " I think so"
    assert cut_output(" I think So") == " I think So"
    assert cut_output(" S3: who") == ""


def test_generation_stops_after_the_first_pause_or_at_a_closing_parenthesis():
    assert cut_after_first(" yes (0.5) and then (0.2)", PAUSE_RE) == " yes (0.5)"
    assert cut_after_first("5) more", __import__("re").compile(r"\)")) == "5)"


@pytest.mark.parametrize(
    "prediction, expected",
    [
        (" S2: Pretty good, and you? S1: fine", ("S2", " Pretty good, and you?")),
        (" S2:", ("S2", "")),  # the reference raised here (search(...)[0] on None)
        (" S2 hi", ("S2", " hi")),
        (" S2:hi", ("S2", " hi")),
        (" S1: and then", ("S1", " and then")),
        (" S23 hi", ("?", "")),
        (" well I", (None, " well I")),
    ],
)
def test_turn_switch_parsing(prediction, expected):
    assert parse_turn(prediction) == expected


@pytest.mark.parametrize(
    "response, expected",
    [
        (" S2: YES S", ("S2", " YES")),  # the reference's rstrip(" S") gave " YE"
        (" S2: I like BS", ("S2", " I like BS")),
        (" S2: sure, I think", ("S2", " sure, I think")),
        (" S2: wait (0.", ("S2", " wait")),
        (" S1: and you S2: hmm", ("S1", " and you")),
        (" S", (None, "")),
        ("", (None, "")),
    ],
)
def test_response_parsing(response, expected):
    assert parse_response(response) == expected


# ---------------------------------------------------------------- text hygiene and the grammar


@pytest.mark.parametrize("text", ["", "   ", "\t\n ", "\u200b", "\u3000\xa0"])
def test_whitespace_only_input_is_nothing(text):
    assert clean_words(text) == ""


def test_input_words_are_single_spaced_and_cannot_forge_tags():
    assert clean_words("  so\tI  said\nS2: hi 🙂  ") == "so I said s2: hi 🙂"
    assert clean_words("naïve café 日本語") == "naïve café 日本語"


def test_model_output_keeps_its_leading_space_or_word_continuation():
    assert clean_output(" I  don\n") == " I don"
    assert clean_output("'t know ") == "'t know"
    assert join_fragment("S1: I don", "'t") == "'t"
    assert join_fragment("S2:", "hi") == " hi"
    assert join_fragment("S2: hi", "(0.5)") == " (0.5)"


def test_drop_incomplete_pause():
    assert drop_incomplete_pause(" well (0.") == " well"
    assert drop_incomplete_pause(" well") == " well"


@pytest.mark.parametrize(
    "text, expected",
    [
        (" (0. I think (1.2)", " I think (1.2)"),
        (" well (0.", " well"),
        (" hi <p> there", " hi there"),
        (" hi <p> (0.5) x", " hi <p> (0.5) x"),
        (" (laughs) ok (..)", " (laughs) ok (..)"),
    ],
)
def test_pauses_that_never_close_are_removed_from_model_output(text, expected):
    assert strip_unfinished_pauses(text) == expected


def test_grammar_errors_name_what_is_wrong():
    assert grammar_errors(PREFIX + " S1: hi (0.2) S2: yo", len(PREFIX)) == []
    assert grammar_errors(PREFIX + " S1: S2: yo", len(PREFIX)) == ["an empty turn before another turn"]
    assert grammar_errors(PREFIX + " S1: hi  there", len(PREFIX)) == ["whitespace other than single spaces"]
    assert grammar_errors(PREFIX + " S1: hi S3: yo", len(PREFIX)) == ["unknown speaker tag S3"]
    assert grammar_errors(PREFIX + " hi (0.", len(PREFIX)) == [
        "body does not start with a tag: ' hi (0.'",
        "ends inside an unfinished pause",
    ]
