"""Live sessions for the fault and endurance benchmarks (``bench chaos``, ``bench soak``): a whole
voice session started in the background and watched from the bus, the pids of its processes,
their memory, and SIGKILL for one of them.

The session is ``rtchat run --ui none --in USER.wav`` with the run id chosen here, so its run
directory and ``config.yaml`` (the bus endpoints) are known before it starts. The watcher is one
more bus participant that subscribes and never publishes, so the log holds only the session's
own events. Node pids come from ``node.ready``, ``node.heartbeat`` and ``node.restarted``; the
proxy, which sends nothing, is found among the launcher's children. Only a child of this
session's launcher is ever signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rtchat.bus.events import AudioIn, Event, NodeHeartbeat, NodeReady, NodeRestarted
from rtchat.bus.wire import WireError

log = logging.getLogger(__name__)

PROXY = "proxy"
CONNECT_TIMEOUT_S = 60.0  # the launcher writes config.yaml before it starts anything
STOP_GRACE_S = 30.0  # after SIGINT, the launcher stops its nodes in order


def started_at(pid: int) -> int:
    """A process's start time (clock ticks since boot; /proc/PID/stat field 22)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 1 << 62


class LiveSession:
    """One launcher process with a WAV as the user, and a bus watcher on its endpoints."""

    def __init__(self, wav: Path, runs_dir: Path, run_id: str, overrides: list[str], topics: tuple[str, ...] = ("",)):
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = (runs_dir / run_id).resolve()
        self.topics = topics
        cmd = [sys.executable, "-m", "rtchat.launcher", "--ui", "none", "--in", str(wav), f"run.runs_dir={runs_dir}",
               f"run.id={run_id}", "audio.output=none", *overrides]
        self.output = runs_dir / f"{run_id}.launcher.log"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.client = None
        self.pids: dict[str, int] = {}  # node → its latest pid, as the bus says
        self.wav_s = 0.0  # how far the user's recording has played (the latest audio.in's end)

    def connect(self) -> None:
        """Watch the bus once the launcher has written the run's config."""
        from rtchat.bus.client import BusClient
        from rtchat.bus.clock import Clock
        from rtchat.configs import load

        config = self.run_dir / "config.yaml"
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not config.is_file():
            if not self.running() or time.monotonic() > deadline:
                raise RuntimeError(f"the session wrote no {config}; see {self.output}")
            time.sleep(0.1)
        cfg = load(str(config))
        self.client = BusClient(cfg.bus, src="bench-watcher", session=cfg.run.id, clock=Clock(),
                                topics=self.topics, control_topics=())

    def poll(self, timeout_ms: int) -> list[tuple[int, Event]]:
        """(publish time ns, event) of what arrived within timeout_ms; pids and the recording's
        position follow along."""
        out = []
        for frames in self.client.receive(timeout_ms):
            try:
                msg = self.client.decode(frames)
            except WireError:
                continue
            ev = msg.event
            if isinstance(ev, NodeReady | NodeHeartbeat):
                self.pids[ev.node] = ev.pid
            elif isinstance(ev, NodeRestarted) and ev.node != PROXY:
                self.pids[ev.node] = ev.pid
            elif isinstance(ev, AudioIn):
                self.wav_s = (ev.stream_pos + ev.n_samples) / ev.sr_hz
            out.append((msg.env.t_ns, ev))
        return out

    def running(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> dict[int, str]:
        """The launcher's child processes: pid → command line."""
        out = {}
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                pids = (task / "children").read_text().split()
            except OSError:
                continue
            for pid in map(int, pids):
                try:
                    out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    pass
        return out

    def pid_of(self, node: str) -> int | None:
        """The node's live pid, checked against the launcher's children (None: not running now).
        The proxy says nothing on the bus: of its processes (the live one and the launcher's hot
        spare, which starts after it), the live one is the oldest."""
        module = "rtchat.bus.proxy" if node == PROXY else f"rtchat.nodes.{node}"
        mine = [pid for pid, cmd in self.children().items() if f"-m {module} " in f"{cmd} "]
        pid = self.pids.get(node)
        if pid in mine:
            return pid
        return min(mine, key=started_at, default=None) if node == PROXY else None

    def kill(self, node: str) -> int | None:
        """SIGKILL the node's process; its pid, or None when it is not running."""
        pid = self.pid_of(node)
        if pid is None:
            return None
        os.kill(pid, signal.SIGKILL)
        log.info("killed %s (pid %d)", node, pid)
        return pid

    def finish(self, timeout_s: float) -> int:
        """Wait for the session to stop by itself (SIGINT after timeout_s); its exit code."""
        if self.client is not None:
            self.client.close()
            self.client = None
        try:
            return self.proc.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            log.warning("the session did not stop within %.0f s; interrupting it", timeout_s)
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS in /proc/<pid>/status), MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def work_dir(keep: str | None, bench: str) -> Path:
    """Where a bench puts its recording and runs: ``--keep DIR``, or a new temporary folder."""
    import tempfile

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=f"rtchat-bench-{bench}-"))
    work.mkdir(parents=True, exist_ok=True)
    return work


def provenance(run_dir: Path) -> dict:
    """The machine (as ``bench tts`` records it) and the git commit the launcher wrote into the
    run's header (run.json)."""
    import json

    from rtchat.common.provenance import machine
    from rtchat.evals.bench_tts import ENGINE_PACKAGES

    try:
        commit = json.loads((run_dir / "run.json").read_text()).get("git_commit", "")
    except (OSError, ValueError):
        commit = ""
    return {"machine": machine(*ENGINE_PACKAGES), "commit": commit}
