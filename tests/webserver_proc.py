"""The web page's server alone in a process of its own, for tests that measure it from outside (its
memory) and must see it survive: ``python webserver_proc.py PUB SUB PORT`` joins the bus at
PUB/SUB, serves the page on 127.0.0.1:PORT, prints one JSON line ``{"token", "pid"}`` once it
listens, logs warnings and errors to stderr, and stops when its stdin closes."""

from __future__ import annotations

import json
import logging
import os
import sys

from rtchat.bus.clock import Clock
from rtchat.configs.schema import BusConfig, Config, RunConfig, UiConfig
from rtchat.ui.web.app import WebApp


def main() -> None:
    pub, sub, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    bus = BusConfig(pub_endpoint=pub, sub_endpoint=sub, heartbeat_interval_s=0.2)
    web = WebApp(Config(bus=bus, run=RunConfig(id="t"), ui=UiConfig(port=port)), Clock(), say=lambda line: None)
    web.start()
    print(json.dumps({"token": web.token, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    web.close()


if __name__ == "__main__":
    main()
