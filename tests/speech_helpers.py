"""Offline test speech and scoring, shared by the ASR tests: espeak-ng speech (the project's
``nodes.tts.espeak``) and word error rate (``evals.bench_asr.wer``, jiwer over normalised words)."""

from __future__ import annotations

from rtchat.evals.bench_asr import wer
from rtchat.nodes.tts.espeak import synthesize as espeak

__all__ = ["espeak", "wer"]
