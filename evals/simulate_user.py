"""``rtchat simulate-user SCRIPT --out USER.wav``: a user's recording from a small timed script.

Script syntax (a file, or ``-`` for stdin; ``#`` starts a comment line; newlines are spaces)::

    [0.5] hello how are you [pause 1.2] i was thinking about
    [6.0] mm-hmm
    [8.0] so what do you do

- ``[T]`` — the next words start exactly at T seconds (absolute; it may not go back in time);
- ``[pause S]`` — S seconds of silence after what came before;
- words — one utterance, spoken by the embedded TTS (Piper's joe voice; ``--engine espeak``
  needs nothing else), its leading and trailing silence trimmed so that the script's times are
  the speech's times.

The output is a 16 kHz mono 16-bit WAV, with ``--tail`` seconds of silence at the end; with
``--segments OUT.json`` the utterances' true ``[start_s, end_s, text]`` are written too, for
measuring a session against what was really said.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rtchat.common.audio import SR_HZ, loud_span
from rtchat.common.files import replacing

ENGINES = ("piper", "espeak")  # the voices: the embedded Piper joe, espeak-ng en-us
TRIM_DBFS = -45.0  # trimmed edges: 10 ms windows quieter than this
TOKEN_RE = re.compile(r"\[([^\]]*)\]|([^\[\]]+)")


class ScriptError(ValueError):
    """The script cannot be read; the message names the place and what is allowed."""


@dataclasses.dataclass(frozen=True)
class At:
    seconds: float


@dataclasses.dataclass(frozen=True)
class Pause:
    seconds: float


@dataclasses.dataclass(frozen=True)
class Say:
    text: str


def parse(script: str) -> list[At | Pause | Say]:
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    text = " ".join(lines)
    items: list[At | Pause | Say] = []
    pos = 0
    for m in TOKEN_RE.finditer(text):
        if m.start() != pos:
            raise ScriptError(f"unbalanced bracket at character {pos}: {text[pos:m.start() + 1]!r}")
        pos = m.end()
        if m.group(2) is not None:
            words = " ".join(m.group(2).split())
            if words:
                items.append(Say(words))
            continue
        inner = m.group(1).strip()
        try:
            if inner.startswith("pause"):
                value = float(inner[len("pause"):])
                if value < 0:
                    raise ValueError
                items.append(Pause(value))
            else:
                value = float(inner)
                if value < 0:
                    raise ValueError
                items.append(At(value))
        except ValueError:
            raise ScriptError(f"[{inner}]: allowed: [T] (start time in s, >= 0) or [pause S] (S >= 0)") from None
    if pos != len(text):
        raise ScriptError(f"unbalanced bracket at character {pos}: {text[pos:pos + 20]!r}")
    if not any(isinstance(i, Say) for i in items):
        raise ScriptError("the script has no words to say")
    return items


def trim(x: np.ndarray, sr: int) -> np.ndarray:
    """Cut leading and trailing 10 ms windows quieter than TRIM_DBFS."""
    if len(x) < max(1, sr // 100):
        return x
    span = loud_span(x, sr, TRIM_DBFS)
    return x[:0] if span is None else x[span[0]: span[1]]


def render(items: list[At | Pause | Say], synth: Callable[[str], tuple[np.ndarray, int]],
           tail_s: float = 1.0) -> tuple[np.ndarray, list[list]]:
    """int16 audio at SR_HZ and the utterances' [start_s, end_s, text]."""
    from rtchat.nodes.asr.frames import resample

    parts: list[np.ndarray] = []
    length = 0  # samples so far
    segments: list[list] = []
    for item in items:
        if isinstance(item, At):
            target = round(item.seconds * SR_HZ)
            if target < length:
                raise ScriptError(f"[{item.seconds}] goes back in time: the audio before it already lasts "
                                  f"{length / SR_HZ:.2f} s; use a later time or [pause S]")
            parts.append(np.zeros(target - length, dtype=np.int16))
            length = target
        elif isinstance(item, Pause):
            n = round(item.seconds * SR_HZ)
            parts.append(np.zeros(n, dtype=np.int16))
            length += n
        else:
            pcm, sr = synth(item.text)
            x = resample(pcm.astype(np.float32) / 32768.0, sr, SR_HZ)
            speech = trim(np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16), SR_HZ)
            if len(speech) == 0:
                raise ScriptError(f"the TTS made no sound for {item.text!r}")
            segments.append([round(length / SR_HZ, 3), round((length + len(speech)) / SR_HZ, 3), item.text])
            parts.append(speech)
            length += len(speech)
    parts.append(np.zeros(round(tail_s * SR_HZ), dtype=np.int16))
    return np.concatenate(parts), segments


def engine_synth(engine: str) -> Callable[[str], tuple[np.ndarray, int]]:
    """A text → (int16, rate) function over one of the project's TTS engines."""
    from rtchat.configs.schema import TtsConfig
    from rtchat.nodes.tts.engines import load_engine

    eng = load_engine(TtsConfig(backend=engine, device="cpu"))

    def synth(text: str) -> tuple[np.ndarray, int]:
        pieces = list(eng.synthesize(text))
        return (np.concatenate(pieces) if pieces else np.zeros(0, np.int16)), eng.sample_rate

    return synth


def write_wav(path: Path, pcm: np.ndarray, sr: int = SR_HZ) -> None:
    """Atomic (``common.files.replacing``)."""
    import soundfile as sf

    with replacing(path) as tmp:
        sf.write(tmp, pcm, sr, subtype="PCM_16", format="WAV")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", metavar="SCRIPT", help="a script file, or - for stdin (syntax: rtchat simulate-user --help)")
    parser.add_argument("--out", required=True, metavar="USER.wav", help="the recording to write (16 kHz mono)")
    parser.add_argument("--engine", default="piper", choices=ENGINES, help="the voice (default: piper, embedded joe)")
    parser.add_argument("--tail", type=float, default=1.0, metavar="S", help="silence after the last words (default 1.0)")
    parser.add_argument("--segments", metavar="OUT.json", help="also write the utterances' true [start_s, end_s, text]")
    parser.epilog = "Script: [T] starts the next words at T s; [pause S] adds S s of silence; # comments."


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.script == "-" else Path(args.script).read_text(encoding="utf-8")
        items = parse(text)
        pcm, segments = render(items, engine_synth(args.engine), args.tail)
    except (OSError, ScriptError) as exc:
        print(f"rtchat simulate-user: {exc}", file=sys.stderr)
        return 2
    write_wav(Path(args.out), pcm)
    if args.segments:
        from rtchat.common.files import write_atomic

        write_atomic(Path(args.segments), json.dumps(segments, indent=1) + "\n")
    print(f"{args.out}: {len(pcm) / SR_HZ:.1f} s, {len(segments)} utterances", file=sys.stderr)
    return 0
