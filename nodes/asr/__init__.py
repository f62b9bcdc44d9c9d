"""The ASR node: user audio in, committed words and a revisable partial out.

Modules: ``frames`` (incoming frames → contiguous 16 kHz mono float32 with its sample
position: decoding, mix-down, resampling, NaN/clip/gap/late-frame handling), ``policy`` (the
pure streaming policy: a sliding buffer re-transcribed every hop, LocalAgreement-2 commits,
trimming, repetition and silence guards), ``echo`` (dropping committed words that are the
agent's own voice heard back through the microphone). None of them reads a clock or loads a model.
"""
