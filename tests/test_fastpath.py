"""The CPU fast path (fastpath.py, quant.py): the same tokens as transformers' forward.

Issue 19: the fast path must give the tokens the plain path gives — greedy and contrastive, with
the KV cache rewritten and a pause growing, as the agent's cycles change the transcript — for
every CPU dtype. Tiny random Llama models (hidden size 64, so int4's groups of 32 fit), the
plain path being ``Runner(model, fast=False)``: ``LlamaForCausalLM.forward`` on the same weights.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import TRANSCRIPTS, tiny_llama, tiny_opt

from rtchat.configs.schema import AgentConfig
from rtchat.nodes.agent import decoding, quant
from rtchat.nodes.agent.fastpath import FastLlama
from rtchat.nodes.agent.lm import AgentLM

CYCLES = [*TRANSCRIPTS, TRANSCRIPTS[-1] + " (0.2)"]  # words, a rewrite, a growing pause, a switch, the agent's pause


def pair(tok, dtype: str, decoding_name: str) -> tuple[AgentLM, AgentLM]:
    """(plain, fast) agents on one model's weights."""
    model = tiny_llama(len(tok), hidden=64)  # int4's groups of 32 fit
    if dtype != "float32":
        quant.quantize_linears(model, dtype)
    cfg = dataclasses.replace(AgentConfig(), decoding=decoding_name, device="cpu", prevent_special_tokens=False, seed=3)
    plain, fast = AgentLM(model, tok, cfg), AgentLM(model, tok, cfg)
    plain.runner = decoding.Runner(model, fast=False)
    assert plain.runner.fast is None and fast.runner.fast is not None
    return plain, fast


@pytest.mark.parametrize("dtype", ["float32", "int8", "int4"])
@pytest.mark.parametrize("decoding_name", ["greedy", "dynamic_contrastive"])
def test_the_fast_path_generates_the_plain_paths_tokens_cycle_after_cycle(bpe_tok, dtype, decoding_name):
    plain, fast = pair(bpe_tok, dtype, decoding_name)
    for text in CYCLES:
        want = plain.generate(text, 7)
        got = fast.generate(text, 7)
        assert got == want, text
        assert fast.runner.ids == plain.runner.ids
        # one query's attention is two matmuls here and torch's fused kernel there: float32 agrees
        # to ~1e-6; with quantised weights the activations go through bf16 before every matmul,
        # so such a difference can round one activation the other way (bf16: 3 digits)
        for a, b in ((fast.runner.logits, plain.runner.logits), (fast.runner.hidden, plain.runner.hidden)):
            assert float((a - b).norm() / b.norm()) < (1e-5 if dtype == "float32" else 1e-2)
        assert fast.next_speaker_prob(text, " S2:") == pytest.approx(plain.next_speaker_prob(text, " S2:"), rel=1e-4)
        pauses = [f"{text} (0.{t})" for t in range(1, 4)]
        assert fast.next_speaker_probs(pauses, " S2:") == pytest.approx(plain.next_speaker_probs(pauses, " S2:"), rel=1e-2)
        look_p, look_f = plain.lookahead(text, 12, 5), fast.lookahead(text, 12, 5)
        assert (look_f.completion, look_f.response) == (look_p.completion, look_p.response)


def test_the_fast_path_and_the_plain_path_share_one_cache(bpe_tok):
    """Either path continues what the other cached (one cache layout): the plain path after the
    fast path's prefill computes what it computes after its own."""
    plain, fast = pair(bpe_tok, "int8", "greedy")
    first, second = (bpe_tok(text)["input_ids"] for text in CYCLES[:2])
    with torch.inference_mode():
        fast.runner.sync(first)
        plain.runner.sync(first)
        mixed = decoding.Runner(plain.runner.model, fast=False)
        mixed.cache, mixed.ids = fast.runner.cache, list(first)
        mixed.hidden, mixed.logits = fast.runner.hidden, fast.runner.logits
        mixed.sync(second)
        plain.runner.sync(second)
    assert torch.equal(mixed.logits, plain.runner.logits)


@pytest.mark.parametrize("kind", ["float32", "int8", "int4"])
def test_fused_projections_compute_each_output_as_the_separate_layers_do(kind):
    torch.manual_seed(1)
    layers = [torch.nn.Linear(64, n, bias=False) for n in (64, 32, 32)]
    if kind != "float32":
        layers = [quant.QUANTISED[kind](layer) for layer in layers]
    joined = quant.fuse(layers)
    for rows in (1, 3, 40):  # the quantised kernel and the dense path
        x = torch.randn(rows, 64)
        with torch.no_grad():
            want = torch.cat([layer(x) for layer in layers], dim=-1)
            torch.testing.assert_close(joined(x), want, rtol=0, atol=0)
    assert quant.fuse([layers[0], torch.nn.Linear(32, 8)]) is None  # another kind or input size: not fused


def test_int4_weights_stay_close_to_float32_and_narrow_inputs_keep_int8():
    torch.manual_seed(2)
    linear = torch.nn.Linear(128, 48, bias=True)
    layer = quant.Int4Linear(linear)
    x = torch.randn(5, 128)
    with torch.no_grad():
        want = linear(x)
        for rows in (1, 5):  # the int4 kernel; the dequantised bf16 matmul (SMALL = 16 rows, so force it)
            got = layer(x[:rows]) if rows == 1 else layer._dense(x.to(torch.bfloat16)).float() + linear.bias
            assert float((got - want[:rows]).abs().mean() / want[:rows].abs().mean()) < 0.1  # a wrong layout is ~1
    model = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.Linear(64, 8), torch.nn.Linear(64, 16))
    quant.quantize_linears(model, "int4")
    # 48 inputs are not groups of 32; 8 outputs are not the kernel's blocks of 16
    assert [type(m).__name__ for m in model] == ["Int8Linear", "Int8Linear", "Int4Linear"]
    with pytest.raises(ValueError, match="allowed: int8, int4"):
        quant.quantize_linears(model, "int2")


def test_other_architectures_keep_transformers_forward(bpe_tok):
    model = tiny_opt(len(bpe_tok))
    assert "opt" in FastLlama.unsupported(model)
    assert decoding.Runner(model).fast is None
    with pytest.raises(ValueError, match="not llama"):
        FastLlama(model)
