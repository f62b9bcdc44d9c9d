"""``rtchat keys gen DIR``: CURVE keypairs for a bus that spans hosts.

Writes ``server.key``/``server.key_secret`` (the proxy's), one keypair per client name, and
``authorized/<name>.key`` (the public keys the proxy admits). Copy a client's ``.key_secret``
and ``server.key`` to the host that runs that client, and set ``bus.curve.keys_dir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rtchat.bus.sockets import generate_keys


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
    gen = sub.add_parser("gen", help="create server and client keypairs in DIR")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--clients", default="client", help="comma-separated client names (default: client)")


def run(args: argparse.Namespace) -> int:
    clients = tuple(c.strip() for c in args.clients.split(",") if c.strip())
    generate_keys(args.dir, clients)
    print(f"wrote CURVE keys for server and {', '.join(clients)} in {args.dir}; set bus.curve.keys_dir={args.dir}")
    return 0
