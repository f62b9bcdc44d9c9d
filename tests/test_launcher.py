"""The launcher as a user runs it: real processes, real bus, kill -9, Ctrl-C, config errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rtchat.bus.eventlog import LogReader
from rtchat.bus.events import NodeReady, NodeRestarted, Shutdown
from rtchat.bus.wire import decode

ROOT = Path(__file__).resolve().parents[1]


def launch(tmp_path, *args: str, sigint_ignored: bool = False) -> subprocess.Popen:
    # heartbeats every 1 s: a node is declared dead after 3 missed (3 s), which a healthy node on a
    # busy 2-core machine does not come near (0.2 s, a 0.6 s deadline, restarted healthy nodes)
    return subprocess.Popen(
        [
            sys.executable, str(ROOT / "launcher.py"),
            f"run.runs_dir={tmp_path}", "bus.heartbeat_interval_s=1.0", "launcher.nodes=[logger]", "launcher.ui=none",
            *args,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background job of a non-interactive shell (`rtchat run &` in a script) inherits SIGINT ignored
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )


def events(run_dir: Path) -> list:
    if not (run_dir / "events.rtlog").exists():
        return []
    return [decode(r.frames).event for r in LogReader(run_dir / "events.rtlog")]


def wait_for(predicate, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def run_dir_of(tmp_path: Path) -> Path:
    dirs = [d for d in tmp_path.iterdir() if d.is_dir()]
    return dirs[0] if len(dirs) == 1 else None


def readies(run_dir: Path, node: str) -> list[NodeReady]:
    return [e for e in events(run_dir) if isinstance(e, NodeReady) and e.node == node]


@pytest.mark.slow
def test_kill_9_of_a_node_is_restarted_within_5_s_and_logged(tmp_path):
    proc = launch(tmp_path)
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path), 30, "the run dir")
        [first] = wait_for(lambda: readies(run_dir, "logger"), 30, "logger ready")
        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        second = wait_for(lambda: readies(run_dir, "logger")[1:], 10, "the restarted logger")[0]
        assert time.monotonic() - killed_at < 5.0
        assert second.pid != first.pid
        restarts = wait_for(lambda: [e for e in events(run_dir) if isinstance(e, NodeRestarted)], 5, "node.restarted")
        assert restarts[0].node == "logger" and restarts[0].reason == "exited with -9" and restarts[0].pid == second.pid
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "restarting logger" in err
    evs = events(run_dir)
    assert isinstance(evs[-1], Shutdown) and evs[-1].nodes == ("logger",)
    assert LogReader(run_dir / "events.rtlog").read_all() and (run_dir / "config.yaml").exists()


def spares_of(run_dir: Path) -> list[int]:
    """Pids of the hot spares (``--standby``) loaded for this run."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--standby" in argv and any(arg.startswith(str(run_dir).encode()) for arg in argv):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_killed_node_is_replaced_by_its_loaded_spare_and_a_new_spare_starts(tmp_path):
    proc = launch(tmp_path, "launcher.nodes=[logger,tts]", "tts.backend=espeak", "launcher.standby=[tts]")
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path), 30, "the run dir")
        [first] = wait_for(lambda: readies(run_dir, "tts"), 60, "tts ready")
        [spare] = wait_for(lambda: spares_of(run_dir), 30, "the tts's spare")
        os.kill(first.pid, signal.SIGKILL)
        second = wait_for(lambda: readies(run_dir, "tts")[1:], 10, "the restarted tts")[0]
        assert second.pid == spare  # the spare was called in: no new process had to load
        [new_spare] = wait_for(lambda: [p for p in spares_of(run_dir) if p != spare], 30, "a new spare")
        assert new_spare not in (first.pid, second.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert spares_of(run_dir) == []  # no spare outlives the session


@pytest.mark.slow
def test_sigint_stops_the_session_even_when_started_with_sigint_ignored(tmp_path):
    proc = launch(tmp_path, sigint_ignored=True)
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path), 30, "the run dir")
        wait_for(lambda: readies(run_dir, "logger"), 30, "logger ready")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"SIGINT did not stop the launcher: {err[-2000:]}")
    assert proc.returncode == 0, err
    assert "stopping" in err and isinstance(events(run_dir)[-1], Shutdown)


@pytest.mark.slow
def test_kill_9_of_the_proxy_is_restarted_and_the_bus_comes_back(tmp_path):
    proc = launch(tmp_path)
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path), 30, "the run dir")
        wait_for(lambda: readies(run_dir, "logger"), 30, "logger ready")
        [spare] = wait_for(lambda: spares_of(run_dir), 30, "the proxy's spare")  # the cpu profile has one
        pgrep = subprocess.run(["pgrep", "-f", f"rtchat.bus.proxy --config {run_dir}"], capture_output=True, text=True)
        [live] = [int(p) for p in pgrep.stdout.split() if int(p) != spare]
        os.kill(live, signal.SIGKILL)
        restarted = lambda: [e for e in events(run_dir) if isinstance(e, NodeRestarted) and e.node == "proxy"]  # noqa: E731
        [notice] = wait_for(restarted, 10, "proxy restart logged")
        assert notice.pid == spare  # the spare bound the sockets: nothing had to start
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


@pytest.mark.slow
def test_a_timed_session_writes_config_header_and_log(tmp_path):
    proc = launch(tmp_path, "--duration", "1", "agent.interval_s=0.5")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    run_dir = run_dir_of(tmp_path)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["agent"]["interval_s"] == 0.5
    assert cfg["run"]["id"] == run_dir.name
    assert cfg["bus"]["pub_endpoint"].startswith("ipc://")
    header = yaml.safe_load((run_dir / "run.json").read_text())
    assert header["placement"] == {"tts": "cpu", "asr": "cpu", "agent": "cpu"}
    assert readies(run_dir, "logger")


@pytest.mark.parametrize(
    "override, message",
    [
        ("agent.nope=1", "agent.nope: unknown key"),
        ("agent.interval_s=fast", "agent.interval_s: expected a finite number"),
        ("agent.device=cuda:7", "agent.device: cuda:7 does not exist on this machine"),
        ("launcher.nodes=[logger,wizard]", "unknown node 'wizard'"),
        ("launcher.standby=[logger]", "'logger' cannot have a spare; allowed: proxy, asr, agent, tts"),
        ("bus.pub_endpoint=tcp://0.0.0.0:5555", "set bus.curve.keys_dir"),
    ],
)
def test_config_errors_exit_2_with_a_clear_message(tmp_path, override, message):
    proc = launch(tmp_path, "--duration", "1", override)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert message in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # no run dir for a run that never started


@pytest.mark.slow
def test_bad_frames_do_not_take_the_logger_down(tmp_path, bad_frames):
    import random

    from rtchat.bus.client import BusClient
    from rtchat.bus.clock import Clock
    from rtchat.bus.events import NodeError, NodeHeartbeat, UserText
    from rtchat.configs import load

    proc = launch(tmp_path)
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path), 30, "the run dir")
        wait_for(lambda: readies(run_dir, "logger"), 30, "logger ready")
        cfg = load(str(run_dir / "config.yaml"))
        fuzzer = BusClient(cfg.bus, src="fuzzer", session=cfg.run.id, clock=Clock())
        fuzzer.handshake(int(5e9))
        bad = bad_frames(random.Random(11), cfg.bus.max_message_bytes)
        for i, frames in enumerate(bad):
            fuzzer.pub.send_multipart(frames)
            fuzzer.publish(UserText(text=f"good {i}"))
        fuzzer.close()

        def counted():
            beats = [e for e in events(run_dir) if isinstance(e, NodeHeartbeat) and e.node == "logger"]
            return beats and beats[-1].stats["decode_errors"] == len(bad)

        wait_for(counted, 10, "the logger to count every bad frame")
        evs = events(run_dir)
        assert [e.text for e in evs if isinstance(e, UserText)] == [f"good {i}" for i in range(len(bad))]
        assert any(isinstance(e, NodeError) and e.kind == "decode" and e.node == "logger" for e in evs)
        assert not any(isinstance(e, NodeRestarted) for e in evs)
        assert len(readies(run_dir, "logger")) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


@pytest.mark.slow
def test_a_frozen_node_misses_heartbeats_and_is_replaced(tmp_path):
    proc = launch(tmp_path)
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path), 30, "the run dir")
        [first] = wait_for(lambda: readies(run_dir, "logger"), 30, "logger ready")
        os.kill(first.pid, signal.SIGSTOP)  # alive but silent
        restarted = wait_for(
            lambda: [e for e in events(run_dir) if isinstance(e, NodeRestarted) and e.node == "logger"], 10, "restart logged"
        )
        assert restarted[0].reason == "missed 3 heartbeats"
        assert restarted[0].pid != first.pid
        with pytest.raises(ProcessLookupError):
            os.kill(first.pid, 0)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


@pytest.mark.slow
def test_an_agent_model_that_does_not_exist_stops_the_session_with_its_path(tmp_path):
    proc = launch(tmp_path, "launcher.nodes=[logger,agent]", f"agent.model={tmp_path}/no-such-model")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "agent could not start" in err and f"{tmp_path}/no-such-model" in err
    assert "restarting agent" not in err
