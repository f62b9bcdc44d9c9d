"""Supervision policy on virtual time: restarts with back-off, heartbeat misses, shutdown."""

from __future__ import annotations

from rtchat.bus.clock import ms, s
from rtchat.bus.supervisor import Kill, Start, Supervisor
from rtchat.configs.schema import LauncherConfig

CFG = LauncherConfig(missed_heartbeats=3, restart_backoff_s=0.5, restart_backoff_max_s=4.0, healthy_reset_s=30.0)
HB = s(1)


def up(sup: Supervisor, node: str, t: int) -> None:
    sup.started(node, t)
    sup.ready(node, t)


def test_a_node_that_exits_is_restarted_at_once_then_after_the_backoff():
    sup = Supervisor(CFG, HB, {"proxy": False, "logger": True})
    up(sup, "logger", 0)
    sup.exited("logger", -9, ms(100))
    assert sup.deadline_ns() == ms(100)  # the first restart waits for nothing
    assert sup.on_tick(ms(100)) == [Start("logger", "exited with -9", 1, 0)]
    assert sup.on_tick(ms(200)) == []  # not twice
    sup.started("logger", ms(200))
    sup.exited("logger", -9, ms(300))  # again, before it was healthy for long: now it waits
    assert sup.on_tick(ms(799)) == []
    assert sup.on_tick(ms(800)) == [Start("logger", "exited with -9", 2, ms(500))]


def test_backoff_doubles_up_to_the_cap_and_resets_when_healthy():
    sup = Supervisor(CFG, HB, {"asr": True})
    t = 0
    delays = []
    for _ in range(5):
        up(sup, "asr", t)
        sup.exited("asr", 1, t)
        deadline = sup.deadline_ns()
        delays.append(deadline - t)
        [start] = sup.on_tick(deadline)
        t = deadline
    assert delays == [0, ms(500), s(1), s(2), s(4)]
    up(sup, "asr", t)
    for k in range(1, 32):
        sup.heartbeat("asr", t + s(k))
    sup.exited("asr", 1, t + s(31))
    assert sup.deadline_ns() == t + s(31)  # healthy for 30 s: the next restart is a first one again


def test_missed_heartbeats_kill_then_restart():
    sup = Supervisor(CFG, HB, {"agent": True})
    up(sup, "agent", 0)
    sup.heartbeat("agent", s(1))
    assert sup.on_tick(s(4)) == []  # exactly 3 intervals of silence is still tolerated
    assert sup.on_tick(s(4) + 1) == [Kill("agent", "missed 3 heartbeats")]
    sup.exited("agent", -9, s(4) + ms(10))  # the kill lands; no second scheduling
    assert sup.on_tick(s(4) + ms(10)) == [Start("agent", "missed 3 heartbeats", 1, 0)]
    assert sup.on_tick(s(4) + ms(501)) == []


def test_a_loop_stuck_in_one_call_past_the_stall_limit_is_killed_a_long_busy_call_is_not():
    sup = Supervisor(CFG, HB, {"agent": True})  # stall limit: the default, 30 s
    up(sup, "agent", 0)
    for k in range(1, 31):  # heartbeats keep coming from the pulse thread while one call runs
        sup.heartbeat("agent", s(k), busy_ns=s(k))
        assert sup.on_tick(s(k)) == []
    sup.heartbeat("agent", s(31), busy_ns=s(31))
    assert sup.on_tick(s(31)) == [Kill("agent", "stalled: one call has run for 31.0 s (limit 30 s)")]
    sup.exited("agent", -9, s(31) + ms(10))
    assert sup.on_tick(s(31) + ms(10)) == [Start("agent", "stalled: one call has run for 31.0 s (limit 30 s)", 1, 0)]
    up(sup, "agent", s(35))  # the launcher spawns the new process
    assert sup.on_tick(s(35)) == []  # it starts with a clean slate


def test_the_proxy_is_restarted_but_never_waits_on_heartbeats():
    sup = Supervisor(CFG, HB, {"proxy": False, "logger": True})
    sup.started("proxy", 0)
    up(sup, "logger", 0)
    sup.heartbeat("logger", s(10))
    assert sup.on_tick(s(10)) == []
    assert sup.all_ready()
    sup.exited("proxy", -9, s(11))
    assert sup.on_tick(s(11)) == [Start("proxy", "exited with -9", 1, 0)]


def test_nothing_restarts_during_shutdown():
    sup = Supervisor(CFG, HB, {"logger": True})
    up(sup, "logger", 0)
    sup.shutting_down = True
    sup.exited("logger", 0, ms(1))
    assert sup.on_tick(s(100)) == []
    assert sup.nodes["logger"].status == "stopped"


def test_all_ready_waits_for_every_heartbeating_node():
    sup = Supervisor(CFG, HB, {"proxy": False, "logger": True, "asr": True})
    sup.started("proxy", 0)
    up(sup, "logger", 0)
    sup.started("asr", 0)
    assert not sup.all_ready()
    assert sup.waiting_for() == ["asr"]
    sup.ready("asr", ms(5))
    assert sup.all_ready()


def test_a_node_that_cannot_start_is_not_restarted():
    from rtchat.bus.supervisor import START_FAILED

    sup = Supervisor(CFG, HB, {"agent": True})
    sup.started("agent", 0)
    sup.exited("agent", START_FAILED, ms(300))
    assert sup.failed() == ["agent"]
    assert sup.on_tick(s(60)) == [] and sup.deadline_ns() is None


def test_start_failed_code_after_ready_is_an_ordinary_crash():
    from rtchat.bus.supervisor import START_FAILED

    sup = Supervisor(CFG, HB, {"agent": True})
    up(sup, "agent", 0)
    sup.exited("agent", START_FAILED, ms(300))
    assert sup.failed() == []
    assert sup.on_tick(ms(300)) == [Start("agent", f"exited with {START_FAILED}", 1, 0)]


def test_a_node_that_gives_up_while_running_stops_the_session_without_a_restart():
    from rtchat.bus.supervisor import GAVE_UP

    sup = Supervisor(CFG, HB, {"logger": True})
    up(sup, "logger", 0)
    sup.exited("logger", GAVE_UP, s(5))  # its disk is full: a restart would meet the same wall
    assert sup.failed() == ["logger"] and sup.gave_up() == ["logger"]
    assert sup.on_tick(s(60)) == [] and sup.deadline_ns() is None
