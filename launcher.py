"""Start a whole voice session: the bus proxy, the logger, the configured nodes and the
front-end, each as its own process; supervise them; stop them in order.

    python launcher.py [--config cpu|gpu|FILE] [--ui none] [--in USER.wav] [--out SESSION.wav] [KEY=VALUE ...]
    rtchat run …                       (the same thing)

Every run gets ``runs/<id>/`` with the resolved ``config.yaml``, a ``run.json`` header
(versions, git commit, models, device placement), the event log ``events.rtlog`` and one
``<node>.log`` of each process's own output. Nodes are placed on devices per config
(``device: auto`` follows the reference's 1/2/3+ GPU rule). The session starts when every node
has published ``node.ready``: the launcher then publishes ``ctl.live`` (again whenever a
restarted node becomes ready), and the audio node starts its input. ``--in USER.wav`` plays a
recording as the user; when it ends (``audio.eof``) the session goes on ``audio.tail_s`` more
seconds and stops by itself; ``--out`` copies the stereo recording (user left, agent right,
``runs/<id>/session.wav``) there at the end. A node that exits or misses ``launcher.missed_heartbeats``
heartbeats is restarted with back-off, and ``node.restarted`` is logged. Ctrl-C (or SIGTERM):
``ctl.shutdown``, wait, terminate, kill — the logger last, so it records the end — exit 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import json
import logging
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from rtchat import __version__
from rtchat.bus.client import BusClient, HandshakeTimeout
from rtchat.bus.clock import Clock
from rtchat.bus.events import AudioEof, Live, NodeError, NodeHeartbeat, NodeLoading, NodeReady, NodeRestarted, Shutdown
from rtchat.bus.sockets import check_ports_free, check_security, default_endpoints
from rtchat.bus.supervisor import START_FAILED, Kill, Start, Supervisor
from rtchat.bus.wire import WireError
from rtchat.common.files import replacing, write_atomic
from rtchat.common.provenance import git_commit
from rtchat.configs import DEFAULT_PROFILE, ConfigError, dump, load, profiles
from rtchat.configs.devices import cuda_device_count, needs_gpu_count, place
from rtchat.configs.schema import Config

log = logging.getLogger("rtchat.launcher")

BUILT_UIS = ("none", "terminal", "gradio")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
PROXY = "proxy"


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def prepare_run(cfg: Config) -> tuple[Config, Path, dict[str, str]]:
    """Resolve run id, endpoints and devices; create the run dir; write config.yaml and run.json."""
    check_security(cfg.bus)
    if cfg.launcher.ui not in BUILT_UIS:
        raise ConfigError(f"launcher.ui: {cfg.launcher.ui!r} is not built yet in this version; available: {', '.join(BUILT_UIS)}")
    if cfg.launcher.ui == "terminal" and not (sys.stdin.isatty() and sys.stdout.isatty()):
        log.warning("no terminal on stdin/stdout: running without a front-end (launcher.ui=none)")
        cfg = dataclasses.replace(cfg, launcher=dataclasses.replace(cfg.launcher, ui="none"))
    if cfg.launcher.ui == "gradio":  # the page is the microphone and the speaker unless told otherwise
        audio = cfg.audio
        cfg = dataclasses.replace(cfg, audio=dataclasses.replace(
            audio, input="browser" if audio.input == "auto" else audio.input,
            output="browser" if audio.output == "auto" else audio.output))
        if cfg.ui.host not in LOOPBACK:
            print(f"[rtchat] warning: ui.host={cfg.ui.host}: the web page (and the agent) can be reached from the network"
                  + ("" if cfg.ui.auth else "; set ui.auth=user:password to require a login"), file=sys.stderr, flush=True)
    check_ports_free(cfg.bus)
    n_gpus = cuda_device_count() if needs_gpu_count(cfg) else 0
    placement = place(cfg, n_gpus)
    run_id = cfg.run.id or new_run_id()
    run_dir = (Path(cfg.run.runs_dir) / run_id).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        hold_run_dir(run_dir)
    except OSError as exc:
        raise unwritable_runs_dir(cfg, exc) from None
    pub, sub = default_endpoints(run_dir)
    cfg = dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, id=run_id),
        bus=dataclasses.replace(cfg.bus, pub_endpoint=cfg.bus.pub_endpoint or pub, sub_endpoint=cfg.bus.sub_endpoint or sub),
        agent=dataclasses.replace(cfg.agent, device=placement["agent"]),
        asr=dataclasses.replace(cfg.asr, device=placement["asr"]),
        tts=dataclasses.replace(cfg.tts, device=placement["tts"]),
    )
    header = {
        "run": run_id,
        "created_ns": time.time_ns(),
        "rtchat": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "host": platform.node(),
        "cuda_devices": n_gpus,
        "placement": placement,
        "models": {"agent": cfg.agent.model, "asr": cfg.asr.model, "tts": f"{cfg.tts.backend}:{cfg.tts.voice}"},
        "nodes": list(cfg.launcher.nodes),
    }
    try:
        write_atomic(run_dir / "config.yaml", dump(cfg))
        write_atomic(run_dir / "run.json", json.dumps(header, indent=2) + "\n")
    except OSError as exc:
        raise unwritable_runs_dir(cfg, exc) from None
    return cfg, run_dir, placement


def unwritable_runs_dir(cfg: Config, exc: OSError) -> ConfigError:
    runs_dir = Path(cfg.run.runs_dir).resolve()
    return ConfigError(
        f"run.runs_dir: cannot write {exc.filename or runs_dir} ({exc.strerror}); runs go under {runs_dir}, "
        "which must be a folder you can write to, on a disk with free space: choose another with run.runs_dir=DIR"
    )


LOCK_FILE = "session.lock"
_held: dict[Path, int] = {}  # run dirs this process holds, and the lock file's descriptor


def hold_run_dir(run_dir: Path) -> None:
    """Lock ``run_dir/session.lock`` for the rest of this process, so that a second launcher on
    the same run directory is refused instead of taking over its bus sockets and files. The
    kernel drops the lock when the process ends, kill -9 included, so a lock file left behind is
    no obstacle; the file holds the holder's pid, for the message."""
    if run_dir in _held:
        return
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"run.id: {run_dir} is in use by another session (launcher pid {holder}); "
            "give another run.id (or none, for a new one), or stop that session first"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[run_dir] = fd


class Session:
    """The shell around Supervisor: processes, the launcher's bus client, and the loop."""

    def __init__(self, cfg: Config, run_dir: Path, clock: Clock, say, frontend_factory=None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.clock = clock
        self.say = say  # user-facing progress lines
        self.config_path = run_dir / "config.yaml"
        self.procs: dict[str, subprocess.Popen] = {}
        self.pidfds: dict[int, tuple[str, subprocess.Popen]] = {}
        self.poller = zmq.Poller()
        hb_ns = int(cfg.bus.heartbeat_interval_s * 1e9)
        names = {PROXY: False} | {n: True for n in cfg.launcher.nodes}
        self.supervisor = Supervisor(cfg.launcher, hb_ns, names)
        self.client: BusClient | None = None
        self.notices: dict[str, NodeRestarted] = {}  # restarts not yet announced on the bus
        self.spares: dict[str, subprocess.Popen] = {}  # hot spares, loaded and waiting (launcher.standby)
        self.proxy_mark: int | None = None  # the logger's records in the first heartbeat after a proxy restart
        self.fatal: dict[str, str] = {}  # a node's last fatal error, to say why it stopped
        self.frontend_factory = frontend_factory  # builds the UI once the bus is up
        self.frontend = None
        self.errors = 0
        self.live = False  # ctl.live went out
        self.stop_at_ns: int | None = None  # the input ended: stop then

    # ---------------------------------------------------------------- processes

    def command(self, name: str) -> list[str]:
        module = "rtchat.bus.proxy" if name == PROXY else f"rtchat.nodes.{name}"
        argv = [sys.executable, "-m", module, "--config", str(self.config_path)]
        return argv if name == PROXY else argv + ["--run-dir", str(self.run_dir)]

    def _popen(self, name: str, standby: bool) -> subprocess.Popen:
        out = open(self.run_dir / f"{name}.log", "ab")
        # OpenMP threads that spin while waiting starve the other nodes on a small machine
        env = {"OMP_WAIT_POLICY": "PASSIVE"} | dict(os.environ)
        proc = subprocess.Popen(
            self.command(name) + (["--standby"] if standby else []),
            stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        out.close()
        return proc

    def spawn_spare(self, name: str) -> None:
        """A hot spare of ``name``: it loads now and joins only when called in (``spawn``)."""
        if name in self.cfg.launcher.standby and not self.supervisor.shutting_down:
            self.spares[name] = self._popen(name, standby=True)

    def spawn(self, name: str) -> subprocess.Popen:
        """Start ``name``: its loaded spare when it has a live one (called in by a line on its
        stdin; a new spare starts loading at once), else a new process."""
        spare = self.spares.pop(name, None)
        proc = None
        if spare is not None and spare.poll() is None:
            try:
                spare.stdin.write(b"go\n")
                spare.stdin.close()
                proc = spare
            except OSError:  # it died just now
                spare.kill()
        if proc is None:
            proc = self._popen(name, standby=False)
        else:
            self.spawn_spare(name)
        self.procs[name] = proc
        fd = os.pidfd_open(proc.pid)
        self.pidfds[fd] = (name, proc)
        self.poller.register(fd, zmq.POLLIN)
        self.supervisor.started(name, self.clock.now_ns())
        return proc

    def reap(self, fd: int) -> None:
        name, proc = self.pidfds.pop(fd)
        self.poller.unregister(fd)
        os.close(fd)
        rc = proc.wait()
        if proc is not self.procs.get(name):  # a process already replaced (killed, then restarted at once)
            return
        if rc == START_FAILED and not self.supervisor.shutting_down:
            why = self.fatal.pop(name, None) or last_line(self.run_dir / (name + ".log"))
            self.say(f"{name} could not start: {why}")
        elif not self.supervisor.shutting_down:
            self.say(f"{name} exited with {rc}; see {self.run_dir / (name + '.log')}")
        self.supervisor.exited(name, rc, self.clock.now_ns())

    def act(self, action) -> None:
        if isinstance(action, Kill):
            self.say(f"{action.node}: {action.reason}; killing it")
            self.procs[action.node].kill()
        elif isinstance(action, Start):
            proc = self.spawn(action.node)
            self.say(f"restarting {action.node} (attempt {action.attempt}, {action.reason})")
            if action.node == PROXY:
                self.proxy_mark = None
            self.notices[action.node] = NodeRestarted(
                node=action.node, reason=action.reason, attempt=action.attempt, backoff_ns=action.backoff_ns, pid=proc.pid
            )

    def announce(self, node: str) -> None:
        """Publish a restart once the bus can carry it to the logger: when the restarted node
        is ready (it may be the logger itself); for the proxy see ``proxy_back``."""
        notice = self.notices.pop(node, None)
        if notice is not None:
            self.client.publish(notice)

    def proxy_back(self, beat: NodeHeartbeat) -> None:
        """After a proxy restart, the logger must be reading through the new proxy before the
        notice can reach the log: its record count grew between two heartbeats that came
        through it. Without a logger, any heartbeat through it will do."""
        if PROXY not in self.notices:
            return
        if "logger" not in self.cfg.launcher.nodes:
            self.announce(PROXY)
        elif beat.node == "logger":
            records = int(beat.stats.get("records", 0))
            if self.proxy_mark is not None and records > self.proxy_mark:
                self.proxy_mark = None
                self.announce(PROXY)
            else:
                self.proxy_mark = records

    # ---------------------------------------------------------------- bus

    def connect(self) -> None:
        self.client = BusClient(
            self.cfg.bus, src="launcher", session=self.cfg.run.id, clock=self.clock, topics=("node.", "audio.eof")
        )
        self.poller.register(self.client.control, zmq.POLLIN)
        self.poller.register(self.client.data, zmq.POLLIN)
        self.client.handshake(int(self.cfg.bus.handshake_timeout_s * 1e9))

    def on_frames(self, frames: list[bytes]) -> None:
        try:
            ev = self.client.decode(frames).event
        except WireError as exc:
            log.warning("bad frame on the bus: %s", exc)
            return
        now = self.clock.now_ns()
        if isinstance(ev, NodeHeartbeat):
            self.supervisor.heartbeat(ev.node, now, ev.busy_ns)
            self.proxy_back(ev)
        elif isinstance(ev, NodeReady):
            self.supervisor.ready(ev.node, now)
            self.announce(ev.node)
            st = self.supervisor.nodes.get(ev.node)
            since = f"{(now - st.up_since_ns) / 1e9:.1f} s after start, " if st else ""
            self.say(f"{ev.node} ready ({since}on {ev.device})")
            if self.live:  # a restarted node joins the running session
                self.client.publish(Live(run=self.cfg.run.id))
        elif isinstance(ev, AudioEof):
            tail = self.cfg.audio.tail_s
            self.say(f"the input ended ({ev.reason}); stopping in {tail:g} s")
            self.stop_at_ns = now + int(tail * 1e9)
        elif isinstance(ev, NodeLoading):
            frac = f" {ev.fraction:.0%}" if ev.fraction is not None else ""
            self.say(f"{ev.node}: {ev.stage}{frac}")
        elif isinstance(ev, NodeError) and ev.kind == "fatal":
            self.fatal[ev.node] = ev.detail
        elif isinstance(ev, NodeError):
            self.errors += 1
            log.warning("%s reported a %s error (#%d): %s", ev.node, ev.kind, ev.count, ev.detail)

    def step(self, until_ns: int) -> None:
        """Wait for bus traffic or a process exit until the earlier of until_ns and the
        supervisor's deadline; then let the supervisor act."""
        now = self.clock.now_ns()
        deadline = self.supervisor.deadline_ns()
        wake = until_ns if deadline is None else min(until_ns, deadline)
        timeout_ms = max(0, -(-(wake - now) // 1_000_000))
        for item, _ in self.poller.poll(timeout_ms):
            if isinstance(item, int) and item in self.pidfds:
                self.reap(item)
            elif self.frontend is not None and item in self.frontend.poll_items():
                self.frontend.on_ready(item)
        for frames in self.client.receive(0):
            self.on_frames(frames)
        for action in self.supervisor.on_tick(self.clock.now_ns()):
            self.act(action)

    # ---------------------------------------------------------------- phases

    def start(self) -> bool:
        self.spawn(PROXY)
        self.connect()
        for name in self.cfg.launcher.nodes:
            self.spawn(name)
            self.say(f"starting {name}")
        for name in (PROXY, *self.cfg.launcher.nodes):
            self.spawn_spare(name)
        started = self.clock.now_ns()
        deadline = started + int(self.cfg.launcher.ready_timeout_s * 1e9)
        next_note = started + 5_000_000_000
        while not self.supervisor.all_ready():
            if self.supervisor.failed():
                return False
            now = self.clock.now_ns()
            if now >= deadline:
                self.say(f"not ready after {self.cfg.launcher.ready_timeout_s:g} s: {', '.join(self.supervisor.waiting_for())}")
                return False
            if now >= next_note:
                self.say(f"waiting for {', '.join(self.supervisor.waiting_for())} ({(now - started) / 1e9:.0f} s)")
                next_note = now + 5_000_000_000
            self.step(min(deadline, next_note))
        return True

    def go_live(self) -> None:
        self.live = True
        self.client.publish(Live(run=self.cfg.run.id))

    def open_frontend(self) -> None:
        if self.frontend_factory is None:
            return
        self.frontend = self.frontend_factory(self.cfg, self.clock)
        self.frontend.start()
        for item in self.frontend.poll_items():
            self.poller.register(item, zmq.POLLIN)

    def supervise(self, duration_s: float) -> None:
        end = self.clock.now_ns() + int(duration_s * 1e9) if duration_s > 0 else None
        while True:
            stop = min((t for t in (end, self.stop_at_ns) if t is not None), default=None)
            if stop is not None and self.clock.now_ns() >= stop:
                return
            if self.frontend is not None and self.frontend.done:
                return
            if self.supervisor.failed():
                return
            self.step(stop if stop is not None else self.clock.now_ns() + 1_000_000_000)

    def shutdown(self) -> None:
        self.supervisor.shutting_down = True
        if self.frontend is not None:
            for item in self.frontend.poll_items():
                self.poller.unregister(item)
            self.frontend.close()
            self.frontend = None
        grace = self.cfg.launcher.shutdown_grace_s
        for spare in self.spares.values():  # never on the bus: nothing to say goodbye to
            spare.kill()
            spare.wait()
        self.spares.clear()
        others = [n for n in self.procs if n not in (PROXY, "logger")]
        if self.client is not None and others:  # the logger goes last, to record the others' end
            self.client.publish(Shutdown(reason="launcher stopping", nodes=tuple(others)))
        self.stop(others, grace, wait_first=True)
        if self.client is not None:
            self.client.publish(Shutdown(reason="launcher stopping", nodes=("logger",)))
        self.stop(["logger"], grace, wait_first=True)
        if self.client is not None:
            self.client.close()
            self.client = None
        self.stop([PROXY], grace, wait_first=False)
        for fd in list(self.pidfds):
            self.poller.unregister(fd)
            os.close(fd)
        self.pidfds.clear()

    def stop(self, names: list[str], grace_s: float, wait_first: bool) -> None:
        """Wait (if asked), terminate, wait, kill."""
        procs = [self.procs[n] for n in names if n in self.procs and self.procs[n].poll() is None]
        steps = ([None] if wait_first else []) + [signal.SIGTERM, signal.SIGKILL]
        for sig in steps:
            alive = [p for p in procs if p.poll() is None]
            if not alive:
                return
            for p in alive:
                if sig is not None:
                    p.send_signal(sig)
            for p in alive:
                try:
                    p.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass


def frontend_factory(cfg: Config):
    """The front-end's constructor for this config (None: no front-end)."""
    if cfg.launcher.ui == "terminal":
        from rtchat.ui.terminal import TerminalFrontend

        return TerminalFrontend
    if cfg.launcher.ui == "gradio":
        from rtchat.nodes.tts.engines import voices
        from rtchat.ui.web.app import WebFrontend

        return functools.partial(WebFrontend, voices=voices(cfg.tts))  # the page lists them; ui does not import engines
    return None


def _interrupt(signum, frame):  # SIGTERM stops the session like Ctrl-C
    raise KeyboardInterrupt


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_PROFILE, help=f"profile ({', '.join(profiles())}) or a YAML path")
    parser.add_argument("--ui", choices=("none", "terminal", "gradio"), help="front-end (default: the profile's)")
    parser.add_argument("--host", help="the web page listens here (ui.host; default 127.0.0.1; 0.0.0.0 = the network)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop by itself after S seconds")
    parser.add_argument("--in", dest="input", metavar="USER.wav",
                        help="play this recording as the user (in real time); the session stops audio.tail_s after it ends")
    parser.add_argument("--out", dest="output", metavar="SESSION.wav",
                        help="copy the session's stereo recording here at the end (user left, agent right)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. agent.interval_s=0.5")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.ui:
        overrides.append(f"launcher.ui={args.ui}")
    if getattr(args, "host", None):
        overrides.append(f"ui.host={args.host}")
    if args.duration is not None:
        overrides.append(f"launcher.duration_s={args.duration}")
    if args.input:
        if not Path(args.input).is_file():
            print(f"rtchat run: --in {args.input}: no such file (give a WAV recording of the user)", file=sys.stderr)
            return 2
        overrides.append(f"audio.input={Path(args.input).resolve()}")
    if args.output:
        out_dir = Path(args.output).resolve().parent
        if not out_dir.is_dir():
            print(f"rtchat run: --out {args.output}: the folder {out_dir} does not exist", file=sys.stderr)
            return 2
    try:
        cfg = load(args.config, overrides)
        cfg, run_dir, placement = prepare_run(cfg)
    except ConfigError as exc:
        print(f"rtchat run: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.run.log_level.upper(), format="%(asctime)s launcher %(levelname)s %(message)s")

    def say(line: str) -> None:
        print(f"[rtchat] {line}", file=sys.stderr, flush=True)

    say(f"run {cfg.run.id} in {run_dir}  (devices: {', '.join(f'{k}={v}' for k, v in placement.items())})")
    session = Session(cfg, run_dir, Clock(), say, frontend_factory(cfg))
    signal.signal(signal.SIGTERM, _interrupt)
    # Python leaves SIGINT ignored when it starts ignored (a background job of a script, nohup):
    # Ctrl-C / kill -INT must stop the session all the same
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        if not session.start():
            code = 1
        else:
            say("all nodes ready; the session is live" + ("" if cfg.launcher.duration_s else " (Ctrl-C to stop)"))
            session.go_live()
            try:
                session.open_frontend()
            except RuntimeError as exc:  # e.g. the web page's port is taken
                say(f"the front-end ({cfg.launcher.ui}) could not start: {exc}")
                code = 1
            else:
                session.supervise(cfg.launcher.duration_s)
                if session.supervisor.failed():
                    code = 1
    except HandshakeTimeout as exc:
        say(f"the bus proxy did not come up: {exc} (proxy.log: {last_line(run_dir / 'proxy.log')})")
        code = 1
    except KeyboardInterrupt:
        say("stopping")
    finally:
        session.shutdown()
    for name in session.supervisor.gave_up():  # a node that cannot go on here (its disk is full…) says why
        say(f"the session stopped because {name} cannot go on: {session.fatal.get(name) or last_line(run_dir / (name + '.log'))}")
    say(f"stopped; event log: {run_dir / 'events.rtlog'}  (rtchat analyze {run_dir})")
    if args.output:
        code = max(code, copy_recording(run_dir, Path(args.output), say))
    return code


def copy_recording(run_dir: Path, out: Path, say) -> int:
    """Copy runs/<id>/session.wav to ``out`` atomically (``common.files.replacing``)."""
    import shutil

    src = run_dir / "session.wav"
    if not src.is_file():
        say(f"no session recording to copy to {out} (is the audio node running with audio.record=true?)")
        return 1
    with replacing(out) as tmp:
        shutil.copyfile(src, tmp)
    say(f"session recording: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python launcher.py", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_intermixed_args(argv))  # overrides may stand before and after options


if __name__ == "__main__":
    sys.exit(main())
