"""Logger node: records every event of the run, as received, in ``<run dir>/events.rtlog``.

Consumes: everything (subscribes to the empty prefix).
Produces: node.ready, node.heartbeat (with ``records``, ``bytes_written``, ``gaps``), node.error.

Frames are validated by the strict decoder before they are written (bad frames are counted and
reported, not recorded) and written verbatim, with the receive time. The file is flushed every
``logger.flush_interval_ms`` and on shutdown, so a crash loses at most the last interval. A
restarted logger appends to the same file after cutting off a damaged tail. When the disk is
full the log ends at its last whole record and the logger gives up (``GiveUp``): the launcher
stops the session with the message, instead of restarting a logger that cannot write.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from pathlib import Path

from rtchat import __version__
from rtchat.bus.core import Core, GiveUp, StartError
from rtchat.bus.eventlog import LOG_FILE_NAME, LogWriter, SeqTracker
from rtchat.bus.events import Event, Message
from rtchat.bus.node import node_main
from rtchat.configs.schema import Config, LoggerConfig

log = logging.getLogger(__name__)


class LoggerCore(Core):
    name = "logger"
    topics = ("",)
    control_topics = ()  # ctl.* arrives on the data socket with everything else, in order

    def __init__(self, cfg: LoggerConfig, writer: LogWriter, now_ns: int):
        self.cfg = cfg
        self.writer = writer
        self.flush_every_ns = cfg.flush_interval_ms * 1_000_000
        self.next_flush_ns = now_ns + self.flush_every_ns
        self.seqs = SeqTracker()
        self.bytes_written = 0

    def record(self, frames: list[bytes], msg: Message, recv_ns: int) -> None:
        try:
            self.writer.append(recv_ns, frames)
        except OSError as exc:  # a full disk: restarting the logger would not make room
            raise GiveUp(write_failed(self.writer.path, exc)) from exc
        self.bytes_written += sum(len(f) for f in frames)
        self.seqs.see(msg.env.src, msg.env.seq)

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        return []

    def on_tick(self, now_ns: int) -> list[Event]:
        try:
            self.writer.flush()
        except OSError as exc:
            raise GiveUp(write_failed(self.writer.path, exc)) from exc
        self.next_flush_ns = now_ns + self.flush_every_ns
        return []

    def deadline_ns(self) -> int | None:
        return self.next_flush_ns

    def stats(self) -> dict[str, int | float]:
        return {
            "records": self.writer.records,
            "bytes_written": self.bytes_written,
            "gaps": self.seqs.gaps,
            "lost": self.seqs.lost,
        }

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError as exc:
            log.error("%s", write_failed(self.writer.path, exc))


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.is_mount():
        path = path.parent
    return path


def write_failed(path: Path, exc: OSError) -> str:
    """Why the event log cannot be written, naming the disk, and what to do."""
    mount = mount_point(path.parent)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    why = f"the disk at {mount} is full ({exc.strerror})" if full else f"{exc.strerror} (the disk at {mount})"
    return (
        f"cannot write the event log {path}: {why}; the log keeps every whole record written before. "
        f"Free space on {mount}, or put runs on another disk with run.runs_dir=DIR"
    )


def make_core(cfg: Config, run_dir: Path, progress) -> LoggerCore:
    meta = {"run": cfg.run.id, "rtchat": __version__, "python": sys.version.split()[0], "opened_ns": time.time_ns()}
    try:
        writer = LogWriter(run_dir / LOG_FILE_NAME, meta)
    except OSError as exc:
        raise StartError(write_failed(run_dir / LOG_FILE_NAME, exc)) from exc
    if writer.truncated is not None:
        log.warning(
            "reopened %s: cut a damaged tail at byte %d (%s)", writer.path, writer.truncated.offset, writer.truncated.reason
        )
    return LoggerCore(cfg.logger, writer, time.time_ns())


def main(argv: list[str] | None = None) -> int:
    return node_main("logger", make_core, argv, raw_sink=lambda core: core.record)


if __name__ == "__main__":
    sys.exit(main())
