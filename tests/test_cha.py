"""The CHAT writer (datasets/cha.py): layout rules on words placed by hand, and what the TalkBank
reader (datasets/talkbank.py) makes of the result."""

from __future__ import annotations

import pytest

from rtchat.datasets import talkbank
from rtchat.datasets.cha import Speaker, TimedWord, write_chat
from rtchat.datasets.lines import Identity

NAK = "\x15"
PEOPLE = [Speaker("USR", Identity("Anna Lee", "30", "female")), Speaker("AGT", Identity())]


def words(code: str, *spec: tuple[int, int, str]) -> list[TimedWord]:
    return [TimedWord(code, a, b, text) for a, b, text in spec]


def main_tiers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("*")]


def test_header_names_the_participants_and_the_media():
    text = write_chat(PEOPLE, [], media="session", comments=("from run x",))
    assert text.splitlines() == [
        "@UTF8", "@Begin", "@Languages:\teng", "@Participants:\tUSR Anna_Lee Participant, AGT Participant",
        "@Options:\tCA", "@ID:\teng|rtchat|USR|30;|female|||Participant|||", "@ID:\teng|rtchat|AGT|||||Participant|||",
        "@Media:\tsession, audio", "@Comment:\tfrom run x", "@End",
    ]


def test_a_speakers_stretches_join_into_one_utterance_with_timed_pauses():
    w = words("USR", (0, 400, "so"), (450, 900, "I"), (1500, 2000, "went")) + words("AGT", (2600, 3000, "oh"))
    # "so" → "I": 50 ms, one stretch; "I" → "went": 600 ms ≥ 200 ms: a pause inside the utterance
    assert main_tiers(write_chat(PEOPLE, w)) == [f"*USR:\tso I (0.6) went {NAK}0_2000{NAK}", f"*AGT:\toh {NAK}2600_3000{NAK}"]


def test_overlaps_are_bracketed_on_both_speakers():
    w = words("USR", (0, 500, "I"), (500, 1000, "was"), (1000, 1500, "saying")) + words("AGT", (1200, 1600, "right"))
    # AGT starts at 1.2 s inside "saying" (1.0–1.5): ⌈saying⌉ over ⌊right⌋
    assert main_tiers(write_chat(PEOPLE, w)) == [f"*USR:\tI was ⌈saying⌉ {NAK}0_1500{NAK}", f"*AGT:\t⌊right⌋ {NAK}1200_1600{NAK}"]


def test_words_cannot_carry_chat_structure():
    w = words("USR", (0, 300, "[laughs]"), (300, 600, "(0.5)"), (600, 900, "ok\x15"))
    assert main_tiers(write_chat(PEOPLE, w)) == [f"*USR:\tlaughs 0.5 ok {NAK}0_900{NAK}"]


def test_unknown_speakers_are_refused():
    with pytest.raises(ValueError, match=r"words of speakers \['XYZ'\] not in the participants"):
        write_chat(PEOPLE, words("XYZ", (0, 1, "hi")))


def test_the_talkbank_reader_turns_it_into_lines_with_bullet_pauses(tmp_path):
    w = words("USR", (0, 400, "hello"), (1000, 1400, "there")) + words("AGT", (1900, 2300, "hi"))
    (tmp_path / "x.cha").write_text(write_chat(PEOPLE, w, media="x"), encoding="utf-8")
    dialogue = talkbank.read_dialogue(tmp_path / "x.cha", "x.cha")
    assert dialogue.identities["S1"] == Identity("Anna_lee", "30", "female")  # CHAT names have no spaces; TalkBank's case rule
    # the pause inside the user's utterance is written; the 0.5 s gap to the agent comes from the bullets
    assert talkbank.utterances(dialogue, None, pauses_from_bullets=True) == ["S1: hello (0.6) there (0.5)", "S2: hi"]
