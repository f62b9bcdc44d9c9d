"""Audio constants shared by every layer: the one sample rate of user audio on the bus.

``audio.in`` frames, the recogniser, the session recording, the simulated users and the
benchmarks all run at ``SR_HZ``; a source at another rate is resampled to it on entry.
"""

SR_HZ = 16_000  # the rate of audio.in and of the recogniser (Whisper and Silero VAD take 16 kHz)
SUPPORTED_RATES_HZ = (8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)  # input rates resampled to SR_HZ
