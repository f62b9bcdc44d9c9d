"""A restarted ASR resumes the utterance in progress from the run's event log (nodes/asr/resume.py,
node.py): the words the user said around the restart come out once, none twice.

A first core runs on scripted models (test_asr_core's ScriptedWhisper and EnergyVad) until it is
"killed"; what it published and every audio frame are the log; the frames the logger recorded
while no asr ran follow; a new core is resumed from that and the live frames go on."""

from __future__ import annotations

import numpy as np
import pytest
from test_asr_core import SCRIPT, SCRIPTED, T0, EnergyVad, ScriptedWhisper, finals_text, frames, speech

from rtchat.bus.core import serve
from rtchat.bus.eventlog import LogWriter
from rtchat.bus.events import AsrFinal, AsrPartial, AudioIn, Envelope, NodeHeartbeat, NodeReady, Reset, VadEnd, VadStart
from rtchat.bus.wire import encode
from rtchat.nodes.asr.core import AsrCore
from rtchat.nodes.asr.node import resume_from_log
from rtchat.nodes.asr.resume import GAP_POLL_NS, GAP_WAIT_NS, RESUME_MAX_S, previous, resume

S = 1_000_000_000
FRAMES_PER_S = 50  # 20 ms frames
SAID = "Hello there, how are you?"


def new_core(script=SCRIPT) -> AsrCore:
    whisper = ScriptedWhisper(script)
    core = AsrCore(SCRIPTED, whisper, EnergyVad())
    whisper.core = core
    return core


def first_process(audio: list[AudioIn], script=SCRIPT) -> list[tuple[int, object]]:
    """A core that ran on ``audio`` and was killed: the log of its frames and what it published."""
    core = new_core(script)
    logged = [(T0, NodeReady(node="asr", pid=1, load_ns=1))]
    for ev in audio:
        logged.append((ev.t_capture_ns, ev))
        logged += [(ev.t_capture_ns, out) for out in serve(core, ev, ev.t_capture_ns)]
    return logged


def live(core, audio: list[AudioIn]) -> list:
    """The resumed node running: its backlog at the first tick, then the live frames."""
    out = core.on_tick(audio[0].t_capture_ns)
    for ev in audio:
        out += serve(core, ev, ev.t_capture_ns)
    return out


def published(logged) -> list:
    return [ev for _, ev in logged if not isinstance(ev, AudioIn | NodeReady)]


def words(events) -> list[str]:
    return [w.text for e in events if isinstance(e, AsrFinal) for w in e.words]


def split(seconds: float, *cuts_s: float, pcm=None) -> list[list[AudioIn]]:
    """The frames of ``speech`` cut at the given times."""
    evs = list(frames(speech(16_000, seconds) if pcm is None else pcm, 16_000))
    idx = [0, *(round(c * FRAMES_PER_S) for c in cuts_s), len(evs)]
    return [evs[a:b] for a, b in zip(idx, idx[1:], strict=False)]


def log_reader(logged):
    """read(since_ns) over a list that the test appends to, as the logger appends to its file."""
    return lambda since_ns: [(t, ev) for t, ev in logged if t >= since_ns]


# ---------------------------------------------------------------- the rules, on scripted models


def test_a_core_killed_mid_utterance_is_resumed_and_the_words_come_out_once():
    before, down, after = split(4.0, 1.8, 2.6)  # killed at 1.8 s, back at 2.6 s; speech 0.5-2.5 s
    logged = first_process(before)
    assert finals_text(published(logged)) == "Hello"  # "there," was still a partial
    logged += [(ev.t_capture_ns, ev) for ev in down]  # the logger went on recording

    core = resume(new_core(), logged, log_reader(logged))
    out = live(core, after)
    assert finals_text(published(logged) + out) == SAID
    assert [type(e) for e in out if isinstance(e, VadStart | VadEnd)] == [VadEnd]  # its vad.start was out
    assert {e.utterance for e in out if isinstance(e, AsrFinal | AsrPartial)} == {0}
    revs = [e.rev for e in published(logged) + out if isinstance(e, AsrPartial)]
    assert revs == sorted(revs)  # the partials of the utterance still rise


def test_an_utterance_that_ended_while_the_asr_was_down_is_published_at_the_first_tick():
    before, down, after = split(5.0, 1.8, 3.6)  # the speech ends at 2.5 s, the VAD decides ~3.0 s
    logged = first_process(before)
    logged += [(ev.t_capture_ns, ev) for ev in down]
    core = resume(new_core(), logged, log_reader(logged))
    at_ready = core.on_tick(after[0].t_capture_ns)
    assert finals_text(published(logged) + at_ready) == SAID
    ends = [e for e in at_ready if isinstance(e, VadEnd)]
    assert len(ends) == 1 and 2.5 <= ends[0].audio_ns / S <= 2.6
    assert isinstance(at_ready[-1], AsrFinal)  # the utterance's flush, right after its vad.end
    assert live(core, after[1:]) == []  # silence after it: nothing more


def test_an_utterance_that_started_while_the_asr_was_down_gets_its_vad_start_and_words():
    script = SCRIPT + [(w, s + 3.0, e + 3.0) for w, s, e in SCRIPT]
    pcm = np.concatenate([speech(16_000, 3.0), speech(16_000, 4.0)])  # speech 0.5-2.5 s and 3.5-5.5 s
    before, down, after = split(7.0, 3.2, 4.8, pcm=pcm)
    logged = first_process(before, script)
    assert finals_text(published(logged)) == SAID
    logged += [(ev.t_capture_ns, ev) for ev in down]
    out = live(resume(new_core(script), logged, log_reader(logged)), after)
    assert [type(e) for e in out if isinstance(e, VadStart | VadEnd)] == [VadStart, VadEnd]
    assert 3.4 <= out[0].audio_ns / S <= 3.5
    assert finals_text(out) == SAID and {e.utterance for e in out if isinstance(e, AsrFinal)} == {1}


def test_the_audio_the_logger_writes_after_start_up_is_read_before_the_live_frames():
    """The logger writes every 200 ms: at the first live frame the log may not hold the frames
    before it yet. The live frames wait (polling on ticks) until it does; no word is lost."""
    before, down, unwritten, after = split(4.0, 1.6, 2.0, 2.3)
    logged = first_process(before)
    logged += [(ev.t_capture_ns, ev) for ev in down]
    core = resume(new_core(), logged, log_reader(logged))
    now = after[0].t_capture_ns
    out = core.on_tick(now) + core.on_event(after[0], now)
    assert core.deadline_ns() == now + GAP_POLL_NS and not [e for e in out if isinstance(e, AsrFinal)]
    logged += [(ev.t_capture_ns, ev) for ev in unwritten]  # the logger's next flush
    out += core.on_tick(now + GAP_POLL_NS)
    for ev in after[1:]:
        out += serve(core, ev, ev.t_capture_ns)
    assert finals_text(published(logged) + out) == SAID
    assert core.stats()["gap_frames"] == len(unwritten) and core.stats()["gap_unfilled"] == 0


def test_a_gap_the_log_never_fills_becomes_silence_after_the_wait():
    before, down, lost, after = split(4.0, 1.8, 2.0, 2.2)
    logged = first_process(before)
    logged += [(ev.t_capture_ns, ev) for ev in down]
    core = resume(new_core(), logged, log_reader(logged))
    now = after[0].t_capture_ns
    out = core.on_event(after[0], now)
    while core.deadline_ns() is not None:  # polls, then gives up GAP_WAIT_NS after the first live frame
        assert core.deadline_ns() <= now + GAP_WAIT_NS + GAP_POLL_NS
        out += core.on_tick(core.deadline_ns())
    assert core.stats()["gap_unfilled"] == 1
    for ev in after[1:]:
        out += serve(core, ev, ev.t_capture_ns)
    assert core.stats()["frames_gaps"] == 1  # the hole went to the frame assembler, which fills it
    assert finals_text(published(logged) + out) == SAID  # the node went on; nothing was said twice


def test_audio_before_a_logged_reset_is_not_heard_again():
    """ctl.reset drops the open utterance: a core restarted after it says what one that never
    died says, not the dropped words."""
    before, after = split(4.0, 2.0)
    reset_at = round(1.8 * FRAMES_PER_S)
    reference = new_core()
    expected = [out for ev in before[:reset_at] for out in serve(reference, ev, ev.t_capture_ns)]
    expected += serve(reference, Reset(reason="test"), before[reset_at].t_capture_ns)
    expected += [out for ev in before[reset_at:] + after for out in serve(reference, ev, ev.t_capture_ns)]
    logged = first_process(before[:reset_at])
    logged.append((before[reset_at].t_capture_ns, Reset(reason="test")))
    logged += [(ev.t_capture_ns, ev) for ev in before[reset_at:]]  # the asr died at the reset
    out = live(resume(new_core(), logged, log_reader(logged)), after)
    assert finals_text(published(logged) + out) == finals_text(expected) == "Hello you?"


def test_a_fresh_session_has_nothing_to_resume():
    audio = split(2.0)[0]
    assert resume(new_core(), [(ev.t_capture_ns, ev) for ev in audio]) is None  # frames, but no asr yet
    assert resume(new_core(), [(T0, NodeReady(node="agent", pid=2, load_ns=1))]) is None
    assert previous([(T0, NodeReady(node="asr", pid=1, load_ns=1))]).open_since is None


def test_previous_reads_the_open_utterance_its_committed_end_and_partial():
    before = split(4.0, 1.8)[0]
    prev = previous(first_process(before))
    assert prev.open_since is not None and prev.last_end is None
    assert [w.text for w in prev.committed] == ["Hello"] and prev.utterance == 0
    assert prev.partial_shown and prev.rev >= 2
    assert prev.resume_cut_ns == 900_000_000  # the end of "Hello", before "there," begins


# ---------------------------------------------------------------- the shell: a real log, bounded


def write_log(path, logged) -> None:
    w = LogWriter(path, {"run": "t"})
    for i, (t, ev) in enumerate(logged):
        src = "audio" if isinstance(ev, AudioIn) else "asr"
        w.append(t, encode(ev, Envelope(v=1, src=src, seq=i, t_ns=t, session="t")))
    w.close()


def test_resume_from_log_reads_the_last_30_s_only(tmp_path):
    """An asr stuck for a minute of speech (its heartbeats go on) and killed for it: the restarted
    core is fed the last RESUME_MAX_S of the log, not the whole minute, in a few calls."""
    script = [(f"w{k}", 0.5 + 0.4 * k, 0.8 + 0.4 * k) for k in range(145)]
    audio = split(61.0, 60.0, pcm=speech(16_000, 61.0, span=(0.5, 59.5)))
    logged = first_process(audio[0][: FRAMES_PER_S * 3], script)  # worked for 3 s, then stuck
    logged += [(ev.t_capture_ns, ev) for ev in audio[0][FRAMES_PER_S * 3 :]]
    logged += [(T0 + k * S, NodeHeartbeat(node="asr", pid=1, uptime_ns=k * S, stats={})) for k in range(60)]
    write_log(tmp_path / "events.rtlog", sorted(logged, key=lambda te: te[0]))
    core = new_core(script)
    resumed = resume_from_log(core, tmp_path / "events.rtlog", audio[1][0].t_capture_ns)
    assert resumed is not None
    assert resumed.stats()["resumed_frames"] <= RESUME_MAX_S * FRAMES_PER_S
    assert core.stats()["policy_calls"] <= 2 * RESUME_MAX_S / core.cfg.max_buffer_s  # every max_buffer_s / 2
    said = words(live(resumed, audio[1]))
    assert len(said) > 50 and said == sorted(said, key=lambda w: int(w[1:])) and len(set(said)) == len(said)
    assert int(said[0][1:]) >= (60 - RESUME_MAX_S - 1) / 0.4  # from the last 30 s


def test_resume_from_log_without_a_log_or_an_earlier_asr_starts_fresh(tmp_path):
    assert resume_from_log(new_core(), tmp_path / "events.rtlog", T0) is None
    write_log(tmp_path / "events.rtlog", [(ev.t_capture_ns, ev) for ev in split(1.0)[0]])
    assert resume_from_log(new_core(), tmp_path / "events.rtlog", T0 + S) is None


# ---------------------------------------------------------------- real models


def espeak_16k(texts: list[str], gap_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """int16 16 kHz speech of each text, ``gap_s`` of silence around each; (start s, end s) of each."""
    from rtchat.nodes.asr.frames import SR_HZ, resample
    from rtchat.nodes.tts.espeak import synthesize

    parts, bounds, t = [np.zeros(round(gap_s * SR_HZ), np.float32)], [], gap_s
    for text in texts:
        pcm, sr = synthesize(text)
        x = resample(pcm.astype(np.float32) / 32768, sr, SR_HZ)
        loud = np.flatnonzero(np.abs(x) > 0.01)
        bounds.append((t + loud[0] / SR_HZ, t + loud[-1] / SR_HZ))
        parts += [x, np.zeros(round(gap_s * SR_HZ), np.float32)]
        t += (len(x) + round(gap_s * SR_HZ)) / SR_HZ
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype(np.int16), bounds


@pytest.mark.model
@pytest.mark.slow
def test_a_restarted_asr_with_the_real_models_says_the_half_utterance_once(tmp_path):
    """espeak speech: a committed sentence, then the asr dies in the middle of the next one; the log
    (a real LogWriter file) holds what it published and the frames recorded while it was down;
    the new core, resumed through resume_from_log, says the rest of the sentence, no word twice."""
    from test_asr_node import CPU, STREAMING_MAX_WER

    from rtchat.evals.bench_asr import wer
    from rtchat.nodes.asr.backends import load_transcriber
    from rtchat.nodes.asr.vad import load_silero

    first, second = "Hello, how are you doing today?", "I was wondering if you could help me find a good place to eat tonight."
    pcm, bounds = espeak_16k([first, second], gap_s=1.0)
    audio = list(frames(pcm, 16_000))
    (start2, end2) = bounds[1]
    kill = round((start2 + 0.5 * (end2 - start2)) * FRAMES_PER_S)
    back = kill + FRAMES_PER_S  # down for 1 s, its frames logged
    transcribe = load_transcriber(CPU)
    killed = AsrCore(CPU, transcribe, load_silero())
    logged = [(T0, NodeReady(node="asr", pid=1, load_ns=1))]
    for ev in audio[:kill]:
        logged.append((ev.t_capture_ns, ev))
        logged += [(ev.t_capture_ns, out) for out in serve(killed, ev, ev.t_capture_ns)]
    before = published(logged)
    committed = [w for e in before if isinstance(e, AsrFinal) for w in e.words]
    assert [e.utterance for e in before if isinstance(e, AsrFinal)][-1] == 1, "nothing of the second sentence was committed"
    logged += [(ev.t_capture_ns, ev) for ev in audio[kill:back]]
    write_log(tmp_path / "events.rtlog", logged)

    resumed = resume_from_log(AsrCore(CPU, transcribe, load_silero()), tmp_path / "events.rtlog", audio[back].t_capture_ns)
    assert resumed is not None
    after = live(resumed, audio[back:])
    assert [type(e) for e in after if isinstance(e, VadStart | VadEnd)] == [VadEnd]  # the open one's start was out
    both = finals_text(before + after)
    assert wer(f"{first} {second}", both) <= STREAMING_MAX_WER, both
    resumed_words = [w for e in after if isinstance(e, AsrFinal) for w in e.words]
    assert resumed_words and resumed_words[0].start_ns >= committed[-1].end_ns  # none of the committed again
    said_second = " ".join(w.text for w in committed + resumed_words if w.start_ns >= (start2 - 0.1) * S)
    assert wer(second, said_second) <= STREAMING_MAX_WER, said_second
