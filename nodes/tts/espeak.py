"""espeak-ng synthesis through the library inside the ``espeakng-loader`` wheel (ctypes).

Always available (no model download), formant-quality speech at espeak's own rate (22,050 Hz).
Used as the TTS fallback and to make test and benchmark speech offline. The library keeps global
state, so it is initialised once per process and calls are serialised with a lock.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_LOCK = threading.Lock()
_STATE: dict = {}  # lib, sample rate, the C callback (kept alive), the chunks it collects
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


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


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 175) -> tuple[np.ndarray, int]:
    """int16 mono speech for ``text`` and its sample rate."""
    with _LOCK:
        state = _init()
        lib, chunks = state["lib"], state["chunks"]
        if state["voice"] != voice:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
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
