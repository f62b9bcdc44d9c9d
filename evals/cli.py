"""``rtchat eval …``: turn-taking evaluations that write JSON.

Each evaluation is a module with ``configure(parser)`` and ``run(args)``; heavy imports (torch,
transformers) happen inside ``run``, so building this parser stays cheap.
"""

from __future__ import annotations

import argparse

from rtchat.common.commands import add_subcommands, run_subcommand

EVALS = (
    ("switch", "rtchat.evals.switch", "greedy turn-switch prediction: precision, recall, F1, AUC, F1 after pauses, "
                                      "the always-switch floor, after-pause points by the word before the pause"),
    ("ppl", "rtchat.evals.ppl", "perplexity of real vs inserted tags and pauses (table 4, simplified)"),
    ("pred", "rtchat.evals.suite:run_pred", "the reference's table 5: next-event P/R/F1 and response quality per "
                                            "decoding method"),
    ("all", "rtchat.evals.suite", "the reference's tables 4 and 5 as its CSVs (evals_output_ppl_all.csv, "
                                  "evals_output_pred_all_all.csv)"),
    ("relevance", "rtchat.evals.relevance", "response selection on held-out dialogues: the true next agent turn vs 9 "
                                            "from other dialogues, recall@1 of 10 and MRR with bootstrap intervals"),
    ("turns", "rtchat.evals.turns", "the agent vs a 700 ms silence endpointer vs Smart Turn v3.2 vs Smart Turn gating the "
                                    "agent on scripted users; false cut-ins at 300/500/700 ms budgets (eot-bench)"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, EVALS, dest="evaluation", metavar="EVAL")


run = run_subcommand
