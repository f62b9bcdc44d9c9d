"""``rtchat bench …``: benchmarks that measure on this machine and write JSON.

Each benchmark compares against a baseline measured in the same run, since ratios hold on a
noisy machine and absolute times do not. Benchmark modules import heavy libraries (torch)
inside their functions, so building this parser stays cheap.
"""

from __future__ import annotations

import argparse

from rtchat.common.commands import add_subcommands, run_subcommand

BENCHES = (
    ("bus", "rtchat.evals.bench_bus", "bus latency and sustained rate, ZeroMQ vs multiprocessing.Queue"),
    ("agent", "rtchat.evals.bench_agent", "agent cycle latency with the reused KV cache vs full re-encoding"),
    ("asr", "rtchat.evals.bench_asr", "streaming ASR vs one offline transcription: WER, commit/partial latency, RTF, drift"),
    ("tts", "rtchat.evals.bench_tts", "TTS time to first audio and real-time factor: Piper vs espeak-ng"),
    ("session", "rtchat.evals.bench_session", "scripted users through full voice sessions: floor-transfer offsets, answers"),
    ("chaos", "rtchat.evals.bench_chaos", "kill -9 each node mid-reply and mid-utterance: restart time, resumption, lost words"),
    ("soak", "rtchat.evals.bench_soak", "one N-minute session: unplanned restarts, memory growth, latency drift, lost events"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, BENCHES, dest="bench", metavar="BENCH")


run = run_subcommand
