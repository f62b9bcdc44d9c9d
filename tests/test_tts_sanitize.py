"""Agent text → what the engine says (reference-io-spec §3.5–3.6), with the reference's bugs fixed."""

from __future__ import annotations

import pytest

from rtchat.nodes.tts.sanitize import Silence, Speech, normalise, sanitize, split

SANITIZE = [
    # (agent text, plain, bark)
    (" hhh yeah. (1.2) that's xxx cool &=laughs", "yeah. that's cool ha ha", "[breath] yeah... that's cool [laughs]"),
    (" [% sings] la la (0.4) <p> (0.8) I paid 10.50", "la la I paid 10.50", "♪ la la... I paid 10.50"),
    ("I paid 10.50, not 0.5", "I paid 10.50, not 0.5", "I paid 10.50, not 0.5"),  # the reference said "150"
    (" 0.", "", ""),
    (" 0 [=! laughs]", "", "[laughs]"),
    (" ihhh okay hx.", "okay", "[breath] okay [breath]"),
    (" &=clears:throat so &=sniff anyway", "so anyway", "[clears throat] so [sniff] anyway"),
    (" &=laughing", "ha ha", "[laughing]"),
    (" well [% closing the door] bye", "well bye", "well [closing the door] bye"),  # no ♪ for "closing"
    (" and then   we went", "and then we went", "and then we went"),
    (" so ...", "so...", "so..."),
    (" so (0.5)", "so", "so..."),
    (" ... ... .", "", ""),
    (" (0.4) <p> (0.8)", "", ""),
    (" &=breath", "", "[breath]"),
    (" hhh xxx", "", "[breath]"),
    (" &-um I think (.) so", "um I think so", "um I think... so"),
    (" Hi there, hex", "Hi there, hex", "Hi there, hex"),  # words that merely contain h and x stay
    (" I went (be)cause [/] <I> [?] yes", "I went be cause I yes", "I went be cause I yes"),
    (" it ends in a half pause (0.", "it ends in a half pause", "it ends in a half pause"),
]


@pytest.mark.parametrize("text, plain, bark", SANITIZE)
def test_sanitize_per_style(text, plain, bark):
    assert sanitize(text, "plain") == plain
    assert sanitize(text, "bark") == bark


SPLIT = [
    (" Um (0.5) &=breath I got a new dog!", [Speech("Um"), Silence(0.5), Speech("I got a new dog!")]),
    (" hhh yeah. (1.2) that's xxx cool &=laughs", [Speech("yeah."), Silence(1.2), Speech("that's cool ha ha")]),
    (" [% sings] la la (0.4) <p> (0.8) I paid 10.50",
     [Speech("la la"), Silence(0.4), Silence(0.8), Speech("I paid 10.50")]),
    (" how are you (0.4)", [Speech("how are you"), Silence(0.4)]),
    (" (0.0) hello", [Speech("hello")]),  # a zero pause renders nothing
    (" &=laughs", [Speech("ha ha")]),
    (" &=sniff [% whispers]", []),
    (" Hello there, my friend. How are you doing today? Yes. I am fine.",
     [Speech("Hello there, my friend."), Speech("How are you doing today?"), Speech("Yes. I am fine.")]),
    (" Mr. Smith went home.", [Speech("Mr. Smith went home.")]),  # a short "sentence" joins the next
]


@pytest.mark.parametrize("text, pieces", SPLIT)
def test_split_plain_cuts_pauses_out_as_exact_silences_and_speech_at_sentences(text, pieces):
    assert split(text, "plain", max_chars=400) == pieces


def test_split_bark_keeps_pauses_inside_the_text_and_has_no_silences():
    assert split(" hhh yeah. (1.2) that's cool", "bark") == [Speech("[breath] yeah... that's cool")]
    assert split(" (0.4)", "bark") == []


def test_split_for_an_engine_without_silences_drops_the_pauses():
    assert split(" so (0.5) anyway", "plain", silences=False) == [Speech("so anyway")]


def test_long_text_is_cut_at_word_boundaries_within_max_chars():
    words = [f"word{i}" for i in range(330)]
    text = " " + " ".join(words)  # about 2,200 characters, no sentence end
    pieces = split(text, "plain", max_chars=100)
    assert all(isinstance(p, Speech) and 0 < len(p.text) <= 100 for p in pieces)
    assert " ".join(p.text for p in pieces).split() == words  # nothing lost, no word cut
    assert len(pieces) >= 22


def test_a_cut_prefers_a_comma_in_the_second_half():
    text = "one two three four five six seven eight, nine ten eleven twelve thirteen fourteen"
    pieces = split(text, "plain", max_chars=50)
    assert pieces[0] == Speech("one two three four five six seven eight,")


def test_a_word_longer_than_max_chars_is_cut_hard():
    pieces = split("a" * 50, "plain", max_chars=20)
    assert [p.text for p in pieces] == ["a" * 20, "a" * 20, "a" * 10]


def test_an_unknown_style_names_the_allowed_ones():
    with pytest.raises(ValueError, match="plain, bark"):
        sanitize("hello", "loud")


def test_normalise_collapses_whitespace():
    assert normalise("  Oh  nice,\n what kind? ") == "Oh nice, what kind?"
