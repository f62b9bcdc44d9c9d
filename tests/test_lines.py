"""The transcript line: written and read back by one definition."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtchat.datasets.lines import Identity, LineError, format_line, one_line, parse_line

SAFE = st.text(
    alphabet=st.characters(blacklist_characters="(),;:\n\r", blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12
)


def test_a_line_is_written_as_the_reference_wrote_it():
    ids = {"S1": Identity("Anna", "30", "female"), "S2": Identity()}
    text = format_line(ids, "S1 and S2 talk.", "S1: hello there (0.4) S2: hi")
    assert text == (
        "Participants: S1 (name: Anna, age: 30, sex: female), S2 (name: unknown, age: unknown, sex: unknown); "
        "Summary: S1 and S2 talk.; Transcript: S1: hello there (0.4) S2: hi"
    )
    line = parse_line(text)
    assert (line.identities, line.summary, line.body) == (ids, "S1 and S2 talk.", "S1: hello there (0.4) S2: hi")
    assert line.text() == text


def test_a_line_without_summary_and_with_three_speakers():
    ids = {"S1": Identity(), "S2": Identity("Bo"), "S3": Identity(sex="male")}
    text = format_line(ids, "", "S1: a S3: b S2: c")
    assert "Summary" not in text
    assert parse_line(text).identities == ids


@settings(max_examples=60, deadline=None)
@given(name=SAFE.filter(lambda s: one_line(s) == s and " " not in s), summary=SAFE, words=st.lists(SAFE, min_size=1, max_size=5))
def test_round_trip(name, summary, words):
    ids = {"S1": Identity(name=name), "S2": Identity()}
    body = "S1: " + " ".join(w.strip() or "x" for w in words)
    line = parse_line(format_line(ids, summary, body))
    assert line.text() == format_line(ids, summary, body)
    assert line.identities["S1"].name == name


@pytest.mark.parametrize(
    "text, message",
    [
        ("hello world", "no 'Participants:'"),
        ("Participants: S1 (name: a, age: b, sex: c); S1: hi", "no 'Transcript:'"),
        ("Participants: someone; Transcript: S1: hi", "participants are not"),
    ],
)
def test_lines_that_are_not_transcript_lines_name_the_place(text, message):
    with pytest.raises(LineError, match=message) as info:
        parse_line(text, where="dataset_train.txt:7")
    assert str(info.value).startswith("dataset_train.txt:7:")
