"""TalkBank CHAT → transcript lines, on CHAT files these tests write themselves (no network)."""

from __future__ import annotations

import argparse
import http.server
import logging
import random
import re
import threading
from pathlib import Path

import pytest

from rtchat.datasets import talkbank
from rtchat.datasets.lines import Identity, parse_line

NAK = "\x15"

HEADER = (
    "@UTF8\n@Begin\n@Languages:\teng\n"
    "@Participants:\tKAT Kate Speaker, JIM Jim Speaker, ANN Unknown_speaker Adult\n"
    "@ID:\teng|test|KAT|45;|female|||Speaker|||\n"
    "@ID:\teng|test|JIM||male|||Speaker|||\n"
    "@ID:\teng|test|ANN|1;01.01|male|||Adult|||\n"
)


def chat(*utterances: str, header: str = HEADER) -> str:
    return header + "".join(f"{u}\n" for u in utterances) + "@End\n"


def bullet(start_ms: int, end_ms: int) -> str:
    return f"{NAK}{start_ms}_{end_ms}{NAK}"


THREE_SPEAKERS = chat(
    f"*KAT:\tso: I went (.) to the ⌈store⌉ &-um (0.5) yesterday ↗ . {bullet(0, 2000)}",
    f"*JIM:\t⌊yeah⌋ I [/] I do n't know [!] what she [//] he said +/. {bullet(2500, 4000)}",
    f"*ANN:\t&=laughs yeah (..) it's &=tsk hard [% sighs] hhh +... {bullet(4050, 5000)}",
    "%com:\ta comment tier",
    f"*KAT:\t°well° it was (...) twenty-five dollars &{{l=laughs you know &}}l=laughs . {bullet(5000, 6000)}",
    f"*KAT:\tand then (0.3) nothing . {bullet(6800, 7500)}",
)


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    talkbank.configure(parser)
    return parser.parse_args(list(argv))


def dialogue_file(i: int) -> str:
    turns = [
        f"*{'KAT' if k % 2 else 'JIM'}:\tturn {k} of dialogue {i} has a few words . {bullet(k * 1000, k * 1000 + 600)}"
        for k in range(1, 6)
    ]
    return chat(*turns)


# ---- cleaning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (
            f"so: I went (.) to the ⌈store⌉ &-um (0.5) yesterday ↗ {bullet(123450, 127890)}",
            "so I went (.) to the store um (0.5) yesterday",
        ),
        (f"I do n't know [!] what she said +/. {bullet(200, 300)}", "I don't know! what she said"),
        ("&=laughs yeah (..) it's &=tsk hard [% sighs] hhh +...", "&=laughs yeah (..) it's hard [% sighs] hhh..."),
        (
            "°well° it was (...) twenty-five dollars &{l=laughs you know &}l=laughs .",
            "well it was (...) twentyfive dollars you know.",
        ),
        ("I [/] I want [//] we want ʔuh &=in it .", "I I want we want uh it."),
        ("0 [=! laughs] .", "0."),
    ],
)
def test_clean_line_follows_the_reference_steps_in_order(raw, cleaned):
    assert talkbank.clean_line(raw) == cleaned


def test_standardized_pauses_are_seeded_numbers_in_the_reference_ranges():
    text = " ".join(["(.)", "(..)", "(...)"] * 50)
    out = talkbank.clean_line(text, random.Random(42)).split()
    assert out == talkbank.clean_line(text, random.Random(42)).split()  # same seed, same pauses
    short = [float(t[1:-1]) for t in out[0::3]]
    long = [float(t[1:-1]) for t in out[1::3]]
    assert all(0.2 <= s <= 0.6 for s in short) and all(0.7 <= v <= 1.2 for v in long)
    assert set(out[2::3]) == {"(...)"}  # (...) is never standardised
    assert all(re.fullmatch(r"\(\d\.\d\)", t) for t in out[0::3] + out[1::3])


def test_special_pause_token_marks_single_dot_pauses_after_standardising():
    raw = "so (.) I went (..) to the (0.5) store (...) ok"
    assert talkbank.clean_line(raw, pause_token=True) == "so <p> (.) I went (..) to the <p> (0.5) store (...) ok"
    marked = talkbank.clean_line(raw, random.Random(1), pause_token=True).split()
    after = [marked[i + 1] for i, w in enumerate(marked) if w == "<p>"]
    assert len(after) == 3 and all(re.fullmatch(r"\(\d\.\d\)", t) for t in after)  # (..) standardised, then marked
    assert "(...)" in marked and marked[marked.index("(...)") - 1] != "<p>"
    assert "<p>" not in talkbank.clean_line(raw, random.Random(1))


def test_overlap_brackets_vanish_and_overlapping_speech_stays_in_file_order():
    out = talkbank.clean_line("⌈yes⌉ I ⌊know⌋ [<] it [>] .")
    assert out == "yes I know it."


# ---- bullets → pauses ---------------------------------------------------------------------------


def test_bullet_gaps_become_pauses_at_the_end_of_the_finishing_speakers_turn():
    turns = [
        talkbank.Turn("S1", f"hello . {bullet(0, 1000)}"),
        talkbank.Turn("S2", f"hi . {bullet(1450, 2000)}"),  # 0.45 s turn gap after S1; 0.05 s: nothing
        talkbank.Turn("S2", f"how {bullet(2050, 2300)} are you . {bullet(3000, 3500)}"),  # 0.7 s within the turn
        talkbank.Turn("S1", f"⌈fine⌉ . {bullet(3400, 3900)}"),  # overlaps S2: no pause before it
        talkbank.Turn("S2", f"good . {bullet(4000, 4500)}"),
    ]
    cleaned = [talkbank.clean_line(t.text) for t in talkbank.bullets_to_pauses(turns)]
    assert cleaned == ["hello. (0.5)", "hi.", "how (0.7) are you.", "fine. (0.1)", "good."]


def test_without_the_flag_bullets_are_deleted_not_turned_into_pauses(tmp_path):
    dialogue = talkbank.read_dialogue(write(tmp_path, "a.cha", THREE_SPEAKERS), "a.cha")
    plain = talkbank.utterances(dialogue, None, pauses_from_bullets=False)
    timed = talkbank.utterances(dialogue, None, pauses_from_bullets=True)
    assert plain[0] == "S1: so I went (.) to the store um (0.5) yesterday."
    assert timed[0] == "S1: so I went (.) to the store um (0.5) yesterday. (0.5)"
    assert timed[3] == "S1: well it was (...) twentyfive dollars you know. (0.8)"  # 6.0 s → 6.8 s, same speaker
    assert not any(NAK in u or re.search(r"\d{4}_\d", u) for u in plain + timed)


# ---- participants and reading -------------------------------------------------------------------


def test_participants_become_s1_s2_s3_with_name_age_sex(tmp_path):
    dialogue = talkbank.read_dialogue(write(tmp_path, "a.cha", THREE_SPEAKERS), "a.cha")
    assert dialogue.identities == {
        "S1": Identity("Kate", "45", "female"),
        "S2": Identity("Jim", "unknown", "male"),
        "S3": Identity("unknown", "unknown", "unknown"),  # the CABNC metadata bug is blanked
    }
    assert [t.tag for t in dialogue.turns] == ["S1", "S2", "S3", "S1", "S1"]


def test_a_participant_named_male_or_female_gives_the_sex(tmp_path):
    header = "@UTF8\n@Begin\n@Participants:\tA female Speaker, B JOHN Speaker\n@ID:\teng|t|B|30;02.|male|||Speaker|||\n"
    dialogue = talkbank.read_dialogue(write(tmp_path, "b.cha", chat("*A:\thi .", header=header)), "b.cha")
    assert dialogue.identities == {"S1": Identity("unknown", "unknown", "female"), "S2": Identity("John", "30", "male")}


def test_a_file_with_no_participants_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, "empty.cha", "@UTF8\n@Begin\n*A:\thello .\n@End\n")
    with pytest.raises(talkbank.TalkbankError, match=r"empty\.cha: no participants"):
        talkbank.read_dialogue(path, "empty.cha")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe\x00garbage", r"bad\.cha: not UTF-8"), ("just some text\n", r"bad\.cha: not a CHAT file")],
)
def test_a_corrupt_file_is_an_error_naming_it(tmp_path, content, message):
    with pytest.raises(talkbank.TalkbankError, match=message):
        talkbank.read_dialogue(write(tmp_path, "bad.cha", content), "bad.cha")


def test_unknown_tiers_are_warned_about_with_file_and_line(tmp_path, caplog):
    text = chat("*KAT:\thello .", "%zzz:\tstrange", "*BOB:\twho am I .")
    with caplog.at_level(logging.WARNING, logger=talkbank.__name__):
        dialogue = talkbank.read_dialogue(write(tmp_path, "c.cha", text), "c.cha")
    assert "c.cha:9: unknown dependent tier %zzz" in caplog.text
    assert "c.cha:10: speaker *BOB is not in @Participants" in caplog.text
    assert [t.tag for t in dialogue.turns] == ["S1"]


# ---- windows, splits, CLI -----------------------------------------------------------------------


def test_long_dialogues_become_overlapping_windows_of_at_most_450_words(tmp_path):
    turns = [f"*{'KAT' if k % 2 else 'JIM'}:\t{' '.join(f'w{k}x{j}' for j in range(20))} ." for k in range(60)]
    write(tmp_path, "long.cha", chat(*turns))
    parts, skipped = talkbank.build(talkbank.chat_files(tmp_path), talkbank.Options())
    lines = [line for part in parts.values() for line in part]
    assert skipped == 0 and len(lines) >= 3
    bodies = [parse_line(line).body.split() for line in lines]
    assert all(len(b) <= 450 and re.fullmatch(r"S\d:", b[0]) for b in bodies)
    for before, after in zip(bodies, bodies[1:], strict=False):
        assert len(set(before) & set(after)) >= 100


def test_cli_end_to_end_writes_parseable_split_files_and_counts_skipped(tmp_path, capsys):
    src = tmp_path / "src"
    write(src, "three.cha", THREE_SPEAKERS)
    for i in range(20):
        write(src, f"corpus/d{i:02}.cha", dialogue_file(i))
    write(src, "none.cha", "@UTF8\n@Begin\n@End\n")
    write(src, "broken.cha", b"\xff\xfe\x00")
    write(src, "MICASE/lab500su044.cha", THREE_SPEAKERS)  # excluded as in the reference
    out = tmp_path / "out"
    args = cli_args("--from", str(src), "--out", str(out), "--standardize-pauses", "--pauses-from-bullets", "--seed", "7")
    assert talkbank.run(args) == 0
    assert "21 dialogue(s) read, 2 skipped" in capsys.readouterr().out
    lines = {p: (out / f"dataset_{p}.txt").read_text(encoding="utf-8").splitlines() for p in ("train", "dev", "test")}
    assert [len(v) for v in lines.values()] == [17, 2, 2]  # one window per dialogue, 81/9/10 by file
    for part, part_lines in lines.items():
        for i, line in enumerate(part_lines):
            parsed = parse_line(line, f"dataset_{part}.txt:{i + 1}")
            assert parsed.summary == "" and "(.)" not in parsed.body and "(..)" not in parsed.body
    three = next(line for part in lines.values() for line in part if "store" in line)
    assert three.startswith("Participants: S1 (name: Kate, age: 45, sex: female), S2 (name: Jim, age: unknown, sex: male), S3 ")
    assert "yesterday. (0.5) S2: yeah I I don't know! what she he said S3: &=laughs yeah (" in three

    again = tmp_path / "again"
    assert (
        talkbank.run(
            cli_args("--from", str(src), "--out", str(again), "--standardize-pauses", "--pauses-from-bullets", "--seed", "7")
        )
        == 0
    )
    assert (again / "dataset_train.txt").read_bytes() == (out / "dataset_train.txt").read_bytes()


def test_only_unusable_files_is_an_error_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    write(src, "none.cha", "@UTF8\n@Begin\n@End\n")
    out = tmp_path / "out"
    assert talkbank.run(cli_args("--from", str(src), "--out", str(out))) == 2
    assert "no usable dialogues among 1 file(s) (1 skipped)" in capsys.readouterr().err
    assert not list(out.glob("dataset_*.txt"))


def test_a_from_folder_without_cha_files_says_so(tmp_path, capsys):
    src = tmp_path / "src"
    write(src, "notes.txt", "not a transcript\n")
    assert talkbank.run(cli_args("--from", str(src), "--out", str(tmp_path / "out"))) == 2
    assert f"--from {src}: no .cha files in it or its subfolders" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_corpus_url_says_to_download_it_and_use_from(tmp_path, capsys):
    args = cli_args(
        "--out", str(tmp_path / "out"), "--corpora", "SCoSE", "--base-url", "http://127.0.0.1:9/data", "--timeout-s", "2"
    )
    assert talkbank.run(args) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/data/SCoSE.zip could not be reached" in err and "--from DIR" in err


class Forbidden(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server name)
        self.send_error(403)

    def log_message(self, *args):
        pass


def test_a_corpus_url_that_asks_for_a_login_says_to_download_it_by_hand(tmp_path, capsys):
    server = http.server.HTTPServer(("127.0.0.1", 0), Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/data"
        assert talkbank.run(cli_args("--out", str(tmp_path / "out"), "--corpora", "CallFriend_eng_n", "--base-url", base)) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert f"{base}/CallFriend/eng-n.zip refuses access (TalkBank may ask for a login)" in err and "--from DIR" in err
    assert not (tmp_path / "out" / "dataset_train.txt").exists()


def test_unknown_corpus_keys_are_refused_with_the_allowed_ones(tmp_path, capsys):
    assert talkbank.run(cli_args("--out", str(tmp_path), "--corpora", "CABNC,Nope")) == 2
    assert "unknown Nope; allowed: All or CABNC" in capsys.readouterr().err


def test_a_summary_model_that_cannot_be_loaded_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "src"
    write(src, "a.cha", THREE_SPEAKERS)
    missing = tmp_path / "no-such-model"
    assert talkbank.run(cli_args("--from", str(src), "--out", str(tmp_path / "out"), "--summaries", str(missing))) == 2
    assert f"--summaries {missing}: cannot load a summarization model" in capsys.readouterr().err


def test_summarizer_input_drops_pauses_and_breaths_and_puts_each_utterance_on_a_line():
    body = "S1: so hhh I went (0.5) there. S2: xxx yes (...) right: S1: ok"
    assert talkbank.summarizer_input(body) == "S1: so I went there.\nS2: yes right\nS1: ok"
