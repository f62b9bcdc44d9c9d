"""Write the wire test vectors in this folder: ``python tests/vectors/make_vectors.py``
(with ``rtchat`` importable). Deterministic: the same code writes the same files, byte for byte.

Each vector is one JSON file, ``NN-<type>.json``, holding the ZeroMQ frames of one
message (hex) and what they decode to. The format is described in ``docs/wire.md``; the
frames are made by the project's encoder (``rtchat.bus.wire.encode``), and
``tests/test_wire_vectors.py`` checks them both ways against the encoder and the decoder.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import msgpack

from rtchat.bus.events import (
    REGISTRY,
    WIRE_VERSION,
    AgentCancel,
    AgentCycle,
    AgentPause,
    AgentPrerender,
    AgentRelease,
    AgentSay,
    AgentSchedule,
    AgentState,
    AsrFinal,
    AsrPartial,
    AudioEof,
    AudioIn,
    AudioPlayed,
    ConfigChange,
    Envelope,
    EvalProgress,
    EvalResult,
    Live,
    NodeError,
    NodeHeartbeat,
    NodeLoading,
    NodePing,
    NodeReady,
    NodeRestarted,
    Reset,
    Shutdown,
    TtsAudio,
    UserText,
    VadEnd,
    VadPause,
    VadResume,
    VadStart,
    Word,
)
from rtchat.bus.wire import encode
from rtchat.common.schema import to_plain

HERE = Path(__file__).resolve().parent
T0 = 1_765_036_800_000_000_000  # 2025-12-06 16:00:00 UTC in ns: above 2**53, below 2**63
SESSION = "20251206-160000-ab12"


def env(src: str, seq: int, t_ns: int = T0, session: str = SESSION) -> Envelope:
    return Envelope(v=WIRE_VERSION, src=src, seq=seq, t_ns=t_ns, session=session)


def pcm(samples: list[int]) -> bytes:
    """Mono int16 little-endian, as the audio and tts nodes send it."""
    return struct.pack(f"<{len(samples)}h", *samples)


RAMP = pcm([(i * 997) % 65536 - 32768 for i in range(320)])  # 20 ms at 16 kHz, every sign and size

VECTORS: list[tuple[str, str, Envelope, object]] = [
    ("audio.in", "four samples (0, 1, -1, 32767)", env("audio", 0),
     AudioIn(pcm=pcm([0, 1, -1, 32767]), sr_hz=16000, n_samples=4, stream_pos=0, t_capture_ns=T0 - 1_500_000)),
    ("audio.in", "a 20 ms frame of 320 samples; the payload is 640 raw bytes", env("audio", 1, T0 + 20_000_000),
     AudioIn(pcm=RAMP, sr_hz=16000, n_samples=320, stream_pos=48_000, t_capture_ns=T0 + 18_500_000)),
    ("audio.in", "an empty payload frame (zero samples)", env("audio", 2),
     AudioIn(pcm=b"", sr_hz=48000, n_samples=0, stream_pos=0, t_capture_ns=0)),
    ("audio.eof", "end of the input file", env("audio", 300),
     AudioEof(stream_pos=4_800_000, reason="end of file")),
    ("audio.played", "a played chunk with non-ascii words", env("audio", 301),
     AudioPlayed(turn=3, gen=7, chunk=2, text=" très bien — ça va", start_ns=T0 + 1, end_ns=T0 + 640_000_001,
                 stream_pos=15_360, n_samples=15_360, sr_hz=24000)),
    ("vad.start", "speech onset with its capture time", env("asr", 10),
     VadStart(stream_pos=16_000, audio_ns=1_000_000_000, at_ns=T0 - 5_000_000)),
    ("vad.end", "speech end; at_ns 0 means unknown (still sent)", env("asr", 11),
     VadEnd(stream_pos=40_000, audio_ns=2_500_000_000)),
    ("asr.partial", "a hypothesis with words: one without a confidence (nil), one with", env("asr", 12),
     AsrPartial(text=" hello there", rev=4, utterance=1,
                words=(Word(text=" hello", start_ns=1_000_000_000, end_ns=1_320_000_000),
                       Word(text=" there", start_ns=1_320_000_000, end_ns=1_700_000_000, prob=0.875)),
                spoken_until_ns=T0 - 300_000_000)),
    ("asr.partial", "an empty hypothesis: empty text, empty word list", env("asr", 13),
     AsrPartial(text="", rev=0, utterance=2)),
    ("asr.final", "committed words in several scripts", env("asr", 14),
     AsrFinal(text=" 你好 мир 👋", utterance=1,
              words=(Word(text=" 你好", start_ns=0, end_ns=400_000_000, prob=1.0),
                     Word(text=" мир", start_ns=400_000_000, end_ns=800_000_000, prob=0.5),
                     Word(text=" 👋", start_ns=800_000_000, end_ns=900_000_000, prob=0.25)),
              spoken_until_ns=T0)),
    ("user.text", "typed text", env("web", 0), UserText(text="What's the weather like?")),
    ("agent.say", "words with a pause token", env("agent", 20),
     AgentSay(turn=3, gen=7, text=" Well, (0.5) let me think.", chunk=1)),
    ("agent.pause", "holding the floor for 750 ms", env("agent", 21), AgentPause(turn=3, gen=7, duration_ns=750_000_000)),
    ("agent.prerender", "three chunks, each with its leading space", env("agent", 22),
     AgentPrerender(turn=4, gen=9, chunks=(" Sure,", " I can", " do that."))),
    ("agent.prerender", "no chunks (an empty list)", env("agent", 23), AgentPrerender(turn=4, gen=10, chunks=())),
    ("agent.release", "release two chunks from index 0", env("agent", 24),
     AgentRelease(turn=4, gen=9, n_chunks=2, text=" Sure, I can")),
    ("agent.cancel", "barge-in", env("agent", 25), AgentCancel(turn=4, gen=10)),
    ("agent.state", "the agent holds the floor", env("agent", 26),
     AgentState(turn=4, gen=10, sequence="<user> hi <agent> hello", floor="agent")),
    ("agent.cycle", "timings and forward counts as maps", env("agent", 27),
     AgentCycle(turn=4, gen=10, input_text=" hi", prediction=" hello", decision="speak",
                timings_ns={"lm": 12_345_678, "total": 13_000_000}, forwards={"prefill": 1, "decode": 5})),
    ("agent.cycle", "empty maps", env("agent", 28),
     AgentCycle(turn=0, gen=0, input_text="", prediction="", decision="wait")),
    ("tts.audio", "a piece of PCM: the payload frame comes after the header, which holds the other fields", env("tts", 5),
     TtsAudio(turn=3, gen=7, chunk=1, text=" Well,", pcm=pcm([100, -100, 200, -200, 0, 0]), sr_hz=24000,
              n_samples=6, last=False)),
    ("tts.audio", "the last piece of a chunk, silence with no words", env("tts", 6),
     TtsAudio(turn=3, gen=7, chunk=1, text="", pcm=pcm([0, 0]), sr_hz=24000, n_samples=2, last=True)),
    ("eval.progress", "shard 3 of 10", env("eval", 3), EvalProgress(name="pred", done=3, total=10)),
    ("eval.result", "a result table as JSON text longer than 255 bytes (msgpack str16)", env("eval", 11),
     EvalResult(name="all", result_json=json.dumps({"rows": [{"split": f"s{i}", "ppl": None, "acc": 0.5} for i in range(9)]}))),
    ("ctl.reset", "the default (empty) reason", env("ui", 0), Reset()),
    ("ctl.live", "the session starts", env("launcher", 5), Live(run=SESSION)),
    ("ctl.config", "one value of every scalar kind: integer, float, string, boolean, nil", env("ui", 1),
     ConfigChange(changes={"agent.temperature": 0.7, "agent.max_tokens": 64, "tts.voice": "amy",
                           "asr.vad": True, "agent.seed": None})),
    ("ctl.shutdown", "to two nodes", env("launcher", 6), Shutdown(reason="user asked", nodes=("asr", "tts"))),
    ("ctl.shutdown", "to all nodes (empty list)", env("launcher", 7), Shutdown()),
    ("node.ping", "a 48-bit nonce", env("asr", 0), NodePing(node="asr", nonce=0xA1B2C3D4E5F6)),
    ("node.loading", "no fraction (nil)", env("agent", 0), NodeLoading(node="agent", stage="loading model")),
    ("node.loading", "a fraction", env("agent", 1), NodeLoading(node="agent", stage="warm-up", fraction=0.25)),
    ("node.ready", "on a GPU", env("agent", 2), NodeReady(node="agent", pid=4242, load_ns=3_210_000_000, device="cuda:0")),
    ("node.heartbeat", "stats with integer and float values", env("asr", 99),
     NodeHeartbeat(node="asr", pid=4243, uptime_ns=61_000_000_000, stats={"frames": 3000, "rtf": 0.125, "lag_ns": 0},
                   loops=3100, busy_ns=0)),
    ("node.error", "a frame the node could not decode", env("asr", 100),
     NodeError(node="asr", kind="decode", detail="audio.in: field 'pcm' missing", count=1)),
    ("node.restarted", "after a kill", env("launcher", 8),
     NodeRestarted(node="tts", reason="exited with -9", attempt=2, backoff_ns=500_000_000, pid=5001)),
    ("agent.pause",
     "integer limits: seq, duration_ns 2**64-1 (uint64), t_ns -2**63 (int64), 127 (fixint), 128 (uint8); empty session",
     env("agent", 2**64 - 1, t_ns=-(2**63), session=""),
     AgentPause(turn=127, gen=128, duration_ns=2**64 - 1)),
    ("agent.cancel", "negative fixint (-32), int8 (-33), uint32 (65536), uint64 (2**32)", env("agent", 65_536, t_ns=2**32),
     AgentCancel(turn=-32, gen=-33)),
    ("vad.start", "uint8 (255), uint16 (256, 65535), int16 (-129), int64 (-2**31 - 1)", env("asr", 255, t_ns=256),
     VadStart(stream_pos=65_535, audio_ns=-129, at_ns=-(2**31) - 1)),
    ("node.loading", "a float with an integral value is still a float64", env("agent", 3),
     NodeLoading(node="agent", stage="done", fraction=1.0)),
    ("agent.schedule", "planned: lists of ints and floats", env("agent", 29),
     AgentSchedule(turn=5, gen=2, action="planned", fire_after_ns=300_000_000,
                   pauses_ns=(0, 100_000_000, 200_000_000, 300_000_000), probs=(0.01, 0.12, 0.4, 0.55))),
    ("agent.schedule", "armed: no lists", env("agent", 30), AgentSchedule(turn=5, gen=2, action="armed", fire_after_ns=-1)),
    ("vad.pause", "the first 64 ms of a silence inside speech, placed where an end would be", env("asr", 31),
     VadPause(stream_pos=40_480, audio_ns=2_530_000_000, at_ns=T0 + 2_530_000_000)),
    ("vad.resume", "speech again after that pause", env("asr", 32),
     VadResume(stream_pos=42_016, audio_ns=2_626_000_000, at_ns=T0 + 2_626_000_000)),
]


def plain_event(event: object) -> dict:
    spec = REGISTRY[event.TYPE]
    out = {}
    for name, value in to_plain(event).items():
        out[name] = value.hex() if name in spec.payload_fields else value
    return out


def vector(kind: str, case: str, envelope: Envelope, event: object) -> dict:
    assert event.TYPE == kind, (kind, event.TYPE)
    frames = encode(event, envelope)
    return {
        "case": case,
        "type": kind,
        "frames_hex": [bytes(f).hex() for f in frames],
        "header": msgpack.unpackb(frames[1], raw=False),
        "envelope": to_plain(envelope),
        "payload_fields": list(REGISTRY[kind].payload_fields),
        "event": plain_event(event),
    }


def write(folder: Path = HERE) -> list[Path]:
    for old in folder.glob("[0-9][0-9]-*.json"):
        old.unlink()
    paths = []
    for i, (kind, case, envelope, event) in enumerate(VECTORS):
        path = folder / f"{i:02d}-{kind}.json"
        text = json.dumps(vector(kind, case, envelope, event), indent=2, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    print(f"wrote {len(write())} vectors in {HERE}", file=sys.stderr)
