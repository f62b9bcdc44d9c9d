"""``rtchat data …``: build transcript-line datasets (``dataset_{train,dev,test}.txt``)."""

from __future__ import annotations

import argparse

from rtchat.common.commands import add_subcommands, run_subcommand

SOURCES = (
    ("synthetic", "rtchat.datasets.synthetic", "a spoken-dialogue corpus from chitchat-dataset with human-like timing"),
    ("talkbank", "rtchat.datasets.talkbank", "TalkBank CA corpora (CHAT), downloaded or from a local folder"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, SOURCES, dest="source", metavar="SOURCE")


run = run_subcommand
