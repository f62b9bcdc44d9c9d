"""espeak-ng synthesis through the library inside the ``espeakng-loader`` wheel (ctypes).

Always available (no model download), formant-quality speech at espeak's own rate (22,050 Hz).
Used as the TTS fallback (``EspeakEngine``, a ``TtsBackend``) and to make test and benchmark
speech offline. The library keeps global state, so it is initialised once per process and calls
are serialised with a lock.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator

import numpy as np

_LOCK = threading.Lock()
_STATE: dict = {}  # lib, sample rate, the C callback (kept alive), the chunks it collects
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):  # espeak_VOICE (speak_lib.h)
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),  # a priority byte, then the language name
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class EspeakError(RuntimeError):
    """espeak-ng cannot be loaded or refused the input; the message says which."""


def _init() -> dict:
    if _STATE:
        return _STATE
    try:
        import espeakng_loader
    except ImportError as exc:
        raise EspeakError("espeak-ng needs the espeakng-loader package (pip install espeakng-loader)") from exc
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if sr <= 0:
        raise EspeakError(f"espeak-ng did not initialise (returned {sr})")
    chunks: list[np.ndarray] = []

    def collect(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = _CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    _STATE.update(lib=lib, sr=sr, callback=callback, chunks=chunks, voice=None)
    return _STATE


def _select(lib, voice: str) -> bool:
    """Select a voice by name ("en-us", "gmw/en-US"), else by language ("en-gb", "fr-fr")."""
    if lib.espeak_SetVoiceByName(voice.encode()) == 0:
        return True
    spec = _Voice(languages=voice.encode())
    return lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == 0


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 175) -> tuple[np.ndarray, int]:
    """int16 mono speech for ``text`` and its sample rate."""
    with _LOCK:
        state = _init()
        lib, chunks = state["lib"], state["chunks"]
        if state["voice"] != voice:
            if not _select(lib, voice):
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            state["voice"] = voice
        lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE, absolute
        chunks.clear()
        data = text.encode()
        lib.espeak_Synth(data, ctypes.c_size_t(len(data) + 1), 0, _POS_CHARACTER, 0, 1, None, None)  # 1: espeakCHARS_UTF8
        lib.espeak_Synchronize()
        audio = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, dtype=np.int16)
        chunks.clear()
        return audio, state["sr"]


def sample_rate() -> int:
    """The rate of everything ``synthesize`` returns (22,050 Hz for espeak-ng)."""
    with _LOCK:
        return _init()["sr"]


def voices() -> list[str]:
    """The language codes of espeak-ng's voices ("en-us", "en-gb", …), as ``voice`` accepts them."""
    with _LOCK:
        lib = _init()["lib"]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        table = lib.espeak_ListVoices(None)
        names, i = [], 0
        while table[i]:
            names.append(table[i].contents.languages[1:].decode(errors="replace"))
            i += 1
        return sorted(set(names))


def has_voice(voice: str) -> bool:
    """Whether espeak-ng accepts ``voice`` (a listed code, or a name or language it resolves, e.g. "fr")."""
    with _LOCK:
        state = _init()
        state["voice"] = None  # the next synthesize selects its voice again
        return _select(state["lib"], voice)


DEFAULT_VOICE = "en-us"
BASE_RATE_WPM = 175


class EspeakEngine:
    """espeak-ng as a ``TtsBackend``: always available, formant speech, voices = language codes."""

    name = "espeak"
    text_style = "plain"
    handles_pauses = True

    def __init__(self, rate: float = 1.0):
        self.sample_rate = sample_rate()
        self.rate_wpm = round(BASE_RATE_WPM * rate)
        self.voice = DEFAULT_VOICE

    def voices(self) -> list[str]:
        return voices()

    def set_voice(self, voice: str) -> None:
        if voice and not has_voice(voice):
            raise ValueError(f"tts.voice: espeak-ng has no voice {voice!r}; allowed: {', '.join(voices())}")
        self.voice = voice or DEFAULT_VOICE

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        audio, _ = synthesize(text, self.voice, self.rate_wpm)
        yield audio
