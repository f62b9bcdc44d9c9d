"""The ASR node's shell: load the recogniser and the VAD, build the core, run it on the bus.

    python -m rtchat.nodes.asr --config runs/ID/config.yaml --run-dir runs/ID

Consumes / produces: see ``rtchat.nodes.asr.core``.

Recovery. A restarted asr process (the launcher restarts one that died) resumes the user's
utterance instead of losing it. Before it goes live, ``resume_from_log`` reads the last
``RESUME_MAX_S`` (30 s) of the run's event log and, if an earlier asr process appears in it,
feeds the new core the audio nobody has transcribed yet, on the logged times: the open
utterance from the end of its last committed word (or from its ``vad.start``), else everything
after the last ``vad.end`` — including the ``audio.in`` frames logged while no asr ran, and, at
the first live frame, those the logger wrote meanwhile. Those words then come out as
``asr.final``/``asr.partial``, with the ``vad.end`` of an utterance that ended while the asr was
down; words of earlier ``asr.final``s are not repeated, and an open utterance gets no second
``vad.start``. Not recovered: audio older than 30 s, and audio the logger never wrote (a gap it
cannot fill within ``resume.GAP_WAIT_NS`` is silence). ``rtchat.nodes.asr.resume`` has the rules.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from rtchat.bus.core import Core, StartError
from rtchat.bus.node import node_main
from rtchat.configs.schema import Config

log = logging.getLogger(__name__)


def read_log(log_path: Path, since_ns: int) -> list:
    """The decodable events logged at or after ``since_ns``, as (receive time, event), oldest first."""
    from rtchat.bus.eventlog import read_messages_since

    return [(t, msg.event) for t, msg in read_messages_since(log_path, since_ns)]


def resume_from_log(core, log_path: Path, now_ns: int) -> Core | None:
    """The core brought up to date with the run's log (module doc, "Recovery"); None when there
    is nothing to resume (no log, or no earlier asr in its last RESUME_MAX_S)."""
    from rtchat.bus.eventlog import LogError
    from rtchat.nodes.asr.resume import RESUME_MAX_S, resume

    if not log_path.is_file():
        return None
    try:
        logged = read_log(log_path, now_ns - RESUME_MAX_S * 1_000_000_000)
    except (LogError, OSError) as exc:
        log.warning("cannot read %s to resume the utterance in progress: %s", log_path, exc)
        return None

    def read(since_ns: int) -> list:
        try:
            return read_log(log_path, since_ns)
        except (LogError, OSError) as exc:
            log.warning("cannot read %s for the audio before the first live frame: %s", log_path, exc)
            return []

    return resume(core, logged, read)


def make_core(cfg: Config, run_dir: Path, progress):
    from rtchat.configs.devices import resolve_device
    from rtchat.nodes.asr.backends import LoadError, load_transcriber
    from rtchat.nodes.asr.core import AsrCore
    from rtchat.nodes.asr.vad import load_silero

    progress(f"loading {cfg.asr.backend} {cfg.asr.model}")
    try:
        transcribe = load_transcriber(cfg.asr)
    except LoadError as exc:
        raise StartError(str(exc)) from exc
    progress("loading silero vad")
    try:
        vad_model = load_silero()
    except Exception as exc:  # missing package or onnxruntime: the node cannot work without it
        raise StartError(f"cannot load the Silero VAD (pip install silero-vad onnxruntime): {exc}") from exc
    core = AsrCore(cfg.asr, transcribe, vad_model)
    core.device = resolve_device(cfg.asr.device, "asr")
    return core


def resume(core, run_dir: Path):
    """node_main's resume hook: after loading (a hot spare: when it is called in), just before
    the node joins, so the log is read as it is then."""
    from rtchat.bus.eventlog import LOG_FILE_NAME

    resumed = resume_from_log(core, run_dir / LOG_FILE_NAME, time.time_ns())
    if resumed is None:
        return core, None
    return resumed, f"resumed the utterance in progress ({core.counts['resumed_frames']} logged frames)"


def main(argv: list[str] | None = None) -> int:
    return node_main("asr", make_core, argv, resume=resume)


if __name__ == "__main__":
    sys.exit(main())
