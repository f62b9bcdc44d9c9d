"""The ASR node's shell: load the recogniser and the VAD, build the core, run it on the bus.

    python -m rtchat.nodes.asr --config runs/ID/config.yaml --run-dir runs/ID

Consumes / produces: see ``rtchat.nodes.asr.core``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rtchat.bus.node import StartError, node_main
from rtchat.configs.schema import Config


def make_core(cfg: Config, run_dir: Path, progress):
    from rtchat.nodes.asr.backends import LoadError, load_transcriber, resolve_device
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
    core.device = resolve_device(cfg.asr.device)
    return core


def main(argv: list[str] | None = None) -> int:
    return node_main("asr", make_core, argv)


if __name__ == "__main__":
    sys.exit(main())
