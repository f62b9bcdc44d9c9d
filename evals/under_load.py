"""``--under-load``: a competing process beside a benchmark — the agent's decoding loop, as in a
live session where the recogniser, the agent and the TTS share the cores.

``AgentLoad(profile, overrides)`` is a context manager. It starts a spawned process that loads
the agent's model as the agent node does (the profile's ``agent`` section: model, adapter,
dtype, threads) and runs decision cycles back to back until the block ends: ``bench agent``'s
cycle (a 400-word transcript growing by two words or a pause at a time, 7 new tokens each).
Entering returns once the model is loaded and a first cycle has run, so the benchmark is under
load from its first call; ``cycles`` is how many cycles ran (a load that ran nothing measured
nothing: ``UnderLoadError``). A child that dies raises ``UnderLoadError`` naming its exit code.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0  # loading the model (and merging the adapter) on a busy machine


class UnderLoadError(RuntimeError):
    """The competing process could not start, died, or ran no cycle."""


def _agent_cycles(profile: str, overrides: Sequence[str], ready, stop, cycles) -> None:
    from rtchat.configs import load
    from rtchat.evals.bench_agent import MAX_NEW_TOKENS, cycle_texts, transcript
    from rtchat.nodes.agent.lm import load_lm

    lm = load_lm(load(profile, list(overrides)).agent)
    texts = cycle_texts(transcript(400), 40)
    i = 0
    while not stop.is_set():
        lm.generate(texts[i % len(texts)], MAX_NEW_TOKENS)
        with cycles.get_lock():
            cycles.value += 1
        ready.set()
        i += 1


class AgentLoad:
    """The agent's decoding loop in another process for the duration of a ``with`` block."""

    def __init__(self, profile: str = "cpu", overrides: Sequence[str] = (), target=_agent_cycles):
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding model threads
        self._ready, self._stop, self._cycles = ctx.Event(), ctx.Event(), ctx.Value("l", 0)
        self._proc = ctx.Process(target=target, args=(profile, tuple(overrides), self._ready, self._stop, self._cycles),
                                 name="rtchat-agent-load", daemon=True)

    @property
    def cycles(self) -> int:
        return self._cycles.value

    def __enter__(self) -> AgentLoad:
        self._proc.start()
        deadline = READY_TIMEOUT_S
        while not self._ready.wait(min(deadline, 1.0)):
            deadline -= 1.0
            if not self._proc.is_alive():
                raise UnderLoadError(f"the agent's decoding loop exited with code {self._proc.exitcode} before its first cycle")
            if deadline <= 0:
                self._end()
                raise UnderLoadError(f"the agent's decoding loop ran no cycle within {READY_TIMEOUT_S:.0f} s")
        log.info("under load: the agent's decoding loop runs (pid %d)", self._proc.pid)
        return self

    def __exit__(self, *exc) -> None:
        alive = self._proc.is_alive()
        self._end()
        if exc[0] is None and not alive:
            raise UnderLoadError(f"the agent's decoding loop died during the benchmark (exit code {self._proc.exitcode})")

    def _end(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
