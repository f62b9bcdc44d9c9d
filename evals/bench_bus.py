"""``rtchat bench bus``: latency and sustained rate of the ZeroMQ bus, against multiprocessing.Queue.

Method. One invocation on this machine, real processes (multiprocessing, spawn). ZeroMQ: a proxy
process (``rtchat.bus.proxy.serve``: ``bind`` + ``zmq.proxy`` with the configured high-water marks,
ipc:// endpoints in a temporary folder), a publisher process using ``BusClient.publish`` (real
envelope and msgpack encoding) and N subscriber processes that read with ``BusClient.receive`` and
strictly ``decode`` every message. Every client completes ``BusClient.handshake`` before anything
is sent: no sleeps for slow joiners. The reference is the reference system's transport,
``multiprocessing.Queue``: one queue per subscriber, the publisher puts the same ``encode`` frames
on each (fan-out), subscribers ``get`` and ``decode``. Commands (run a step, report) travel on
multiprocessing pipes, outside the measured path.

Each transport runs with 1 and with 6 subscribers: a session-like latency run (after a short
warm-up at the same load, untimed: a fresh process's first messages are slow), then a
sustained-rate ladder for 640-byte audio frames and one for small text events; ZeroMQ with 6
subscribers adds a full-speed burst, with the configured HWM and (full run) with ZeroMQ's default.

Definitions (repeated in the JSON under ``definitions``):

- latency: the subscriber's ``time.time_ns()`` after decoding − the envelope's ``t_ns`` (stamped at
  publish, before encoding), pooled over subscribers; percentiles (linear interpolation, common/stats.py), µs.
- session-like load: two 50 frame/s ``AudioIn`` streams (640-byte pcm = 320 int16 samples at
  16 kHz) + 20 text events/s (``UserText`` and ``AgentSay`` alternating): 120 messages/s.
- lost: messages published × subscribers − messages received (by envelope ``seq``).
- sustained: a paced step of rate × step_s messages passes when every subscriber received every
  message, p99 latency stayed under 20 ms (no growing backlog) and the publisher achieved ≥ 95 %
  of the target rate. Max rate = the last step passed; climbing stops at the first failure.
- headline: ``{zmq,mpq}_p50_us`` / ``_p99_us`` = session-like load with 6 subscribers;
  ``_max_rate_per_s`` = text events with 1 subscriber; ``zmq_lost`` = ZeroMQ losses in the latency
  runs, the passed steps and the configured-HWM burst.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import multiprocessing as mp
import queue
import shutil
import sys
import tempfile
import time
from array import array
from pathlib import Path

import zmq

from rtchat.bus.client import BusClient
from rtchat.bus.clock import Clock, s
from rtchat.bus.events import WIRE_VERSION, AgentSay, AudioIn, Envelope, UserText
from rtchat.bus.proxy import serve
from rtchat.bus.wire import WireError, WireLimits, decode, encode
from rtchat.common.audio import SR_HZ
from rtchat.common.files import write_atomic
from rtchat.common.provenance import machine
from rtchat.common.stats import percentile
from rtchat.configs.schema import BusConfig

FRAME_MS = 20
FRAME_SAMPLES = SR_HZ * FRAME_MS // 1000  # 320
PCM = bytes(FRAME_SAMPLES * 2)  # 640 bytes of int16
AUDIO_STREAMS = 2  # the user's microphone and the agent's voice, 1000 / FRAME_MS = 50 frames/s each
STREAM_OFFSET_S = 0.007  # the second stream's frames fall between the first's
TEXT_PER_S = 20
TEXT = "sure, I can tell you more about that after lunch"
TOPICS = (AudioIn.TYPE, UserText.TYPE, AgentSay.TYPE)
TRANSPORTS = ("zmq", "mpq")
SUB_COUNTS = (1, 6)  # the first is the max-rate headline, the last the latency headline
KEEPUP_P99_US = 20_000  # a step whose p99 exceeds this was building a backlog
MIN_ACHIEVED = 0.95  # fraction of the target rate the publisher must reach
ZMQ_DEFAULT_HWM = 1000
TARGETS = {"p99_us": 500, "max_rate_per_s": 20_000, "lost": 0}
REPLY_TIMEOUT_S = 120.0  # a child silent this long is taken for dead
POLL_MS = 5  # subscribers look at their command pipe at least this often


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    latency_s: float  # length of each session-like latency run
    warmup_s: float  # session-like load first, not timed: a fresh process's first messages are slow
    rates_per_s: tuple[int, ...]  # the sustained-rate ladder
    step_s: float  # length of each step
    burst_n: int  # messages in the full-speed burst
    default_hwm_burst: bool  # burst once more with ZeroMQ's default HWM, which drops
    idle_s: float = 1.0  # a subscriber idle this long has received all it will
    drain_cap_s: float = 60.0  # the longest a subscriber drains after a step


FULL = Plan(8.0, 0.5, (2_000, 5_000, 10_000, 20_000, 40_000, 80_000), 1.0, burst_n=50_000, default_hwm_burst=True)
QUICK = Plan(1.0, 0.2, (2_000, 10_000), 0.25, burst_n=5_000, default_hwm_burst=False, idle_s=0.5)


# ---------------------------------------------------------------- publisher (child process)


def make_event(kind: str, i: int):
    if kind == "audio":
        t_ns = time.time_ns()
        return AudioIn(pcm=PCM, sr_hz=SR_HZ, n_samples=FRAME_SAMPLES, stream_pos=i * FRAME_SAMPLES, t_capture_ns=t_ns)
    return AgentSay(turn=1, gen=1, text=TEXT) if i % 2 else UserText(text=TEXT)


def schedule(cmd: tuple) -> list[tuple[float, str, int]]:
    """(due_s, kind, index) for ("session", duration_s), ("paced", kind, rate_per_s, n) or ("burst", kind, n)."""
    if cmd[0] == "session":
        frames = range(int(cmd[1] * 1000 / FRAME_MS))
        items = [(i * FRAME_MS / 1000 + k * STREAM_OFFSET_S, "audio", i) for i in frames for k in range(AUDIO_STREAMS)]
        items += [(i / TEXT_PER_S + 0.003, "text", i) for i in range(int(cmd[1] * TEXT_PER_S))]
        return sorted(items)
    if cmd[0] == "paced":
        _, kind, rate_per_s, n = cmd
        return [(i / rate_per_s, kind, i) for i in range(n)]
    _, kind, n = cmd
    return [(0.0, kind, i) for i in range(n)]


class QueueFanout:
    """The reference transport: the same encoded frames put on every subscriber's queue."""

    def __init__(self, queues: list):
        self.queues = queues
        self.clock = Clock()
        self.sent = 0

    def publish(self, event) -> None:
        env = Envelope(v=WIRE_VERSION, src="bench-pub", seq=self.sent, t_ns=self.clock.now_ns(), session="bench")
        frames = encode(event, env)
        for q in self.queues:
            q.put(frames)
        self.sent += 1


def publish(pub, items: list[tuple[float, str, int]]) -> dict:
    """Publish on schedule. Both publishers number events 0, 1, 2… one per publish, so the next
    seq is ``pub.sent``; the seq range tells subscribers what to count."""
    first = pub.sent
    t0 = time.perf_counter()
    for due_s, kind, i in items:
        ahead_s = t0 + due_s - time.perf_counter()
        if ahead_s > 0:
            time.sleep(ahead_s)
        pub.publish(make_event(kind, i))
    return {"first": first, "last": pub.sent - 1, "elapsed_s": time.perf_counter() - t0}


def publisher_main(transport: str, cfg: BusConfig, queues: list, conn) -> None:
    try:
        if transport == "zmq":
            pub = BusClient(cfg, src="bench-pub", session="bench", clock=Clock())
            pub.handshake(s(cfg.handshake_timeout_s))
        else:
            pub = QueueFanout(queues)
        conn.send("ready")
        while (cmd := conn.recv())[0] != "stop":
            conn.send(publish(pub, schedule(cmd)))
        for q in queues:
            q.cancel_join_thread()  # subscribers may be gone; unread data must not block exit
    except (KeyboardInterrupt, EOFError):
        pass


# ---------------------------------------------------------------- subscriber (child process)


def queue_receive(q, timeout_ms: int):
    """Like BusClient.receive for a multiprocessing.Queue: what arrived within timeout_ms, in batches."""
    try:
        yield q.get(timeout=timeout_ms / 1000)
        for _ in range(255):
            yield q.get_nowait()
    except queue.Empty:
        return


class Recorder:
    """Decodes every message and keeps (seq, latency, is_audio) until the next report."""

    def __init__(self, receive, decode):
        self.receive, self.decode = receive, decode
        self.clear()

    def clear(self) -> None:
        self.seq, self.lat_ns, self.is_audio = array("q"), array("q"), array("b")
        self.max_seq = -1
        self.bad = 0

    def pump(self, timeout_ms: int) -> bool:
        got = False
        for frames in self.receive(timeout_ms):
            got = True
            try:
                msg = self.decode(frames)
            except WireError:
                self.bad += 1
                continue
            self.lat_ns.append(time.time_ns() - msg.env.t_ns)
            self.seq.append(msg.env.seq)
            self.is_audio.append(isinstance(msg.event, AudioIn))
            self.max_seq = max(self.max_seq, msg.env.seq)
        return got

    def drain(self, last_seq: int, idle_s: float, cap_s: float) -> None:
        """Receive until seq last_seq arrived, or nothing came for idle_s (the rest was lost)."""
        start = idle_since = time.perf_counter()
        while self.max_seq < last_seq:
            now = time.perf_counter()
            if self.pump(POLL_MS * 4):
                idle_since = now
            elif now - idle_since > idle_s or now - start > cap_s:
                return

    def report(self, first: int, last: int) -> dict:
        lat = {True: array("q"), False: array("q")}
        for seq, lat_ns, is_audio in zip(self.seq, self.lat_ns, self.is_audio, strict=True):
            if first <= seq <= last:
                lat[bool(is_audio)].append(lat_ns)
        received = len(lat[True]) + len(lat[False])
        return {"received": received, "bad": self.bad, "audio_ns": lat[True].tobytes(), "text_ns": lat[False].tobytes()}


def subscriber_main(transport: str, cfg: BusConfig, q, name: str, conn) -> None:
    try:
        if transport == "zmq":
            client = BusClient(cfg, src=name, session="bench", clock=Clock(), topics=TOPICS)
            client.handshake(s(cfg.handshake_timeout_s))
            rec = Recorder(client.receive, client.decode)
        else:
            limits = WireLimits(max_message_bytes=cfg.max_message_bytes)
            rec = Recorder(functools.partial(queue_receive, q), functools.partial(decode, limits=limits))
        conn.send("ready")
        while True:
            rec.pump(POLL_MS)
            if conn.poll():
                cmd = conn.recv()
                if cmd[0] == "stop":
                    return
                _, first, last, idle_s, cap_s = cmd
                rec.drain(last, idle_s, cap_s)
                conn.send(rec.report(first, last))
                rec.clear()
    except (KeyboardInterrupt, EOFError):
        pass


def proxy_main(cfg: BusConfig) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        serve(cfg)


# ---------------------------------------------------------------- orchestration (this process)


class Session:
    """A publisher and subscribers (and a proxy, for ZeroMQ) as processes, driven step by step."""

    def __init__(self, transport: str, n_subs: int, cfg: BusConfig, plan: Plan):
        self.mp = mp.get_context("spawn")
        self.transport, self.n_subs, self.cfg, self.plan = transport, n_subs, cfg, plan
        self.procs: list = []
        self.conns: list = []
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        queues = [self.mp.Queue() for _ in range(self.n_subs)] if self.transport == "mpq" else [None] * self.n_subs
        if self.transport == "zmq":
            proxy = self.mp.Process(target=proxy_main, args=(self.cfg,), daemon=True, name="bench-proxy")
            proxy.start()
            self.procs.append(proxy)
        self.subs = [
            self._spawn(subscriber_main, self.transport, self.cfg, q, f"bench-sub{i}") for i, q in enumerate(queues)
        ]
        for conn in self.subs:
            self._expect_ready(conn)
        self.pub = self._spawn(publisher_main, self.transport, self.cfg, [q for q in queues if q is not None])
        self._expect_ready(self.pub)

    def _spawn(self, target, *args):
        parent, child = self.mp.Pipe()
        proc = self.mp.Process(target=target, args=(*args, child), daemon=True, name=f"bench-{target.__name__}")
        proc.start()
        child.close()
        self.procs.append(proc)
        self.conns.append(parent)
        return parent

    def _recv(self, conn):
        with contextlib.suppress(EOFError):
            if conn.poll(REPLY_TIMEOUT_S):
                return conn.recv()
        codes = [p.exitcode for p in self.procs]
        raise RuntimeError(f"{self.transport} benchmark: a child process stopped answering (exit codes {codes})")

    def _expect_ready(self, conn) -> None:
        if self._recv(conn) != "ready":
            raise RuntimeError(f"{self.transport} benchmark: a child process did not report ready")

    def run(self, cmd: tuple) -> dict:
        """One publish command, then every subscriber's count and latencies for its seq range."""
        self.pub.send(cmd)
        sent = self._recv(self.pub)
        for conn in self.subs:
            conn.send(("report", sent["first"], sent["last"], self.plan.idle_s, self.plan.drain_cap_s))
        return summarize(sent, [self._recv(conn) for conn in self.subs])

    def tag(self, record: dict) -> dict:
        hwm = self.cfg.hwm if self.transport == "zmq" else None
        return {"transport": self.transport, "subs": self.n_subs, "hwm": hwm, **record}

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        for proc in self.procs:
            if proc.name != "bench-proxy":
                proc.join(timeout=3)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()


def summarize(sent: dict, reports: list[dict]) -> dict:
    n = sent["last"] - sent["first"] + 1
    lat = {"audio_": array("q"), "text_": array("q")}
    for r in reports:
        lat["audio_"].frombytes(r["audio_ns"])
        lat["text_"].frombytes(r["text_ns"])
    lat[""] = lat["audio_"] + lat["text_"]
    received = sum(r["received"] for r in reports)
    out = {
        "n": n,
        "received": received,
        "lost": n * len(reports) - received,
        "bad": sum(r["bad"] for r in reports),
        "elapsed_s": round(sent["elapsed_s"], 4),
        "achieved_per_s": round(n / sent["elapsed_s"]) if sent["elapsed_s"] > 0 else 0,
    }
    for prefix, values in lat.items():
        ordered = sorted(values)
        out[f"{prefix}p50_us"] = percentile(ordered, 0.50, scale=1e-3)
        out[f"{prefix}p99_us"] = percentile(ordered, 0.99, scale=1e-3)
    return out


def sustained(step: dict, target_per_s: int) -> bool:
    kept_up = step["p99_us"] is not None and step["p99_us"] < KEEPUP_P99_US
    return step["lost"] == 0 and step["bad"] == 0 and kept_up and step["achieved_per_s"] >= MIN_ACHIEVED * target_per_s


def climb(sess: Session, kind: str, records: list[dict]) -> None:
    """Step the rate up until a step fails; every step is recorded."""
    for rate in sess.plan.rates_per_s:
        step = sess.run(("paced", kind, rate, max(1, int(rate * sess.plan.step_s))))
        records.append(sess.tag({"test": "step", "kind": kind, "target_per_s": rate, **step, "ok": sustained(step, rate)}))
        if not records[-1]["ok"]:
            return


def burst(sess: Session, plan: Plan) -> dict:
    return sess.tag({"test": "burst", "kind": "audio", **sess.run(("burst", "audio", plan.burst_n))})


def bus_config(tmp: Path, label: str, hwm: int) -> BusConfig:
    return BusConfig(pub_endpoint=f"ipc://{tmp}/{label}-pub.ipc", sub_endpoint=f"ipc://{tmp}/{label}-sub.ipc", hwm=hwm)


def measure(plan: Plan, tmp: Path) -> list[dict]:
    """Every run of the benchmark, one record each."""
    records: list[dict] = []
    for transport in TRANSPORTS:
        for n_subs in SUB_COUNTS:
            cfg = bus_config(tmp, f"{transport}{n_subs}", BusConfig().hwm)
            with contextlib.closing(Session(transport, n_subs, cfg, plan)) as sess:
                records.append(sess.tag({"test": "warmup", "kind": "mixed", **sess.run(("session", plan.warmup_s))}))
                latency = sess.run(("session", plan.latency_s))
                records.append(sess.tag({"test": "session", "kind": "mixed", **latency}))
                for kind in ("audio", "text"):
                    climb(sess, kind, records)
                if transport == "zmq" and n_subs == SUB_COUNTS[-1]:
                    records.append(burst(sess, plan))
    if plan.default_hwm_burst:
        cfg = bus_config(tmp, "zmq-default-hwm", ZMQ_DEFAULT_HWM)
        with contextlib.closing(Session("zmq", SUB_COUNTS[-1], cfg, plan)) as sess:
            records.append(burst(sess, plan))
    return records


# ---------------------------------------------------------------- results


def find(records: list[dict], **match) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def flatten(records: list[dict], hwm: int) -> dict:
    out: dict = {}
    for t in TRANSPORTS:
        for n in SUB_COUNTS:
            (run,) = find(records, transport=t, test="session", subs=n)
            for key in ("p50_us", "p99_us", "audio_p50_us", "audio_p99_us", "text_p50_us", "text_p99_us", "lost"):
                out[f"{t}_{n}sub_{key}"] = run[key]
            for kind in ("audio", "text"):
                passed = find(records, transport=t, test="step", kind=kind, subs=n, ok=True)
                out[f"{t}_{kind}_{n}sub_max_rate_per_s"] = max((r["target_per_s"] for r in passed), default=0)
        out[f"{t}_p50_us"] = out[f"{t}_{SUB_COUNTS[-1]}sub_p50_us"]
        out[f"{t}_p99_us"] = out[f"{t}_{SUB_COUNTS[-1]}sub_p99_us"]
        out[f"{t}_max_rate_per_s"] = out[f"{t}_text_{SUB_COUNTS[0]}sub_max_rate_per_s"]
        counted = [r for r in find(records, transport=t) if r["test"] in ("warmup", "session") or r.get("ok")]
        counted += find(records, transport=t, test="burst", hwm=hwm)
        out[f"{t}_lost"] = sum(r["lost"] for r in counted)
    (burst,) = find(records, test="burst", hwm=hwm)
    default = find(records, test="burst", hwm=ZMQ_DEFAULT_HWM)
    out.update(
        zmq_burst_n=burst["n"],
        zmq_burst_subs=burst["subs"],
        zmq_burst_lost=burst["lost"],
        zmq_burst_send_rate_per_s=burst["achieved_per_s"],
        zmq_default_hwm_burst_lost=default[0]["lost"] if default else None,
        p50_ratio_mpq_over_zmq=_ratio(out["mpq_p50_us"], out["zmq_p50_us"]),
        p99_ratio_mpq_over_zmq=_ratio(out["mpq_p99_us"], out["zmq_p99_us"]),
        max_rate_ratio_zmq_over_mpq=_ratio(out["zmq_max_rate_per_s"], out["mpq_max_rate_per_s"]),
    )
    return out


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def definitions(plan: Plan) -> dict:
    lo, hi = SUB_COUNTS[0], SUB_COUNTS[-1]
    return {
        "latency": "subscriber time.time_ns() after strict decode - envelope t_ns; pooled over subscribers; "
        "percentiles by linear interpolation (common/stats.py), µs",
        "session_load": f"{AUDIO_STREAMS} AudioIn streams x {1000 // FRAME_MS} frames/s ({len(PCM)} B pcm) "
        f"+ {TEXT_PER_S} text events/s, {plan.latency_s} s",
        "p50_us/p99_us": f"headline zmq_/mpq_: session-like load with {hi} subscribers",
        "max_rate_per_s": f"headline zmq_/mpq_: highest sustained rate of small text events with {lo} subscriber",
        "sustained": f"every subscriber got every message, p99 < {KEEPUP_P99_US} µs, achieved >= {MIN_ACHIEVED:.0%} "
        f"of target; steps {list(plan.rates_per_s)}/s of {plan.step_s} s, stop at the first failure; "
        "0 = the first step failed, the top step = at least that",
        "lost": "messages published x subscribers - messages received (by envelope seq)",
        "zmq_lost": "zmq losses in the latency runs (warm-up included), the passed steps and the configured-hwm burst",
        "burst": f"{plan.burst_n} audio frames to {hi} subscribers as fast as possible; "
        f"zmq_default_hwm_burst_lost: the same with hwm {ZMQ_DEFAULT_HWM} (null with --quick)",
        "mpq": "multiprocessing.Queue, one per subscriber; the publisher puts the same encoded frames on each",
    }


def build_result(records: list[dict], plan: Plan, duration_s: float) -> dict:
    hwm = BusConfig().hwm
    out = flatten(records, hwm)
    out["targets"] = {
        **TARGETS,
        "p99_met": out["zmq_p99_us"] is not None and out["zmq_p99_us"] <= TARGETS["p99_us"],
        "max_rate_met": out["zmq_max_rate_per_s"] >= TARGETS["max_rate_per_s"],
        "lost_met": out["zmq_lost"] == TARGETS["lost"],
    }
    out["definitions"] = definitions(plan)
    out["machine"] = machine("pyzmq") | {"libzmq": zmq.zmq_version()}
    out["params"] = {**dataclasses.asdict(plan), "hwm": hwm, "sub_counts": list(SUB_COUNTS)}
    out["params"]["duration_s"] = round(duration_s, 1)
    out["runs"] = records
    return out


def write_json(path: Path, result: dict) -> None:
    write_atomic(path, json.dumps(result, indent=2) + "\n")


def summary(r: dict) -> str:
    m, tg = r["machine"], r["targets"]
    cell = {t: {n: f"{r[f'{t}_{n}sub_p50_us']}/{r[f'{t}_{n}sub_p99_us']}" for n in SUB_COUNTS} for t in TRANSPORTS}
    rows = [(f"latency p50/p99 µs, session load, {n} sub", cell["zmq"][n], cell["mpq"][n]) for n in SUB_COUNTS]
    for kind in ("audio", "text"):
        for n in SUB_COUNTS:
            rates = [str(r[f"{t}_{kind}_{n}sub_max_rate_per_s"]) for t in TRANSPORTS]
            rows.append((f"max sustained /s, {kind}, {n} sub", *rates))
    lines = [f"rtchat bench bus: {m['cpu_count']} cpu, python {m['python']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}"]
    lines += [f"{'':38}{'zmq':>14}{'mpq':>14}"] + [f"{a:38}{b:>14}{c:>14}" for a, b, c in rows]
    lines.append(
        f"burst of {r['zmq_burst_n']} audio frames to {r['zmq_burst_subs']} subs at {r['zmq_burst_send_rate_per_s']}/s: "
        f"lost {r['zmq_burst_lost']} (hwm {r['params']['hwm']}), {r['zmq_default_hwm_burst_lost']} (hwm {ZMQ_DEFAULT_HWM})"
    )
    verdict = {True: "met", False: "MISSED"}
    lines.append(
        f"targets: p99 {r['zmq_p99_us']} µs <= {tg['p99_us']} {verdict[tg['p99_met']]}; "
        f"rate {r['zmq_max_rate_per_s']}/s >= {tg['max_rate_per_s']} {verdict[tg['max_rate_met']]}; "
        f"lost {r['zmq_lost']} {verdict[tg['lost_met']]}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="write the results here (atomically)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of each session-like latency run (default 8, --quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rate steps, shorter windows, smaller burst (about 15 s)")


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.seconds is not None:
        if not args.seconds > 0:
            print(f"rtchat bench bus: --seconds must be > 0, got {args.seconds}", file=sys.stderr)
            return 2
        plan = dataclasses.replace(plan, latency_s=args.seconds)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rtchat-bench-"))
    try:
        records = measure(plan, tmp)
    except RuntimeError as exc:
        print(f"rtchat bench bus: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = build_result(records, plan, time.perf_counter() - start)
    write_json(args.json, result)
    print(summary(result))
    print(f"wrote {args.json}")
    return 0
