"""The agent node's shell: load the model, build the core, run it on the bus.

    python -m rtchat.nodes.agent --config runs/ID/config.yaml --run-dir runs/ID

Consumes / produces: see ``rtchat.nodes.agent.core``.

A restarted agent (the run's event log already holds an ``agent.state``) continues the
conversation: ``resume_from_log`` reads the end of the log (``eventlog.read_since``: the last
``RESUME_WINDOW_S``, all of it if that holds no state) and hands the core its last state, the
highest generation and the input events logged after the state (``AgentCore.resume``).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from rtchat.bus.core import StartError
from rtchat.bus.node import node_main
from rtchat.configs.schema import Config

log = logging.getLogger(__name__)


RESUME_WINDOW_S = 120  # how far back a restarted agent looks for its last state first
RESUME_TOPICS = ("agent.state", "agent.cancel", "asr.", "user.text", "vad.")  # not the audio: decoding it costs


def resume_from_log(core, log_path: Path, now_ns: int) -> bool:
    """Bring a new core up to the conversation in the log; False when there is none to resume."""
    from rtchat.bus.eventlog import LogError, read_messages_since
    from rtchat.bus.events import AgentCancel, AgentState

    if not log_path.is_file():
        return False
    events: list = []
    try:
        for since_ns in (now_ns - RESUME_WINDOW_S * 1_000_000_000, 0):
            events = [(t, msg.event) for t, msg in read_messages_since(log_path, since_ns, RESUME_TOPICS)]
            if any(isinstance(ev, AgentState) for _, ev in events):
                break
    except (LogError, OSError) as exc:
        log.warning("cannot read %s to resume the conversation: %s", log_path, exc)
        return False
    states = [i for i, (_, ev) in enumerate(events) if isinstance(ev, AgentState)]
    if not states:
        return False
    last = states[-1]
    gen = max(ev.gen for _, ev in events if isinstance(ev, AgentState | AgentCancel))
    core.resume(events[last][1], gen, events[last + 1 :], now_ns)
    log.info("resumed the conversation at turn %d, gen %d (%d events after the last state)",
             core.turn, core.gen, len(events) - last - 1)
    return True


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


def resume(core, run_dir: Path):
    from rtchat.bus.eventlog import LOG_FILE_NAME

    if resume_from_log(core, run_dir / LOG_FILE_NAME, time.time_ns()):
        return core, f"resumed the conversation at turn {core.turn}"
    return core, None


def main(argv: list[str] | None = None) -> int:
    return node_main("agent", make_core, argv, resume=resume)


if __name__ == "__main__":
    sys.exit(main())
