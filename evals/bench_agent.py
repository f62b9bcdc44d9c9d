"""``rtchat bench agent``: agent cycle latency with the reused KV cache vs full re-encoding.

(Placeholder while the benchmark is being written: the command exists and says so.)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="write the results here (atomically)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and cycles")


def run(args: argparse.Namespace) -> int:
    print("rtchat bench agent: not implemented yet")
    return 2
