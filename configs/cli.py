"""``rtchat config``: print the resolved configuration (profile + overrides) as YAML."""

from __future__ import annotations

import argparse
import sys

from rtchat.configs import DEFAULT_PROFILE, ConfigError, dump, load, profiles


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_PROFILE, help=f"profile ({', '.join(profiles())}) or a YAML path")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. agent.interval_s=0.5")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config, args.overrides)
    except ConfigError as exc:
        print(f"rtchat config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(dump(cfg))
    return 0
