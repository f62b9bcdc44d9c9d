"""``rtchat data …``: build transcript-line datasets (``dataset_{train,dev,test}.txt``)."""

from __future__ import annotations

import argparse
import importlib

SOURCES = (
    ("synthetic", "rtchat.datasets.synthetic", "a spoken-dialogue corpus from chitchat-dataset with human-like timing"),
    ("talkbank", "rtchat.datasets.talkbank", "TalkBank CA corpora (CHAT), downloaded or from a local folder"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, module, help_text in SOURCES:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.set_defaults(_data=mod.run)


def run(args: argparse.Namespace) -> int:
    return args._data(args)
