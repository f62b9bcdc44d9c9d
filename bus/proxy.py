"""The bus proxy: the only socket pair that binds. Publishers connect to its XSUB side,
subscribers to its XPUB side; ``zmq.proxy`` forwards messages down and subscriptions up.

Run alone: ``python -m rtchat.bus.proxy --config runs/ID/config.yaml``. With ``--standby`` it is the
launcher's spare: everything is imported and set up, and it binds only when a line arrives on its
standard input (end of input: the launcher is gone; it exits), so a killed proxy is replaced in
milliseconds — every message sent while no proxy runs is lost.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from rtchat.bus.sockets import curve_server, tune
from rtchat.configs import ConfigError, load
from rtchat.configs.schema import BusConfig

log = logging.getLogger(__name__)


class BindError(RuntimeError):
    """An endpoint cannot be bound (a port another process holds…); the message names it."""


def bind(ctx: zmq.Context, cfg: BusConfig) -> tuple[zmq.Socket, zmq.Socket]:
    """Bind the proxy's two sockets (with CURVE when keys are configured)."""
    xsub = tune(ctx.socket(zmq.XSUB), cfg)
    xpub = tune(ctx.socket(zmq.XPUB), cfg)
    for sock in (xsub, xpub):
        sock.setsockopt(zmq.LINGER, 0)
        if cfg.curve.keys_dir:
            curve_server(sock, cfg)
    for sock, endpoint in ((xsub, cfg.pub_endpoint), (xpub, cfg.sub_endpoint)):
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise BindError(f"cannot bind {endpoint}: {exc}") from None
    return xsub, xpub


def start_auth(ctx: zmq.Context, cfg: BusConfig) -> ThreadAuthenticator | None:
    if not cfg.curve.keys_dir:
        return None
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(Path(cfg.curve.keys_dir) / "authorized"))
    return auth


def serve(cfg: BusConfig, standby: bool = False) -> None:
    ctx = zmq.Context()
    auth = start_auth(ctx, cfg)
    if standby and not sys.stdin.readline():  # called in, or the launcher is gone
        return
    xsub, xpub = bind(ctx, cfg)
    log.info("proxy up: publishers → %s, subscribers → %s", cfg.pub_endpoint, cfg.sub_endpoint)
    try:
        zmq.proxy(xsub, xpub)
    finally:
        xsub.close()
        xpub.close()
        if auth:
            auth.stop()
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtchat.bus.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="resolved config (the run dir's config.yaml)")
    parser.add_argument("--standby", action="store_true", help="bind only after a line on stdin (the launcher's spare)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s proxy %(levelname)s %(message)s")
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"rtchat proxy: {exc}", file=sys.stderr)
        return 2
    if not cfg.bus.pub_endpoint or not cfg.bus.sub_endpoint:
        print("rtchat proxy: bus.pub_endpoint and bus.sub_endpoint must be set", file=sys.stderr)
        return 2
    try:
        serve(cfg.bus, standby=args.standby)
    except BindError as exc:  # e.g. a tcp port another process holds (the launcher checks before it starts)
        print(f"rtchat proxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
