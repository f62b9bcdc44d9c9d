"""``rtchat bench …``: benchmarks that measure on this machine and write JSON.

Each benchmark compares against a baseline measured in the same run, since ratios hold on a
noisy machine and absolute times do not. Benchmark modules import heavy libraries (torch)
inside their functions, so building this parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib

BENCHES = (
    ("bus", "rtchat.evals.bench_bus", "bus latency and sustained rate, ZeroMQ vs multiprocessing.Queue"),
    ("agent", "rtchat.evals.bench_agent", "agent cycle latency with the reused KV cache vs full re-encoding"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module, help_text in BENCHES:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.set_defaults(_bench=mod.run)


def run(args: argparse.Namespace) -> int:
    return args._bench(args)
