"""The TTS node's shell: load the engine ``tts.backend`` names, build the core, run it on the bus.

    python -m rtchat.nodes.tts --config cpu --run-dir runs/ID

Consumes / produces: see ``rtchat.nodes.tts.core``.

Recovery. A restarted tts keeps nothing and reads nothing back: its queue and its pre-render
cache start empty and ``min_gen`` at 0, so the agent's generation numbers, which go on across
restarts, are taken as they come. An ``agent.release`` whose ``agent.prerender`` it lost (or
never got) is rendered from the release's own text, one word group per chunk index, so the
reply is heard, once. The chunk it was streaming when killed gets no more pieces: the audio
node closes it when this node is ready again and reports what of it played (``audio.played``).
What the agent sent while no tts was up is not spoken late: words said seconds after their
moment would answer a conversation that has moved on; the agent gets no ``audio.played`` for
them, as for words a barge-in cut. Nothing is spoken twice: nothing is re-read from the log.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rtchat.bus.core import StartError
from rtchat.bus.node import node_main
from rtchat.configs.devices import resolve_device
from rtchat.configs.schema import Config

CPU_ENGINES = ("piper", "espeak")  # run on the CPU whatever tts.device says


def engine_device(backend: str, device: str) -> str:
    """Where the engine runs: the CPU for piper and espeak, else the configured device resolved."""
    return "cpu" if backend in CPU_ENGINES else resolve_device(device, "tts")


def make_core(cfg: Config, run_dir: Path, progress):
    from rtchat.nodes.tts.backend import TtsLoadError
    from rtchat.nodes.tts.core import TtsCore
    from rtchat.nodes.tts.engines import load_engine

    progress(f"loading {cfg.tts.backend} {cfg.tts.model}".strip())
    try:
        engine = load_engine(cfg.tts)
    except TtsLoadError as exc:
        raise StartError(str(exc)) from exc
    core = TtsCore(cfg.tts, engine, timer=time.perf_counter_ns)
    core.device = getattr(engine, "device", None) or engine_device(cfg.tts.backend, cfg.tts.device)
    return core


def main(argv: list[str] | None = None) -> int:
    return node_main("tts", make_core, argv)


if __name__ == "__main__":
    sys.exit(main())
