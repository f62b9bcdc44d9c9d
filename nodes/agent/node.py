"""The agent node's shell: load the model, build the core, run it on the bus.

    python -m rtchat.nodes.agent --config runs/ID/config.yaml --run-dir runs/ID

Consumes / produces: see ``rtchat.nodes.agent.core``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rtchat.bus.node import StartError, node_main
from rtchat.configs.schema import Config


def make_core(cfg: Config, run_dir: Path, progress):
    from rtchat.nodes.agent.core import AgentCore
    from rtchat.nodes.agent.lm import load_lm

    progress(f"loading {cfg.agent.model}")
    try:
        model = load_lm(cfg.agent)
    except Exception as exc:  # any load failure ends the node with its message, not a restart loop
        raise StartError(f"cannot load agent model {cfg.agent.model!r}: {exc}") from exc
    core = AgentCore(cfg.agent, model, time.time_ns())
    core.device = cfg.agent.device
    return core


def main(argv: list[str] | None = None) -> int:
    return node_main("agent", make_core, argv)


if __name__ == "__main__":
    sys.exit(main())
