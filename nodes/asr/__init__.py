"""The ASR node: user audio in, voice activity, committed words and a revisable partial out.

Modules: ``frames`` (incoming frames → contiguous 16 kHz mono float32 with its sample
position: decoding, mix-down, resampling, NaN/clip/gap/late-frame handling), ``vad`` (Silero
VAD with hysteresis → speech start/end sample indices), ``policy`` (the pure streaming policy: a
sliding buffer re-transcribed every hop, LocalAgreement-2 commits, trimming, repetition and
silence guards), ``echo`` (dropping committed words that are the agent's own voice heard back
through the microphone), ``core`` (``AsrCore``: all of them on virtual time, events in and out),
``backends`` (faster-whisper and openai-whisper as transcribers), ``resume`` (a restarted node
catching up on the utterance in progress from the event log), ``node`` (the shell:
``python -m rtchat.nodes.asr``). Only ``backends``, ``vad.load_silero`` and ``node`` load models.
"""
