"""Audio constants shared by every layer: the one sample rate of user audio on the bus.

``audio.in`` frames, the recogniser, the session recording, the simulated users and the
benchmarks all run at ``SR_HZ``; a source at another rate is resampled to it on entry.
"""

SR_HZ = 16_000  # the rate of audio.in and of the recogniser (Whisper and Silero VAD take 16 kHz)
SUPPORTED_RATES_HZ = (8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)  # input rates resampled to SR_HZ


def window_levels_dbfs(x, window: int):
    """The level of each whole ``window``-sample window of int16 audio, dBFS (RMS re full scale)."""
    import numpy as np

    n = len(x) // max(1, window)
    frames = np.asarray(x[: n * window], dtype=np.float64).reshape(n, window)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1) + 1e-12) / 32768.0)


def loud_span(x, sr_hz: int, floor_dbfs: float, window_ms: int = 10) -> tuple[int, int] | None:
    """[first, end) samples of int16 audio from its first to its last ``window_ms`` window louder
    than ``floor_dbfs``; None when none is."""
    import numpy as np

    win = max(1, sr_hz * window_ms // 1000)
    loud = np.flatnonzero(window_levels_dbfs(x, win) > floor_dbfs)
    return None if len(loud) == 0 else (int(loud[0]) * win, min(len(x), (int(loud[-1]) + 1) * win))
