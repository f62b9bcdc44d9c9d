"""What the two transformers engines (``bark.py``, ``fastspeech2.py``) share: where the checkpoint
comes from (a local folder or a hub id), which device it runs on, and float audio → int16.

A hub id downloads where there is a network and is then read from the Hugging Face cache
(``~/.cache/huggingface``); a folder is read as is and never touches the network.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rtchat.nodes.tts.backend import TtsLoadError

_SENTENCE_END = re.compile(r"(?<=[!?])\s+|(?<=[^.]\.)\s+")  # after ! ? or a lone "." — never inside "..."
MIN_SENTENCE_CHARS = 12  # a shorter sentence ("Yes.", "Mr.") is rendered with the next, as the core's split does


def looks_like_path(spec: str) -> bool:
    """A spec that can only be meant as a folder (a hub id is "name" or "owner/name")."""
    return spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1


def model_source(spec: str, default: str, engine: str) -> str:
    """The folder or hub id to load ``engine`` from; TtsLoadError for a folder that is not there."""
    spec = spec or default
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TtsLoadError(f"tts.model: {path} has no config.json; expected a transformers {engine} model folder "
                               f"(as saved by save_pretrained or downloaded from the hub, e.g. {default})")
        return str(path)
    if looks_like_path(spec):
        raise TtsLoadError(f"tts.model: no such folder {spec}; give the folder of a transformers {engine} model, "
                           f"or a hub id such as {default} (downloads once, needs a network)")
    return spec


def load_failed(engine: str, source: str, default: str, exc: Exception) -> TtsLoadError:
    """The error for a checkpoint transformers could not load, with how to get it."""
    if Path(source).exists():
        how = f"check that {source} holds a complete {engine} checkpoint with its tokenizer/processor files"
    else:
        how = (f"{source} is a hub id: connect to the network once so it is cached, or download it where there is "
               f"one (hf download {source}) and set tts.model to that folder")
        if source != default:
            how += f"; the default is {default}"
    return TtsLoadError(f"tts.model: cannot load the {engine} model {source}: {type(exc).__name__}: {exc}; {how}")


def place(model, device: str, engine: str):
    """The model on its device, in eval mode without gradients; a device that cannot take it is a
    TtsLoadError naming the allowed ones."""
    try:
        return model.to(device).eval().requires_grad_(False)
    except (RuntimeError, AssertionError) as exc:  # no such CUDA device, or torch without CUDA
        raise TtsLoadError(f"tts.device: cannot put {engine} on {device}: {exc}; allowed: cpu, auto, "
                           "or a cuda:N this machine has") from exc


def with_voice(engine, voice: str):
    """The engine with ``voice`` set; an unknown voice is a TtsLoadError listing the allowed ones."""
    try:
        engine.set_voice(voice)
    except ValueError as exc:
        raise TtsLoadError(str(exc)) from exc
    return engine


def to_int16(wav: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] (anything outside is clipped) → int16 at full scale."""
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(wav * 32767.0).astype(np.int16)


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end (! ? or a single "."; an ellipsis is a hesitation, not an
    end), a sentence shorter than ``MIN_SENTENCE_CHARS`` joined to the next (the last to the one before)."""
    out: list[str] = []
    carry = ""
    for part in _SENTENCE_END.split(text):
        part = f"{carry} {part}".strip() if carry else part.strip()
        carry = ""
        if len(part) < MIN_SENTENCE_CHARS:
            carry = part
        else:
            out.append(part)
    if carry:
        if out:
            out[-1] += " " + carry
        else:
            out.append(carry)
    return out
