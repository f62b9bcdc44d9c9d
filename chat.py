"""``rtchat chat``: talk to the agent in this terminal — ``rtchat run --ui terminal`` with the
persona (names, ages, summary, opening) given on the command line instead of in the profile.

The front-end itself is ``ui/terminal.py``; this command only adds the persona options to the
launcher's and starts the session through it.
"""

from __future__ import annotations

import argparse

from rtchat.launcher import configure as configure_run
from rtchat.launcher import run as run_session


def persona_overrides(args: argparse.Namespace) -> list[str]:
    pairs = [
        ("agent.user_name", args.user_name),
        ("agent.user_age", args.user_age),
        ("agent.user_sex", args.user_sex),
        ("agent.agent_name", args.agent_name),
        ("agent.agent_age", args.agent_age),
        ("agent.agent_sex", args.agent_sex),
        ("agent.summary", args.summary),
        ("agent.opening_utterance", args.opening),
    ]
    out = [f"{k}={v}" for k, v in pairs if v is not None]
    if args.agent_starts:
        out.append("agent.agent_starts=true")
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    configure_run(parser)
    persona = parser.add_argument_group("persona (S1 is you, S2 the agent)")
    for who in ("user", "agent"):
        persona.add_argument(f"--{who}-name", metavar="NAME")
        persona.add_argument(f"--{who}-age", metavar="AGE")
        persona.add_argument(f"--{who}-sex", metavar="SEX", help="e.g. female, male, unknown")
    persona.add_argument("--summary", metavar="TEXT", help='e.g. "S1 and S2 are talking about their weekend."')
    persona.add_argument("--agent-starts", action="store_true", help="the agent speaks first")
    persona.add_argument("--opening", metavar="TEXT", help="the agent's first words")


def run(args: argparse.Namespace) -> int:
    args.ui = "terminal"
    args.overrides = list(args.overrides) + persona_overrides(args)
    return run_session(args)
