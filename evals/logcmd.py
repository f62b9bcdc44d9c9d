"""``rtchat log info|dump|export``: ``info`` and ``dump`` read only the event log (``bus/logcli.py``);
``export`` writes a run for Praat, ELAN, CLAN, Foxglove or JSON readers (``evals/export.py``), which
needs the analysis and the CHAT writer of the layers above the bus, so the command lives here."""

from __future__ import annotations

import argparse

from rtchat.bus import logcli
from rtchat.evals import export


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="log_cmd", metavar="ACTION", required=True)
    logcli.add_actions(sub)
    export.configure(sub.add_parser("export", help="the run as TextGrid, EAF, CHAT, JSON lines or MCAP",
                                    description=export.__doc__.split("\n\n", 1)[0].replace("``", "")))


def run(args: argparse.Namespace) -> int:
    return export.run(args) if args.log_cmd == "export" else logcli.run(args)
