"""GPU smoke check: the code paths CI (CPU only) cannot run, on tiny random models.

    PYTHONPATH=<dir holding rtchat> python3 scripts/gpu_check.py [--device cuda:0] [--json OUT]

1. ``rtchat train`` (LoRA and full) in bf16 and fp16 on the device: finite losses, a checkpoint.
2. The agent's decoding loop (``AgentLM``) in float16 / bfloat16 on the device against float32
   on the CPU: the same greedy words, the same turn-switch probe.
3. The TTS engines Bark (float16 on a GPU) and FastSpeech2 (tiny random models) on the device.

Needs only torch, transformers, accelerate, peft, tokenizers, PyYAML (no ZeroMQ, no audio
packages). Prints one JSON object; exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINES = [
    "Participants: S1 (name: ann, age: 30, sex: female), S2 (name: bob, age: 41, sex: male); "
    "Transcript: S1: hi how are you (0.4) S2: good thanks and you "
    "S1: fine (0.3) i was thinking about the weekend S2: mm-hmm S1: we could go hiking (0.6) S2: sounds great",
    "Participants: S1 (name: cat, age: unknown, sex: unknown), S2 (name: dan, age: unknown, sex: unknown); "
    "Transcript: S1: did you see the game (0.2) S2: yeah it was close S1: i know (0.5) right at the end S2: unbelievable",
] * 8


def tiny_folder(path: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_bpe_tok, tiny_llama_dir

    return tiny_llama_dir(path, make_bpe_tok())


def check_train(device: str, work: Path, model: Path) -> dict:
    import subprocess

    def train_main(args: list[str]) -> int:  # a process per run: accelerate's state is per process
        r = subprocess.run([sys.executable, "-m", "rtchat.cli", "train", *args], capture_output=True, text=True)
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
        return r.returncode

    data = work / "data"
    data.mkdir(exist_ok=True)
    (data / "dataset_train.txt").write_text("\n".join(LINES) + "\n")
    out = {}
    for method in ("lora", "full"):
        for dtype in ("bf16", "fp16"):
            target = work / f"out-{method}-{dtype}"
            t0 = time.perf_counter()
            # accelerate puts training on the GPU when there is one (no device flag)
            rc = train_main(["--model", str(model), "--data", str(data), "--out", str(target), "--method", method,
                             "--dtype", dtype, "--max-steps", "6", "--batch-size", "4", "--max-length", "128"])
            state = _last_state(target)
            out[f"{method}_{dtype}"] = {"rc": rc, "s": round(time.perf_counter() - t0, 1), "step": state.get("step"),
                                        "loss": state.get("loss"), "device": state.get("device"),
                                        "mixed_precision": state.get("mixed_precision"),
                                        "saved": sorted(p.name for p in target.iterdir()) if target.exists() else []}
            assert rc == 0, f"train {method} {dtype} exited {rc}"
            assert state.get("device", "").split(":")[0] == device.split(":")[0], f"trained on {state.get('device')}"
            assert state.get("step") == 6 and math.isfinite(state.get("loss", math.nan)), f"train {method} {dtype}: {state}"
    return out


def _last_state(target: Path) -> dict:
    """The run's training.json (config, data hash, last step and loss) written beside the model."""
    f = target / "training.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _param(model) -> str:
    p = next(model.parameters())
    return f"{p.dtype}@{p.device}"


def check_agent(device: str, model: Path) -> dict:
    import dataclasses

    from rtchat.configs.schema import AgentConfig
    from rtchat.nodes.agent.lm import load_lm

    text = LINES[0][: LINES[0].index("S2: good")] + "S2:"
    base = dataclasses.replace(AgentConfig(), model=str(model), decoding="greedy", prevent_special_tokens=False)
    ref = load_lm(dataclasses.replace(base, device="cpu", dtype="float32"))
    want = ref.generate(text, 7).text
    out = {"cpu_float32": want}
    for dtype in ("float16", "bfloat16"):
        lm = load_lm(dataclasses.replace(base, device=device, dtype=dtype))
        got = lm.generate(text, 7).text
        probe = lm.next_is_turn_switch(text)
        out[dtype] = {"text": got, "same_as_cpu": got == want, "switch_probe": probe,
                      "param": _param(lm.runner.model)}
    return out


def check_tts(device: str, work: Path) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_tts import bark_dir, fake_g2p, fastspeech2_dir

    from rtchat.configs.schema import TtsConfig
    from rtchat.nodes.tts import bark, fastspeech2

    out = {}
    with fake_g2p():
        fs2 = fastspeech2.load(TtsConfig(backend="fastspeech2", model=str(fastspeech2_dir(work / "fs2")), device=device))
        audio = list(fs2.synthesize("Hello there. How are you today?"))
    b = bark.load(TtsConfig(backend="bark", model=str(bark_dir(work / "bark", {"en_speaker_1": True})), device=device,
                            voice="en_speaker_1"))
    for name, engine, pieces in (("fastspeech2", fs2, audio), ("bark", b, list(b.synthesize("Hello there.")))):
        model = getattr(engine, "model", None)
        out[name] = {"sample_rate": engine.sample_rate, "pieces": [len(p) for p in pieces],
                     "int16": all(p.dtype == np.int16 for p in pieces),
                     "param": str(next(model.parameters()).dtype) + "@" + str(next(model.parameters()).device)
                     if model is not None else None}
        assert pieces and all(len(p) > 0 and p.dtype == np.int16 for p in pieces), f"{name}: {out[name]}"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--only", nargs="*", choices=("train", "agent", "tts"), help="run only these checks")
    args = parser.parse_args(argv)
    import torch

    report = {"device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    ok = True
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        model = tiny_folder(work / "tiny")
        checks = {"train": lambda: check_train(args.device, work, model), "agent": lambda: check_agent(args.device, model),
                  "tts": lambda: check_tts(args.device, work)}
        for name, fn in checks.items():
            if args.only and name not in args.only:
                continue
            try:
                report[name] = fn()
            except Exception as exc:  # report every check, then fail
                ok = False
                report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
