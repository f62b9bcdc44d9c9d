"""Event logs written event by event, for the tests that read runs back (analyze, fdb, log export):
every time in them is known exactly. ``write`` stamps each event with its time as the publish time
(``t_ns``) and 1 µs later as the logger's receive time."""

from __future__ import annotations

from rtchat.bus.eventlog import LogWriter
from rtchat.bus.events import (
    AgentCancel,
    AgentPause,
    AgentSay,
    AsrFinal,
    AudioIn,
    AudioPlayed,
    Envelope,
    TtsAudio,
    VadEnd,
    VadStart,
    Word,
)
from rtchat.bus.wire import encode

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
SR = 16_000
TTS_SR = 22_050


def at(seconds: float) -> int:
    return T0 + round(seconds * S)


def audio_s(seconds: float) -> int:
    return round(seconds * S)


def write(path, timed: list[tuple[float, object]]) -> None:
    write_ns(path, [(at(t), ev) for t, ev in timed])


def write_ns(path, timed: list[tuple[int, object]]) -> None:
    """Events at bus times in ns, in time order (a stable sort: same-time events keep their order)."""
    w = LogWriter(path, {"run": "test"})
    for seq, (t, ev) in enumerate(sorted(timed, key=lambda x: x[0])):
        w.append(t + 1000, encode(ev, Envelope(v=1, src="test", seq=seq, t_ns=t, session="r")))
    w.close()


def pcm(seconds: float, sr: int) -> tuple[bytes, int]:
    n = round(seconds * sr)
    return b"\x00\x00" * n, n


def chunk(turn: int, chunk_i: int, t_say: float, pieces: list[tuple[str, float]], start: float, cut_at: float | None = None):
    """agent.say, its tts.audio pieces (text "", i.e. silence, or words), and its audio.played."""
    text = "".join(t or f" ({d})" for t, d in pieces)
    out = [(t_say, AgentSay(turn=turn, gen=0, text=text, chunk=chunk_i))]
    for i, (words, dur) in enumerate(pieces):
        data, n = pcm(dur, TTS_SR)
        out.append((t_say + 0.05, TtsAudio(turn=turn, gen=0, chunk=chunk_i, text=words, pcm=data, sr_hz=TTS_SR,
                                           n_samples=n, last=i == len(pieces) - 1)))
    total = sum(d for _, d in pieces)
    end = cut_at if cut_at is not None else start + total
    out.append((end + 0.01, AudioPlayed(turn=turn, gen=0, chunk=chunk_i, text=text, start_ns=at(start), end_ns=at(end),
                                        stream_pos=round(start * SR), n_samples=round((end - start) * SR), sr_hz=SR)))
    return out


def barge_in_session() -> list[tuple[float, object]]:
    """User speaks 1.0–2.0 s; the agent answers at 2.5 s (0.5 s of words, 0.2 s trailing pause);
    the user starts again at 2.8 s over the agent, which cancels at 3.0 s; the user stops at 4.0 s;
    the agent answers at 4.3 s after a 0.3 s leading pause piece (first sample at 4.0 s)."""
    data, n = pcm(0.02, SR)
    return [
        (0.0, AudioIn(pcm=data, sr_hz=SR, n_samples=n, stream_pos=0, t_capture_ns=at(0.0))),
        (1.25, VadStart(stream_pos=16_000, audio_ns=audio_s(1.0))),
        (2.3, AsrFinal(text=" hello there", utterance=0, words=(
            Word(text=" hello", start_ns=audio_s(1.1), end_ns=audio_s(1.5)),
            Word(text=" there", start_ns=audio_s(1.5), end_ns=audio_s(1.9))))),
        (2.6, VadEnd(stream_pos=32_000, audio_ns=audio_s(2.0))),
        *chunk(1, 0, 2.35, [(" hi!", 0.5), ("", 0.2)], start=2.5),
        (2.9, VadStart(stream_pos=44_800, audio_ns=audio_s(2.8))),
        (3.0, AgentCancel(turn=1, gen=1)),
        (3.5, AsrFinal(text=" wait", utterance=1, words=(Word(text=" wait", start_ns=audio_s(2.9), end_ns=audio_s(3.9)),))),
        (4.6, VadEnd(stream_pos=64_000, audio_ns=audio_s(4.0))),
        *chunk(3, 0, 3.9, [("", 0.3), (" sure", 0.6)], start=4.0),
        (5.0, AgentPause(turn=3, gen=1, duration_ns=800_000_000)),
    ]
