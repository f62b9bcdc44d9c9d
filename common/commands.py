"""Second-level commands (``bench bus``, ``data synthetic``, ``eval switch``…) for the packages
that group several: a table row is (name, module, help), and each module provides
``configure(parser)`` and ``run(args) -> exit code`` (``module:function`` names another run
function of the same module, for two commands that share their options), like the top-level commands in ``rtchat.cli``.
It lives in the leaf so that a package below the CLI can group its commands without importing it."""

from __future__ import annotations

import argparse
import importlib


def add_subcommands(parser: argparse.ArgumentParser, table, dest: str, metavar: str) -> None:
    """One sub-parser per ``table`` row (name, module, help); the chosen module's ``run`` (or the
    function named after ``module:``) is what ``run_subcommand`` calls."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar, required=True)
    for name, spec, help_text in table:
        module, _, function = spec.partition(":")
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.set_defaults(_subcommand=getattr(mod, function or "run"))


def run_subcommand(args: argparse.Namespace) -> int:
    return args._subcommand(args)
