"""What CI (CPU only) cannot run, on a CUDA device with tiny random models: training in bf16 and
fp16, the agent's decoding in half precision against float32 on the CPU, and the Bark and
FastSpeech2 engines on the device. Every test skips, saying why, where no CUDA device is visible.

    pytest -m gpu tests/test_gpu.py

(``docs/gpu-check-h200.json`` is the record of these checks on a lent H200, run as the script
they replaced.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import make_bpe_tok, tiny_llama_dir

pytestmark = [pytest.mark.gpu, pytest.mark.model, pytest.mark.slow]

LINES = [
    "Participants: S1 (name: ann, age: 30, sex: female), S2 (name: bob, age: 41, sex: male); "
    "Transcript: S1: hi how are you (0.4) S2: good thanks and you "
    "S1: fine (0.3) i was thinking about the weekend S2: mm-hmm S1: we could go hiking (0.6) S2: sounds great",
    "Participants: S1 (name: cat, age: unknown, sex: unknown), S2 (name: dan, age: unknown, sex: unknown); "
    "Transcript: S1: did you see the game (0.2) S2: yeah it was close S1: i know (0.5) right at the end S2: unbelievable",
] * 8


@pytest.fixture(scope="module")
def device() -> str:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is visible to torch")
    return "cuda:0"


@pytest.fixture(scope="module")
def tiny(device, tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny"), make_bpe_tok())


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_training_runs_on_the_gpu_with_the_asked_for_precision(device, tiny, tmp_path, method, dtype):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_train.txt").write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out"
    # a process per run: accelerate's state is per process; it trains on the GPU when there is one
    run = subprocess.run([sys.executable, "-m", "rtchat.cli", "train", "--model", str(tiny), "--data", str(data),
                          "--out", str(out), "--method", method, "--dtype", dtype, "--max-steps", "6",
                          "--batch-size", "4", "--max-length", "128"], capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((out / "training.json").read_text())
    assert state["device"].split(":")[0] == "cuda" and state["step"] == 6 and math.isfinite(state["loss"]), state


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_agent_decodes_the_cpus_words_in_half_precision(device, tiny, dtype):
    from rtchat.configs.schema import AgentConfig
    from rtchat.nodes.agent.lm import load_lm

    text = LINES[0][: LINES[0].index("S2: good")] + "S2:"
    base = dataclasses.replace(AgentConfig(), model=str(tiny), decoding="greedy", prevent_special_tokens=False)
    want = load_lm(dataclasses.replace(base, device="cpu", dtype="float32")).generate(text, 7).text
    lm = load_lm(dataclasses.replace(base, device=device, dtype=dtype))
    param = next(lm.runner.model.parameters())
    assert (str(param.dtype), param.device.type) == (f"torch.{dtype}", "cuda")
    assert lm.generate(text, 7).text == want
    assert 0 <= lm.next_speaker_prob(text, " S2:") <= 1


def test_bark_and_fastspeech2_speak_on_the_gpu(device, tmp_path):
    from tiny_tts import bark_dir, fake_g2p, fastspeech2_dir

    from rtchat.configs.schema import TtsConfig
    from rtchat.nodes.tts import bark, fastspeech2

    with fake_g2p():
        fs2 = fastspeech2.load(TtsConfig(backend="fastspeech2", model=str(fastspeech2_dir(tmp_path / "fs2")), device=device))
        fs2_pieces = list(fs2.synthesize("Hello there. How are you today?"))
    b = bark.load(TtsConfig(backend="bark", model=str(bark_dir(tmp_path / "bark", {"en_speaker_1": True})), device=device,
                            voice="en_speaker_1"))
    for name, engine, pieces in (("fastspeech2", fs2, fs2_pieces), ("bark", b, list(b.synthesize("Hello there.")))):
        assert pieces and all(len(p) > 0 and p.dtype == np.int16 for p in pieces), name
        model = getattr(engine, "model", None)
        if model is not None:
            assert next(model.parameters()).device.type == "cuda", name
