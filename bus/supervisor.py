"""The launcher's supervision policy, pure and on virtual time.

It is told what happened — a process started, became ready, heartbeated, exited — and answers
with what to do: ``Kill`` a node that missed its heartbeats (a frozen process: heartbeats come
from a thread of their own, so a busy loop does not stop them) or whose loop has been inside one
call for longer than ``stall_limit_s`` (a stalled loop), ``Start`` a node again once its
back-off has passed: none before the first restart, then doubling per restart up to a cap; it
resets once a node has been healthy for a while. The launcher's shell carries the actions out;
tests drive this directly.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from rtchat.configs.schema import LauncherConfig

Status = Literal["starting", "ready", "down", "stopped", "failed"]
START_FAILED = 3  # a node's exit code for "cannot start with this config" (bad model path…): no restart
GAVE_UP = 4  # a running node's exit code for "cannot go on here" (its disk is full…): no restart; the session stops


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    node: str
    reason: str
    attempt: int
    backoff_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class Kill:
    node: str
    reason: str


Action = Start | Kill


@dataclasses.dataclass
class NodeState:
    heartbeats: bool  # the proxy does not heartbeat; nodes do
    status: Status = "starting"
    last_seen_ns: int = 0
    up_since_ns: int = 0
    attempts: int = 0  # restarts since the node was last healthy for healthy_reset_s
    restart_at_ns: int | None = None
    reason: str = ""
    busy_ns: int = 0  # the loop's current call, as the last heartbeat said
    gave_up: bool = False  # exited with GAVE_UP


class Supervisor:
    def __init__(self, cfg: LauncherConfig, heartbeat_interval_ns: int, nodes: dict[str, bool]):
        """``nodes`` maps each supervised process name to whether it heartbeats."""
        self.cfg = cfg
        self.heartbeat_timeout_ns = cfg.missed_heartbeats * heartbeat_interval_ns
        self.stall_ns = int(cfg.stall_limit_s * 1e9)
        self.nodes = {name: NodeState(heartbeats=hb) for name, hb in nodes.items()}
        self.shutting_down = False

    def started(self, node: str, now_ns: int) -> None:
        st = self.nodes[node]
        st.status, st.last_seen_ns, st.up_since_ns, st.restart_at_ns = "starting", now_ns, now_ns, None
        st.busy_ns = 0

    def ready(self, node: str, now_ns: int) -> None:
        st = self.nodes.get(node)
        if st is not None and st.status != "down":
            st.status, st.last_seen_ns = "ready", now_ns

    def heartbeat(self, node: str, now_ns: int, busy_ns: int = 0) -> None:
        st = self.nodes.get(node)
        if st is None or st.status == "down":
            return
        st.last_seen_ns, st.busy_ns = now_ns, busy_ns
        if st.status == "ready" and now_ns - st.up_since_ns >= self.cfg.healthy_reset_s * 1e9:
            st.attempts = 0

    def exited(self, node: str, returncode: int | None, now_ns: int) -> None:
        st = self.nodes[node]
        if self.shutting_down:
            st.status = "stopped"
            return
        if st.status == "down":  # already scheduled (we killed it)
            return
        if returncode == START_FAILED and st.status == "starting":
            st.status = "failed"
            return
        if returncode == GAVE_UP:  # restarting it would meet the same wall (a full disk)
            st.status, st.gave_up = "failed", True
            return
        self._schedule(st, now_ns, st.reason or f"exited with {returncode}")

    def backoff_ns(self, attempts: int) -> int:
        """The wait before restart number ``attempts`` (counted since the node was last healthy):
        none for the first — a conversation is waiting, and a spare may be loaded — then
        ``restart_backoff_s`` doubling up to ``restart_backoff_max_s``, so a crash loop slows down."""
        if attempts <= 1:
            return 0
        return int(min(self.cfg.restart_backoff_s * 2 ** (attempts - 2), self.cfg.restart_backoff_max_s) * 1e9)

    def _schedule(self, st: NodeState, now_ns: int, reason: str) -> None:
        st.attempts += 1
        st.status, st.reason = "down", reason
        st.restart_at_ns = now_ns + self.backoff_ns(st.attempts)

    def on_tick(self, now_ns: int) -> list[Action]:
        if self.shutting_down:
            return []
        actions: list[Action] = []
        for name, st in self.nodes.items():
            if st.status == "ready" and st.heartbeats and now_ns - st.last_seen_ns > self.heartbeat_timeout_ns:
                reason = f"missed {self.cfg.missed_heartbeats} heartbeats"
                self._schedule(st, now_ns, reason)
                actions.append(Kill(name, reason))
            elif st.status == "ready" and st.busy_ns > self.stall_ns:
                reason = f"stalled: one call has run for {st.busy_ns / 1e9:.1f} s (limit {self.cfg.stall_limit_s:g} s)"
                self._schedule(st, now_ns, reason)
                actions.append(Kill(name, reason))
            elif st.status == "down" and st.restart_at_ns is not None and now_ns >= st.restart_at_ns:
                actions.append(Start(name, st.reason, st.attempts, self.backoff_ns(st.attempts)))
                st.restart_at_ns, st.reason = None, ""
                st.status = "starting"
        return actions

    def deadline_ns(self) -> int | None:
        times = []
        for st in self.nodes.values():
            if st.status == "ready" and st.heartbeats:
                times.append(st.last_seen_ns + self.heartbeat_timeout_ns + 1)
            elif st.status == "down" and st.restart_at_ns is not None:
                times.append(st.restart_at_ns)
        return min(times) if times else None

    def failed(self) -> list[str]:
        """Nodes that could not start, or gave up running, and will not be restarted."""
        return [n for n, st in self.nodes.items() if st.status == "failed"]

    def gave_up(self) -> list[str]:
        """Nodes that exited with GAVE_UP while running."""
        return [n for n, st in self.nodes.items() if st.gave_up]

    def all_ready(self) -> bool:
        return all(st.status == "ready" or not st.heartbeats for st in self.nodes.values())

    def waiting_for(self) -> list[str]:
        return [n for n, st in self.nodes.items() if st.heartbeats and st.status != "ready"]
