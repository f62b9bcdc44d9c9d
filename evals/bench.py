"""``rtchat bench …``: benchmarks that measure on this machine and write JSON.

Each benchmark compares against a baseline measured in the same run, since ratios hold on a
noisy machine and absolute times do not.
"""

from __future__ import annotations

import argparse
import importlib

BENCHES = (("bus", "rtchat.evals.bench_bus", "bus latency and sustained rate, ZeroMQ vs multiprocessing.Queue"),)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module, help_text in BENCHES:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.set_defaults(_bench=mod.run)


def run(args: argparse.Namespace) -> int:
    return args._bench(args)
