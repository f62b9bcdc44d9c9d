"""Logger node: records every event of the run, as received, in ``<run dir>/events.rtlog``.

Consumes: everything (subscribes to the empty prefix).
Produces: node.ready, node.heartbeat (with ``records``, ``bytes_written``, ``gaps``), node.error.

Frames are validated by the strict decoder before they are written (bad frames are counted and
reported, not recorded) and written verbatim, with the receive time. The file is flushed every
``logger.flush_interval_ms`` and on shutdown, so a crash loses at most the last interval. A
restarted logger appends to the same file after cutting off a damaged tail.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from rtchat import __version__
from rtchat.bus.eventlog import LOG_FILE_NAME, LogWriter, SeqTracker
from rtchat.bus.events import Event, Message
from rtchat.bus.node import Core, node_main
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
        self.writer.append(recv_ns, frames)
        self.bytes_written += sum(len(f) for f in frames)
        self.seqs.see(msg.env.src, msg.env.seq)

    def on_event(self, ev: Event, now_ns: int) -> list[Event]:
        return []

    def on_tick(self, now_ns: int) -> list[Event]:
        self.writer.flush()
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
        self.writer.close()


def make_core(cfg: Config, run_dir: Path, progress) -> LoggerCore:
    meta = {"run": cfg.run.id, "rtchat": __version__, "python": sys.version.split()[0], "opened_ns": time.time_ns()}
    writer = LogWriter(run_dir / LOG_FILE_NAME, meta)
    if writer.truncated is not None:
        log.warning(
            "reopened %s: cut a damaged tail at byte %d (%s)", writer.path, writer.truncated.offset, writer.truncated.reason
        )
    return LoggerCore(cfg.logger, writer, time.time_ns())


def main(argv: list[str] | None = None) -> int:
    return node_main("logger", make_core, argv, raw_sink=lambda core: core.record)


if __name__ == "__main__":
    sys.exit(main())
