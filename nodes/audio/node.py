"""The audio node's shell: open the WAV or the devices and the session recording, run the core.

    python -m rtchat.nodes.audio --config cpu --run-dir D audio.input=USER.wav audio.output=none

Consumes / produces: see ``rtchat.nodes.audio.core``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rtchat.bus.clock import Clock
from rtchat.bus.node import StartError, node_main
from rtchat.configs.schema import Config

log = logging.getLogger(__name__)

DEVICE_MODES = ("auto", "mic", "none", "browser")  # anything else in audio.input is a WAV path


def make_core(cfg: Config, run_dir: Path, progress):
    from rtchat.nodes.audio.core import AudioCore
    from rtchat.nodes.audio.devices import DeviceError, open_input, open_output
    from rtchat.nodes.audio.wavio import SessionRecorder, WavError, read_wav

    a = cfg.audio
    wav = mic = speaker = None
    try:
        if a.input not in DEVICE_MODES:
            wav = read_wav(a.input, a.sr_hz)
            note = f"input: {a.input} as the user ({len(wav) / a.sr_hz:.1f} s)"
        elif a.input in ("auto", "mic"):
            mic, note = open_input(a.input, a.input_device, a.sr_hz, a.sr_hz * a.frame_ms // 1000, Clock())
            note = f"input: {note}"
        else:
            note = f"input: {a.input}"
        progress(note)
        log.info("%s", note)
        if a.output in ("auto", "speaker"):
            speaker, note = open_output(a.output, a.output_device, a.sr_hz)
            note = f"output: {note}"
        else:
            note = f"output: {a.output} (virtual time)"
        progress(note)
        log.info("%s", note)
    except (WavError, DeviceError) as exc:
        if mic is not None:
            mic.close()
        raise StartError(str(exc)) from exc
    recorder = None
    if a.record:
        run_dir.mkdir(parents=True, exist_ok=True)
        recorder = SessionRecorder(run_dir / "session.wav", a.sr_hz)
    return AudioCore(a, wav=wav, mic=mic, speaker=speaker, recorder=recorder)


def main(argv: list[str] | None = None) -> int:
    return node_main("audio", make_core, argv)


if __name__ == "__main__":
    sys.exit(main())
