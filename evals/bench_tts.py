"""``rtchat bench tts``: time to first audio and real-time factor of the TTS engines, through the core.

Each engine (Piper, the embedded joe voice; espeak-ng, the baseline, in the same run) is loaded
once and warmed with one sentence. Then, for every text of a fixed list of agent replies (one to
three sentences, no pauses), a fresh ``TtsCore`` gets the ``agent.say`` and is ticked, as the
node's loop does, until the chunk's last piece is out. Times are wall-clock (``perf_counter``)
on this machine; the core's own clock argument is the same clock.

Keys (per engine):
- ``tts_ttfa_ms``: p50 over the texts of the time from handing the ``agent.say`` to the core to
  its first ``tts.audio`` (its first sentence rendered); ``tts_ttfa_p90_ms`` the p90.
- ``tts_rtf``: total render time over total audio duration, all texts together (< 1: faster than
  real time).
- ``audio_s``: the audio made; ``texts``: how many texts.
Across engines: ``ttfa_ratio_piper_vs_espeak`` = piper's ``tts_ttfa_ms`` / espeak's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from rtchat.common.provenance import machine
from rtchat.common.stats import percentile

log = logging.getLogger(__name__)

ENGINES = ("piper", "espeak")  # espeak is the baseline
TARGETS = {"piper_tts_ttfa_ms": 150.0}
TEXTS = (
    " Hello, how are you doing today?",
    " Oh nice, what kind of dog is it?",
    " I think so. It was a really long day at work, but it went well in the end.",
    " Sure. For how many people would you like the table?",
    " That sounds great. I have never been there myself. Was the food any good?",
    " Yeah, I know what you mean.",
    " Well, it depends on the weather. If it rains we could go to the museum instead.",
    " Right. And then what happened?",
    " I am not sure I follow. Could you say that again, please?",
    " My favourite is the one with the blue cover. I read it three times last summer.",
)
QUICK_TEXTS = 4
ENGINE_PACKAGES = ("piper-tts", "onnxruntime", "espeakng-loader")  # versions recorded with the machine


def run_engine(cfg, texts: tuple[str, ...]) -> dict:
    """TTFA and RTF of one engine through the core (module doc)."""
    from rtchat.bus.events import AgentSay, TtsAudio
    from rtchat.nodes.tts.core import TtsCore
    from rtchat.nodes.tts.engines import load_engine

    engine = load_engine(cfg)
    for _ in engine.synthesize("Warming up."):
        pass
    ttfa_ns, busy_ns, samples = [], 0, 0
    for i, text in enumerate(texts):
        core = TtsCore(cfg, engine, timer=time.perf_counter_ns)
        start = time.perf_counter_ns()
        core.on_event(AgentSay(turn=i, gen=0, text=text, chunk=0), start)
        first, done = None, False
        while not done:
            for ev in core.on_tick(time.perf_counter_ns()):
                if isinstance(ev, TtsAudio):
                    first = first or time.perf_counter_ns()
                    samples += ev.n_samples
                    done = ev.last
            if core.deadline_ns() is None and not done:
                raise RuntimeError(f"{cfg.backend} sent no last piece for {text!r}")
        busy_ns += time.perf_counter_ns() - start
        ttfa_ns.append(first - start)
    audio_s = samples / engine.sample_rate
    return {
        "tts_ttfa_ms": percentile(ttfa_ns, 0.5, scale=1e-6),
        "tts_ttfa_p90_ms": percentile(ttfa_ns, 0.9, scale=1e-6),
        "tts_rtf": busy_ns / 1e9 / audio_s,
        "audio_s": audio_s,
        "texts": len(texts),
        "sample_rate": engine.sample_rate,
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--quick", action="store_true", help=f"only the first {QUICK_TEXTS} texts")
    parser.add_argument("--config", default="cpu", help="profile whose tts section is used (default cpu)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. tts.threads=2")


def run(args: argparse.Namespace) -> int:
    from rtchat.common.files import write_atomic
    from rtchat.configs import ConfigError, load
    from rtchat.nodes.tts.backend import TtsLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(args.config, args.overrides).tts
    except ConfigError as exc:
        print(f"rtchat bench tts: {exc}")
        return 2
    texts = TEXTS[:QUICK_TEXTS] if args.quick else TEXTS
    report: dict = {}
    for backend in ENGINES:
        log.info("%s: %d texts…", backend, len(texts))
        model = cfg.model if backend == cfg.backend else ""
        try:
            report[backend] = run_engine(dataclasses.replace(cfg, backend=backend, model=model, voice=""), texts)
        except TtsLoadError as exc:
            print(f"rtchat bench tts: {exc}")
            return 1
    report["ttfa_ratio_piper_vs_espeak"] = report["piper"]["tts_ttfa_ms"] / report["espeak"]["tts_ttfa_ms"]
    report["targets"] = TARGETS
    report["met"] = {"piper_tts_ttfa_ms": report["piper"]["tts_ttfa_ms"] <= TARGETS["piper_tts_ttfa_ms"]}
    report["config"] = {"overrides": args.overrides, "model": cfg.model, "threads": cfg.threads, "rate": cfg.rate,
                        "max_chars": cfg.max_chars, "quick": args.quick}
    report["machine"] = machine(*ENGINE_PACKAGES)
    report["definitions"] = __doc__.split("Keys (per engine):", 1)[1].strip()
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({f"{e}_{k}": round(report[e][k], 4) for e in ENGINES for k in ("tts_ttfa_ms", "tts_rtf")}
                     | {"ttfa_ratio_piper_vs_espeak": round(report["ttfa_ratio_piper_vs_espeak"], 3)}))
    return 0
