"""The audio node's shell: open the WAV or the devices and the session recording, run the core.

    python -m rtchat.nodes.audio --config cpu --run-dir D audio.input=USER.wav audio.output=none

Consumes / produces: see ``rtchat.nodes.audio.core``.

Recovery. A node restarted by the launcher in the run dir of a running session (the same
``run.id`` and launcher process; a node without a run id always starts anew) takes over from
the process that was killed (``resume.py``):

- the timeline: the same origin, so sample i of ``session.wav`` stays the instant t0 + i / sr;
- ``session.wav``: reopened and continued, not truncated. What the killed process had flushed
  stays; its user frames that reached the bus after its last flush are put back from the event
  log; its agent audio after that flush is lost (at most ``FLUSH_NS`` + ``RECORD_MARGIN_NS``);
- the user stream: ``stream_pos`` goes on after the last frame the bus got (none is sent twice,
  none skipped); the outage is sent as silence frames at once, so stream_pos stays on the
  timeline. A WAV input goes on from its first sample not sent: the scripted user waited
  through the outage and loses no word. A microphone's outage is lost. ``audio.eof`` is not sent
  again;
- agent audio: nothing is taken over. Pieces queued in the killed process are gone and get no
  ``audio.played``, like words a barge-in cut before they played; nothing that played
  plays again (the tts does not resend). Generations start from the agent's next event
  (``min_gen`` 0), so a gen > 0 is taken as it comes. (When the tts restarts instead, this
  node closes the chunks it was streaming: ``core.py``.)

The state file ``audio.state.json`` is written when the origin, the stream's start or its end
changes, a few times per process; restart reads the state and the last seconds of the log only.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from rtchat.bus.clock import Clock
from rtchat.bus.core import StartError
from rtchat.bus.node import node_main
from rtchat.configs.schema import Config

log = logging.getLogger(__name__)

DEVICE_MODES = ("auto", "mic", "none", "browser")  # anything else in audio.input is a WAV path


def make_core(cfg: Config, run_dir: Path, progress):
    from rtchat.nodes.audio.core import AudioCore
    from rtchat.nodes.audio.devices import DeviceError, open_input, open_output
    from rtchat.nodes.audio.resume import Owner, StateError, load_resume, save_state
    from rtchat.nodes.audio.wavio import SessionRecorder, WavError, read_wav

    a = cfg.audio
    wav = mic = speaker = recorder = resume = save = None
    try:
        if cfg.run.id:  # a restart inside a running session takes over (module doc)
            owner = Owner(run=cfg.run.id, sr_hz=a.sr_hz, parent_pid=os.getppid())
            resume = load_resume(run_dir, owner, Clock().now_ns())
            save = functools.partial(save_state, run_dir, owner)
        if resume is not None:
            note = f"resuming run {cfg.run.id}: the user stream at {resume.stream_pos / a.sr_hz:.2f} s"
            progress(note)
            log.info("%s (%d frames from the log)", note, len(resume.frames))
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
        if a.record:
            run_dir.mkdir(parents=True, exist_ok=True)
            recorder = SessionRecorder(run_dir / "session.wav", a.sr_hz, resume=resume is not None)
    except (WavError, DeviceError, StateError) as exc:
        for device in (mic, speaker):
            if device is not None:
                device.close()
        raise StartError(str(exc)) from exc
    return AudioCore(a, wav=wav, mic=mic, speaker=speaker, recorder=recorder, resume=resume, save_state=save)


def main(argv: list[str] | None = None) -> int:
    return node_main("audio", make_core, argv)


if __name__ == "__main__":
    sys.exit(main())
