"""``rtchat eval …``: turn-taking evaluations that write JSON.

Each evaluation is a module with ``configure(parser)`` and ``run(args)``; heavy imports (torch,
transformers) happen inside ``run``, so building this parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib

EVALS = (
    ("switch", "rtchat.evals.switch", "greedy turn-switch prediction: precision, recall, F1, AUC, F1 after pauses"),
    ("ppl", "rtchat.evals.ppl", "perplexity of real vs inserted tags and pauses (table 4, simplified)"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="evaluation", metavar="EVAL", required=True)
    for name, module, help_text in EVALS:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.set_defaults(_eval=mod.run)


def run(args: argparse.Namespace) -> int:
    return args._eval(args)
