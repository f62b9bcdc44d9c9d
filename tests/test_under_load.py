"""``--under-load``: the competing process a benchmark runs beside its measurement. Fake loops
check the lifecycle (ready before the block, stopped after it, a dead child reported); the real
agent loop (slow) checks that the agent's model really decodes while the block runs."""

from __future__ import annotations

import os
import time

import pytest

from rtchat.evals.under_load import AgentLoad, SessionLoad, UnderLoadError, _paced


def counting(profile, overrides, ready, stop, cycles):
    while not stop.is_set():
        with cycles.get_lock():
            cycles.value += 1
        ready.set()
        time.sleep(0.01)


def failing(profile, overrides, ready, stop, cycles):
    raise SystemExit(3)


def one_cycle_then_exit(profile, overrides, ready, stop, cycles):
    cycles.value = 1
    ready.set()
    os._exit(5)


def wait_for(predicate, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_block_starts_after_the_first_cycle_and_the_load_stops_with_it():
    load = AgentLoad(target=counting)
    with load:
        assert load.cycles >= 1  # entering waited for a first cycle
        first = load.cycles
        wait_for(lambda: load.cycles > first)  # and it keeps running while the block runs
    assert not load._proc.is_alive()


def test_a_loop_that_cannot_start_is_reported_with_its_exit_code():
    with pytest.raises(UnderLoadError, match="exited with code 3 before its first cycle"):
        with AgentLoad(target=failing):
            pytest.fail("the block must not run without a load")


def test_a_loop_that_dies_during_the_benchmark_fails_it():
    load = AgentLoad(target=one_cycle_then_exit)
    with pytest.raises(UnderLoadError, match="died during the benchmark .exit code 5"):
        with load:
            wait_for(lambda: not load._proc.is_alive())


@pytest.mark.slow
@pytest.mark.model
def test_the_agents_model_decodes_while_the_block_runs():
    with AgentLoad("cpu", ["agent.threads=1"]) as load:
        first = load.cycles
        wait_for(lambda: load.cycles >= first + 2, timeout_s=120)  # decision cycles, back to back


def test_a_session_load_runs_each_loop_in_its_own_process_and_stops_them_all():
    load = SessionLoad(targets={"asr_calls": counting, "tts_replies": counting})
    with load:
        assert all(n >= 1 for n in load.counts.values())
        pids = {k: x._proc.pid for k, x in load.loads.items()}
        assert len(set(pids.values())) == 2
        first = load.counts
        wait_for(lambda: all(load.counts[k] > first[k] for k in first))
    assert not any(x._proc.is_alive() for x in load.loads.values())


def test_a_session_load_whose_second_loop_cannot_start_stops_the_first():
    load = SessionLoad(targets={"asr_calls": counting, "tts_replies": failing})
    with pytest.raises(UnderLoadError, match="the voice's syntheses exited with code 3"):
        with load:
            pytest.fail("the block must not run without its load")
    assert not load.loads["asr_calls"]._proc.is_alive()


def test_paced_work_runs_once_per_period_and_catches_up_at_most_one_period():
    import multiprocessing
    import threading

    now = [0.0]
    durations = iter([0.01, 0.35, 0.01, 0.01, 0.01, 0.01])  # the second call stalls 3.5 periods
    calls = []

    class Stop:  # a stop event whose wait is the fake clock advancing
        def is_set(self):
            return len(calls) == 6

        def wait(self, seconds):
            now[0] += seconds

    def work():
        calls.append(round(now[0], 3))
        now[0] += next(durations)

    cycles, ready = multiprocessing.Value("l", 0), threading.Event()
    _paced(Stop(), cycles, ready, 0.1, work, clock=lambda: now[0])
    assert calls == [0.0, 0.1, 0.45, 0.46, 0.55, 0.65]  # on the period; after the stall one period caught up
    assert cycles.value == 6 and ready.is_set()


@pytest.mark.slow
@pytest.mark.model
def test_the_recogniser_and_the_voice_really_run_while_the_block_runs():
    with SessionLoad("cpu") as load:
        first = load.counts
        wait_for(lambda: load.counts["asr_calls"] >= first["asr_calls"] + 3, timeout_s=120)  # tiny.en calls
        wait_for(lambda: load.counts["tts_replies"] >= first["tts_replies"] + 1, timeout_s=120)  # Piper replies
