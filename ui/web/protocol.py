"""What a page may send over the WebSocket, checked strictly (pure: no sockets, no clock).

A frame that breaks these rules is refused with ``BadMessage`` (the server counts it and, for a
text frame, tells the page why); the connection stays. Frames the WebSocket layer itself refuses
(larger than ``MAX_MESSAGE_BYTES``, a bad opcode, invalid UTF-8 in a text frame) close the
connection before they get here; see ``app.py``.
"""

from __future__ import annotations

import json
import math
import struct

from rtchat.common.audio import SUPPORTED_RATES_HZ as MIC_RATES_HZ  # the rates the recogniser takes
from rtchat.common.schema import SchemaError, converter, describe, to_plain
from rtchat.configs.schema import Config

# the largest message a page sends is a text message of MAX_TEXT_CHARS or a setting with a long
# summary (a 10,000-character one is about 10 KB; 4 bytes a character at worst); the WebSocket
# layer refuses anything larger by its declared length, before reading it (close code 1009)
MAX_MESSAGE_BYTES = 64 * 1024
MIC_HEADER = struct.Struct("<4sI")  # b"RTM1", sample rate; then int16 LE mono PCM
MIC_MAGIC = b"RTM1"
MAX_MIC_MS = 100  # the page sends 20 ms frames; a longer one is not a microphone frame
MAX_TEXT_CHARS = 2000  # longer typed text is cut
MAX_NOTICE_CHARS = 300  # what the server says about a message quotes no more of it than this

# ctl.config keys the page may change, and when they apply (nodes/agent/core.py, "Control")
AT_ONCE = ("agent.user_name", "agent.user_age", "agent.user_sex", "agent.agent_name", "agent.agent_age", "agent.agent_sex",
           "agent.interval_s", "agent.decoding", "agent.top_p", "agent.temperature", "agent.similarity_threshold", "tts.voice")
AT_RESET = ("agent.summary", "agent.agent_starts", "agent.opening_utterance")
CONTROL_KEYS = AT_ONCE + AT_RESET

FIELDS = {"text": ("type", "text"), "reset": ("type",), "config": ("type", "changes")}  # each message type's keys


class BadMessage(ValueError):
    """A frame that breaks the protocol; the message says what was wrong and what is allowed."""


def _refuse_constant(name: str):
    raise BadMessage(f"{name} is not a number the page sends; allowed: finite numbers")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise BadMessage(f"{text[:40]} is out of range; allowed: finite numbers")
    return value


def parse_text(raw: str) -> dict:
    """A text frame → its message (a dict with a known ``type`` and exactly that type's keys)."""
    try:
        msg = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
        json.dumps(msg, ensure_ascii=False).encode()  # "\ud800" parses to a lone surrogate: not UTF-8, not for the bus
    except BadMessage:
        raise
    except RecursionError:  # [[[[…: deeper than the parser's stack
        raise BadMessage("bad message: JSON nested too deep") from None
    except UnicodeEncodeError:
        raise BadMessage("bad message: a string with a lone surrogate (\\ud800-\\udfff); allowed: text") from None
    except ValueError as exc:
        raise BadMessage(f"bad message: not JSON ({str(exc)[:80]}); expected an object with a type") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BadMessage(f"bad message: expected a JSON object with a string type, got {describe(msg)}")
    kind = msg["type"]
    if kind not in FIELDS:
        raise BadMessage(f"unknown message type {kind[:40]!r}; allowed: {', '.join(FIELDS)}")
    extra = sorted(set(msg) - set(FIELDS[kind]))
    if extra:
        raise BadMessage(f"a {kind} message has no {extra[0][:40]!r}; allowed: {', '.join(FIELDS[kind])}")
    if kind == "text" and not isinstance(msg.get("text"), str):
        raise BadMessage(f"a text message needs text: a string, got {describe(msg.get('text'))}")
    if kind == "config" and not isinstance(msg.get("changes"), dict):
        raise BadMessage(f"a config message needs changes: an object, got {describe(msg.get('changes'))}")
    return msg


def parse_mic(data: bytes) -> tuple[bytes, int]:
    """A binary frame → (int16 LE PCM, sample rate): ``b"RTM1"``, uint32 LE rate, then whole samples."""
    if len(data) < MIC_HEADER.size + 2:
        raise BadMessage(f"a microphone frame of {len(data)} bytes: it needs an {MIC_HEADER.size}-byte header and samples")
    magic, sr_hz = MIC_HEADER.unpack_from(data)
    if magic != MIC_MAGIC:
        raise BadMessage(f"a binary frame starting {bytes(magic)!r}: microphone frames start with {MIC_MAGIC!r}")
    if sr_hz not in MIC_RATES_HZ:
        raise BadMessage(f"a microphone frame at {sr_hz} Hz; allowed: {', '.join(map(str, MIC_RATES_HZ))}")
    pcm = data[MIC_HEADER.size:]
    if len(pcm) % 2:
        raise BadMessage(f"a microphone frame of {len(pcm)} PCM bytes: int16 samples come in whole pairs")
    if len(pcm) // 2 > sr_hz * MAX_MIC_MS // 1000:
        raise BadMessage(f"a microphone frame of {len(pcm) // 2} samples at {sr_hz} Hz; at most {MAX_MIC_MS} ms")
    return pcm, sr_hz


def check_changes(cfg: Config, changes: dict) -> dict:
    """The changes as ctl.config carries them (typed as the config's fields), or ValueError naming
    what is wrong and what is allowed."""
    unknown = sorted(set(changes) - set(CONTROL_KEYS))
    if unknown:
        raise ValueError(f"cannot change {', '.join(k[:40] for k in unknown[:3])} from the page; "
                         f"allowed: {', '.join(CONTROL_KEYS)}")
    out = {}
    for section in ("agent", "tts"):
        mine = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith(section + ".")}
        if mine:
            current = getattr(cfg, section)
            try:  # the config loader's own strict conversion: types, then the section's validation
                new = converter(type(current))(to_plain(current) | mine, section)
            except SchemaError as exc:
                raise ValueError(str(exc)) from None
            out.update({f"{section}.{k}": getattr(new, k) for k in mine})
    return out
