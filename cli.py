"""The ``rtchat`` command. Each sub-command lives in its own module, which provides
``configure(parser)`` and ``run(args) -> exit code``; this file only wires them together.

Exit codes: 0 success, 1 failure while running, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rtchat import __version__

# (command, module, one-line help); a module is imported only when its command runs, so a
# broken or heavy sub-command never gets in the way of the others.
COMMANDS = (
    ("run", "rtchat.launcher", "start a voice session: proxy, logger, nodes, front-end (same as python launcher.py)"),
    ("chat", "rtchat.chat", "talk to the agent in this terminal (same as run --ui terminal)"),
    ("config", "rtchat.configs.cli", "show the resolved configuration of a profile with overrides"),
    ("log", "rtchat.evals.logcmd", "inspect or export an event log: info, dump, export (TextGrid, EAF, CHAT, JSONL, MCAP)"),
    ("replay", "rtchat.bus.replay", "republish a recorded log onto a live bus"),
    ("bench", "rtchat.evals.bench", "benchmarks that write JSON (bench bus, bench agent)"),
    ("data", "rtchat.datasets.cli", "build training data: data synthetic, data talkbank"),
    ("train", "rtchat.train.cli", "fine-tune a causal LM on transcript lines (full, LoRA, anchored)"),
    ("eval", "rtchat.evals.cli", "turn-taking evaluations: eval switch, eval ppl"),
    ("analyze", "rtchat.evals.analyze", "a session from its log: floor transfers, latencies, Full-Duplex-Bench v1.0, timeline"),
    ("simulate-user", "rtchat.evals.simulate_user", "make a user recording from a timed text script ([0.5] hello [pause 1.2] …)"),
    ("models", "rtchat.models", "embedded models: models install, models list"),
    ("keys", "rtchat.bus.keys", "create CURVE keys for a bus that spans hosts"),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s sub-parser gets its full options."""
    parser = argparse.ArgumentParser(
        prog="rtchat",
        description="rtchat: a full-duplex spoken dialogue agent on a ZeroMQ bus.",
        epilog="Run 'rtchat COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"rtchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text, add_help=name == command)
        if name == command:
            mod = importlib.import_module(module)
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = {name for name, _, _ in COMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in known else None)
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take positionals after options once a positional was consumed
    # (`replay LOG --fast a.b=c`); dotted overrides are recognised wherever they stand.
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra != overrides or (overrides and not hasattr(args, "overrides")):
        parser.parse_args(argv)  # reports the unrecognised arguments and exits 2
    if overrides:
        args.overrides = list(args.overrides) + overrides
    try:
        return args._run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
