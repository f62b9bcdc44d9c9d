"""The pure-core protocol every node implements, apart from the process that runs it.

A core turns events into events on the time it is given: ``on_event(ev, now_ns)``,
``on_tick(now_ns)`` when ``deadline_ns()`` is due — no sockets, threads or clock reads — so a test
drives it on virtual time and the same core runs live under ``bus/node.py``'s loop. A core module
imports this one, never the shell (a contract in ``.importlinter``).
"""

from __future__ import annotations

from rtchat.bus.events import Event


class StartError(RuntimeError):
    """A node cannot start with this configuration (a model path that does not exist…).
    The node exits with START_FAILED and the launcher does not restart it."""


class GiveUp(RuntimeError):
    """A running node cannot go on here (its disk is full…): raised by a core, it ends the loop;
    the node reports it as a fatal node.error and exits with GAVE_UP, and the launcher stops
    the session instead of restarting the node into the same wall."""


class Core:
    """Base of node cores. Subclasses set ``topics`` and override what they need."""

    name = "node"
    topics: tuple[str, ...] = ()  # data subscriptions (prefixes); "" = everything
    control_topics: tuple[str, ...] = ("ctl.",)  # read before any queued data
    device = "cpu"  # where the core's model runs, as reported in node.ready
    urgent_topics: tuple[str, ...] = ()  # events worth cutting a long call short for (``interrupted``)

    def interrupted(self) -> bool:
        """Whether an event of ``urgent_topics`` waits to be handled. A core may ask it inside a
        long call and stop early; the node's shell answers it from the bus (``bus/node.py``), a
        core on virtual time is never interrupted."""
        return False

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        return []

    def on_tick(self, now_ns: int) -> list[Event]:
        return []

    def deadline_ns(self) -> int | None:
        """When on_tick should next run; None = only when an event arrives."""
        return None

    def stats(self) -> dict[str, int | float]:
        return {}

    def close(self) -> None:
        """Called once when the node stops (flush files, free devices)."""


def serve(core: Core, ev: Event, now_ns: int) -> list[Event]:
    """What the node's loop does with one event, for code that drives a core itself (replays,
    benchmarks, tests): ``on_event``, then ``on_tick`` for as long as the core is due by now."""
    out = core.on_event(ev, now_ns)
    for _ in range(1000):
        due = core.deadline_ns()
        if due is None or due > now_ns:
            return out
        out += core.on_tick(now_ns)
    raise RuntimeError(f"{core.name}: still due after 1000 ticks at {now_ns} (a core that never stops being due)")
