"""``load_engine(cfg)``: the TTS engine ``tts.backend`` names, with its voice set.

piper and espeak live here; bark and fastspeech2 (heavy: torch, transformers, hub weights) are
imported only when chosen, from ``rtchat.nodes.tts.bark`` / ``rtchat.nodes.tts.fastspeech2``,
each exposing ``load(cfg) -> TtsBackend``. Every failure is a ``TtsLoadError`` saying what was
wrong and what to do; espeak is the fallback that always loads.
"""

from __future__ import annotations

import importlib

from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.backend import TtsBackend, TtsLoadError

BACKENDS = ("piper", "espeak", "bark", "fastspeech2")


def load_engine(cfg: TtsConfig) -> TtsBackend:
    if cfg.backend == "piper":
        from rtchat.nodes.tts.piper import load

        engine = load(cfg)
    elif cfg.backend == "espeak":
        from rtchat.nodes.tts.espeak import EspeakEngine, EspeakError

        try:
            engine = EspeakEngine(cfg.rate)
        except EspeakError as exc:
            raise TtsLoadError(str(exc)) from exc
    elif cfg.backend in ("bark", "fastspeech2"):
        try:
            module = importlib.import_module(f"rtchat.nodes.tts.{cfg.backend}")
        except ImportError as exc:
            raise TtsLoadError(f"tts.backend={cfg.backend} is not available in this installation ({exc}); "
                               "use tts.backend=piper or espeak") from exc
        engine = module.load(cfg)
    else:
        raise TtsLoadError(f"tts.backend: unknown engine {cfg.backend!r}; allowed: {', '.join(BACKENDS)}")
    if cfg.voice:
        try:
            engine.set_voice(cfg.voice)
        except ValueError as exc:
            raise TtsLoadError(str(exc)) from exc
    return engine
