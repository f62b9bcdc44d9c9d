"""``--under-load``: the competing process a benchmark runs beside its measurement. Fake loops
check the lifecycle (ready before the block, stopped after it, a dead child reported); the real
agent loop (slow) checks that the agent's model really decodes while the block runs."""

from __future__ import annotations

import os
import time

import pytest

from rtchat.evals.under_load import AgentLoad, UnderLoadError


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
