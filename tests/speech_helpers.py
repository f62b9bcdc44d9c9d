"""Offline test speech and scoring, shared by the ASR tests: espeak-ng from the
``espeakng-loader`` wheel, and word error rate over normalised words."""

from __future__ import annotations

import ctypes

import numpy as np

from rtchat.nodes.asr.policy import normalise


def espeak(text: str) -> tuple[np.ndarray, int]:
    """int16 mono speech from libespeak-ng inside the espeakng-loader wheel, and its rate."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    sr = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2: synchronous
    assert sr > 0, "espeak-ng did not initialise"
    chunks: list[np.ndarray] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, n, events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = callback_type(collect)
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName(b"en-us")
    data = text.encode()
    lib.espeak_Synth(data, ctypes.c_size_t(len(data) + 1), 0, 0, 0, 1, None, None)
    lib.espeak_Synchronize()
    return np.concatenate(chunks).astype(np.int16), sr


def wer(ref: str, hyp: str) -> float:
    """Word error rate over normalised words (lower case, punctuation stripped)."""
    r = [w for w in map(normalise, ref.split()) if w]
    h = [w for w in map(normalise, hyp.split()) if w]
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / len(r)
