"""``rtchat log export``: each format written from a logged session and read back by its own
library (praatio, pympi, pylangacq and ``rtchat data talkbank``, the mcap reader, json), compared
with what the log holds."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from agent_harness import FakeAudio, Timeline, agent, answering_model
from session_log import SR, T0, at, barge_in_session, write, write_ns

from rtchat.bus.clock import s
from rtchat.bus.eventlog import LogReader
from rtchat.bus.events import REGISTRY, AgentCycle, AgentState, AsrFinal, AudioIn, AudioPlayed, Word
from rtchat.bus.wire import decode
from rtchat.datasets.lines import Identity, parse_line
from rtchat.nodes.agent.transcript import PAUSE_RE

NAK = "\x15"


def rtchat(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtchat.cli", *argv], capture_output=True, text=True, timeout=timeout)


def export(run, fmt: str, out) -> None:
    r = rtchat("log", "export", str(run), "--to", fmt, "--out", str(out))
    assert r.returncode == 0, r.stderr


@pytest.fixture
def run(tmp_path):
    """session_log.barge_in_session (user 1.0–2.0 "hello there", 2.8–4.0 "wait"; the agent "hi!" 2.5–3.0,
    cancelled at 3.0, "sure" 4.3–4.9), with the agent's floor and decisions, and a 5.5 s session.wav."""
    extra = [
        (2.35, AgentCycle(turn=1, gen=0, input_text="", prediction=" S2: hi!", decision="switch")),
        (2.35, AgentState(turn=1, gen=0, sequence="Participants: S1 (name: Anna, age: 30, sex: female), S2 (name: Sam, "
                          "age: unknown, sex: unknown); Transcript: S1: hello there S2: hi!", floor="agent")),
        (3.0, AgentState(turn=2, gen=1, sequence="x", floor="user")),
        (3.4, AgentCycle(turn=2, gen=1, input_text="", prediction=" S1:", decision="listen")),
    ]
    write(tmp_path / "events.rtlog", barge_in_session() + extra)
    stereo = np.zeros((round(5.5 * SR), 2), dtype=np.int16)
    stereo[:, 0] = np.arange(len(stereo)) % 1000  # something to compare
    soundfile.write(str(tmp_path / "session.wav"), stereo, SR, subtype="PCM_16")
    return tmp_path


# ---------------------------------------------------------------- Praat and ELAN


USER_WORDS = [(1.1, 1.5, "hello"), (1.5, 1.9, "there"), (2.9, 3.9, "wait")]
AGENT_WORDS = [(2.5, 3.0, "hi!"), (4.3, 4.9, "sure")]  # as played, silent edges trimmed
SPEECH = [(1.0, 2.0, "speech"), (2.8, 4.0, "speech")]
FLOOR = [(2.35, 3.0, "agent"), (3.0, 5.0, "user")]  # to the last event (the agent.pause at 5.0)


def test_textgrid_holds_the_tiers_on_the_recordings_clock(run, tmp_path):
    from praatio import textgrid

    export(run, "textgrid", tmp_path / "s.TextGrid")
    tg = textgrid.openTextgrid(str(tmp_path / "s.TextGrid"), includeEmptyIntervals=False)
    assert tg.tierNames == ("user words", "agent words", "user speech", "floor", "agent decisions")
    assert (tg.minTimestamp, tg.maxTimestamp) == (0.0, 5.5)  # the length of session.wav
    got = {name: [(round(a, 3), round(b, 3), label) for a, b, label in tg.getTier(name).entries] for name in tg.tierNames[:-1]}
    assert got == {"user words": USER_WORDS, "agent words": AGENT_WORDS, "user speech": SPEECH, "floor": FLOOR}
    assert [(p.time, p.label) for p in tg.getTier("agent decisions").entries] == [(2.35, "switch"), (3.0, "cancel gen 1")]


def test_a_state_file_moves_time_zero_to_the_recordings_origin(run, tmp_path):
    from praatio import textgrid

    (run / "audio.state.json").write_text(json.dumps({"t0_ns": T0 - 1_000_000_000}))  # recording began 1 s earlier
    export(run, "textgrid", tmp_path / "s.TextGrid")
    tg = textgrid.openTextgrid(str(tmp_path / "s.TextGrid"), includeEmptyIntervals=False)
    assert [(round(a, 3), round(b, 3), w) for a, b, w in tg.getTier("user words").entries] == [
        (a + 1, b + 1, w) for a, b, w in USER_WORDS]


def test_eaf_holds_the_same_tiers_in_ms_and_links_the_recording(run, tmp_path):
    from pympi.Elan import Eaf

    out = tmp_path / "out" / "s.eaf"
    export(run, "eaf", out)
    export(run, "eaf", out)  # again, over the first: nothing is left beside it (pympi keeps .bak files)
    assert [p.name for p in out.parent.iterdir()] == ["s.eaf"]
    eaf = Eaf(str(out))
    assert set(eaf.get_tier_names()) == {"user words", "agent words", "user speech", "floor", "agent decisions"}

    def ms(spans):
        return [(round(a * 1000), round(b * 1000), label) for a, b, label in spans]

    for name, spans in (("user words", USER_WORDS), ("agent words", AGENT_WORDS), ("user speech", SPEECH), ("floor", FLOOR)):
        assert sorted(eaf.get_annotation_data_for_tier(name)) == ms(spans), name
    assert sorted(eaf.get_annotation_data_for_tier("agent decisions")) == [(2350, 2351, "switch"), (3000, 3001, "cancel gen 1")]
    (media,) = eaf.get_linked_files()
    assert media["MEDIA_URL"] == (run / "session.wav").resolve().as_uri() and media["MIME_TYPE"] == "audio/x-wav"


# ---------------------------------------------------------------- CLAN


def test_cha_is_a_ca_transcript_with_bullets_and_overlaps(run, tmp_path):
    import pylangacq

    export(run, "cha", tmp_path / "s.cha")
    text = (tmp_path / "s.cha").read_text(encoding="utf-8")
    assert "@Participants:\tUSR Anna Participant, AGT Sam Participant\n" in text  # from the agent's transcript
    assert "@ID:\teng|rtchat|USR|30;|female|||Participant|||\n" in text
    body = [line for line in text.splitlines() if line.startswith("*")]
    assert body == [  # "wait" (2.8–) starts while "hi!" (–3.0) plays: CA overlap brackets on both
        f"*USR:\thello there {NAK}1100_1900{NAK}",
        f"*AGT:\t⌈hi!⌉ {NAK}2500_3000{NAK}",
        f"*USR:\t⌊wait⌋ {NAK}2900_3900{NAK}",
        f"*AGT:\tsure {NAK}4300_4900{NAK}",
    ]
    chat = pylangacq.read_chat(str(tmp_path / "s.cha"))
    assert [u.participant for u in chat.utterances()] == ["USR", "AGT", "USR", "AGT"]
    assert [p.name for p in chat.headers()[0].participants] == ["Anna", "Sam"]


def _harness_run(tmp_path):
    """A conversation the real agent core holds on virtual time (tests/agent_harness.py): the user says
    "hello there how are you" (0.5–2.5 s), the agent answers in two chunks, the user says "it was fine
    thanks" (8.5–9.5 s). Its log as the logger would write it, with word times on the finals."""
    def final(text, a, b, utterance):
        w = text.split()
        step = (b - a) / len(w)
        words = tuple(Word(text=" " + x, start_ns=s(a + i * step), end_ns=s(a + (i + 1) * step)) for i, x in enumerate(w))
        return AsrFinal(text=text, utterance=utterance, words=words)

    core = agent(answering_model(), lookahead=False, user_name="Anna", user_age="30", user_sex="female", agent_name="Sam")
    tl = Timeline(core, FakeAudio(0.25))
    tl.at(0.0, AudioIn(pcm=b"\0\0" * 320, sr_hz=SR, n_samples=320, stream_pos=0, t_capture_ns=0))
    tl.at(2.7, final("hello there how are you", 0.5, 2.5, 0)).at(9.7, final("it was fine thanks", 8.5, 9.5, 1)).run(11.0)
    timed = []
    for st in tl.steps:
        for ev in ([st.given] if st.given is not None else []) + st.out:
            if isinstance(ev, AudioPlayed):  # the fake audio leaves the sample counts out; its timeline starts at 0
                n = (ev.end_ns - ev.start_ns) * SR // 10**9
                ev = dataclasses.replace(ev, stream_pos=ev.start_ns * SR // 10**9, n_samples=n)
            timed.append((st.t, ev))
    write_ns(tmp_path / "events.rtlog", timed)
    return [ev for _, ev in timed if isinstance(ev, AgentState)][-1].sequence


def normalised(body: str) -> str:
    """docs/export.md: pause tokens dropped (the agent times silences on its decision cycle, the CHAT file from
    the audio), whitespace collapsed."""
    return " ".join(PAUSE_RE.sub(" ", body).split())


def test_cha_reads_back_through_data_talkbank_as_the_agents_own_transcript(tmp_path):
    own = parse_line(_harness_run(tmp_path))
    (tmp_path / "cha").mkdir()
    export(tmp_path, "cha", tmp_path / "cha" / "session.cha")
    for flag in ([], ["--pauses-from-bullets"]):
        r = rtchat("data", "talkbank", "--from", str(tmp_path / "cha"), "--out", str(tmp_path / "lines"), *flag)
        assert r.returncode == 0, r.stderr
        (line,) = (tmp_path / "lines" / "dataset_train.txt").read_text(encoding="utf-8").splitlines()
        back = parse_line(line)
        assert back.identities == {"S1": Identity("Anna", "30", "female"), "S2": Identity("Sam", "unknown", "unknown")}
        assert back.identities == own.identities
        assert normalised(back.body) == normalised(own.body) == (
            "S1: hello there how are you S2: I'm good, thanks. And how was your day today? S1: it was fine thanks")
    # with the bullets' gaps as pauses: the user's 2.5 s end → the agent's first sound at 3.2 s, its last at 5.5 s →
    # the user at 8.5 s (the agent's own transcript says (0.5) and (2.0): it counts to its decision, by 0.1 s cycles)
    assert back.body == ("S1: hello there how are you (0.7) S2: I'm good, thanks. And how was your day today? (3.0) "
                         "S1: it was fine thanks")


# ---------------------------------------------------------------- JSON lines and MCAP


def logged(run) -> list[tuple[int, object]]:
    return [(rec.recv_ns, decode(rec.frames)) for rec in LogReader(run)]


def rebuilt(obj: dict):
    """A JSON event back into the catalogue's typed event, by the schema's own converters."""
    spec = REGISTRY[obj["type"]]
    kwargs = {name: conv(obj[name], name) for name, conv in spec.header_fields}
    kwargs.update({name: base64.b64decode(obj[name]) for name in spec.payload_fields})
    return spec.cls(**kwargs)


def envelope(obj: dict) -> dict:
    return {k: obj[k] for k in ("v", "src", "seq", "t_ns", "session")}


def test_jsonl_is_one_event_per_line_with_every_field(run, tmp_path):
    export(run, "jsonl", tmp_path / "s.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    want = logged(run)
    assert len(lines) == len(want) == 21
    for obj, (recv_ns, msg) in zip(lines, want, strict=True):
        assert obj["recv_ns"] == recv_ns and obj["type"] == msg.event.TYPE
        assert envelope(obj) == dataclasses.asdict(msg.env)
        assert rebuilt(obj) == msg.event  # pcm included, byte for byte


def test_mcap_holds_every_event_on_its_topic_and_the_recording(run, tmp_path):
    from mcap.reader import make_reader

    export(run, "mcap", tmp_path / "s.mcap")
    with open(tmp_path / "s.mcap", "rb") as f:
        reader = make_reader(f, validate_crcs=True)
        messages = list(reader.iter_messages(log_time_order=False))
        (meta,) = list(reader.iter_metadata())
    assert (meta.name, meta.metadata) == ("rtchat.header.0", {"run": "test"})  # the log's header record
    events = [(sch, ch, m) for sch, ch, m in messages if ch.topic != "session.audio"]
    want = logged(run)
    assert len(events) == len(want)
    for (schema, channel, message), (recv_ns, msg) in zip(events, want, strict=True):
        obj = json.loads(message.data)
        assert channel.topic == msg.event.TYPE and channel.message_encoding == "json"
        assert schema.name == f"rtchat.{msg.event.TYPE}" and schema.encoding == "jsonschema"
        assert set(json.loads(schema.data)["properties"]) == set(obj)
        assert (message.log_time, message.publish_time, message.sequence) == (recv_ns, msg.env.t_ns, msg.env.seq)
        assert envelope(obj) == dataclasses.asdict(msg.env) and rebuilt(obj) == msg.event
    audio = [(json.loads(m.data), m.log_time) for sch, ch, m in messages if ch.topic == "session.audio"]
    assert {sch.name for sch, ch, _ in messages if ch.topic == "session.audio"} == {"foxglove.RawAudio"}
    assert [t for _, t in audio] == [at(0.2 * k) for k in range(len(audio))]  # 0.2 s blocks from session.wav's sample 0
    assert all(a["format"] == "pcm-s16" and a["sample_rate"] == SR and a["number_of_channels"] == 2 for a, _ in audio)
    pcm = b"".join(base64.b64decode(a["data"]) for a, _ in audio)
    assert pcm == soundfile.read(str(run / "session.wav"), dtype="int16")[0].tobytes()


@pytest.mark.parametrize("fmt", ["textgrid", "eaf", "cha", "jsonl", "mcap"])
def test_a_log_with_nothing_decodable_exports_empty_and_says_what_it_left_out(tmp_path, fmt):
    from rtchat.bus.eventlog import LogWriter

    w = LogWriter(tmp_path / "events.rtlog", {"run": "test"})
    w.append(T0, [b"no.such.topic", b"\x80", b""])
    w.close()
    r = rtchat("log", "export", str(tmp_path), "--to", fmt, "--out", str(tmp_path / f"s.{fmt}"))
    assert r.returncode == 0, r.stderr
    assert "1 undecodable record(s) left out" in r.stdout
    if fmt == "jsonl":
        assert (tmp_path / "s.jsonl").read_text() == ""
    elif fmt == "textgrid":
        from praatio import textgrid

        tg = textgrid.openTextgrid(str(tmp_path / "s.textgrid"), includeEmptyIntervals=False)
        assert len(tg.tierNames) == 5 and all(not tg.getTier(n).entries for n in tg.tierNames)
    elif fmt == "cha":
        assert not [line for line in (tmp_path / "s.cha").read_text().splitlines() if line.startswith("*")]


# ---------------------------------------------------------------- refusals


def test_bad_requests_say_what_is_wrong_and_what_is_allowed(run, tmp_path):
    r = rtchat("log", "export", str(run), "--to", "docx", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "invalid choice: 'docx'" in r.stderr and "'textgrid', 'eaf', 'cha', 'jsonl', 'mcap'" in r.stderr
    r = rtchat("log", "export", str(tmp_path / "nope"), "--to", "jsonl", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no event log at" in r.stderr and "run directory" in r.stderr
    r = rtchat("log", "export", str(run), "--to", "jsonl", "--out", str(run / "events.rtlog"))
    assert r.returncode == 2 and "would overwrite the run's own events.rtlog" in r.stderr
    assert (run / "events.rtlog").read_bytes().startswith(b"RTCHATLOG")
    r = rtchat("log", "export", str(run), "--to", "cha", "--out", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "x").exists()
