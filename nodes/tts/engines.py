"""``load_engine(cfg)``: the TTS engine ``tts.backend`` names, with its voice set.

piper and espeak live here; bark and fastspeech2 (heavy: torch, transformers, hub weights) are
imported only when chosen, from ``rtchat.nodes.tts.bark`` / ``rtchat.nodes.tts.fastspeech2``,
each exposing ``load(cfg) -> TtsBackend``. Every failure is a ``TtsLoadError`` saying what was
wrong and what to do; espeak is the fallback that always loads.
"""

from __future__ import annotations

import importlib
import json
import logging

from rtchat.configs.schema import TtsConfig
from rtchat.nodes.tts.backend import TtsBackend, TtsLoadError

log = logging.getLogger(__name__)

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


def voices(tts: TtsConfig) -> list[str]:
    """The engine's voices as ``tts.voice`` accepts them ("" = the engine's default), listed without
    loading the engine (the web page offers them)."""
    try:
        if tts.backend == "piper":
            from rtchat.nodes.tts.piper import voice_paths

            conf = json.loads(voice_paths(tts.model)[1].read_text())
            speakers = conf.get("speaker_id_map") or {}
            return sorted(speakers, key=speakers.get) if conf.get("num_speakers", 1) > 1 else [""]
        if tts.backend == "bark":
            from rtchat.nodes.tts.bark import VOICES

            return ["", *VOICES]
        if tts.backend == "espeak":
            from rtchat.nodes.tts.espeak import voices as espeak_voices

            return ["", *espeak_voices()]
    except Exception as exc:  # the list is a convenience; the TTS node validates
        log.warning("cannot list the %s voices: %s", tts.backend, exc)
    return [""] + ([tts.voice] if tts.voice else [])
