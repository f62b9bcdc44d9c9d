"""The agent's C++ kernels (nodes/agent/kernels.cpp): the int8 product and the one-call decoding step.

The int8 product must give every output as one order of float32 sums gives it, whatever the rows
beside it (so candidates run together compute what each computes alone); the decoding step must
compute what the fast path computes op by op, also when the cache's buffers have to grow; and
without the kernels everything runs on torch's.
"""

from __future__ import annotations

import pytest
import torch
from conftest import missing_install
from tiny_models import TRANSCRIPTS, tiny_llama

from rtchat.nodes.agent import decoding, kernels, quant
from rtchat.nodes.agent.fastpath import FastLlama


@pytest.fixture
def built():
    """The kernels, built (at the first test that needs them, not at collection). A CPU without
    AVX-512 cannot run them: a skip; a machine that has one and cannot build them lacks g++,
    which scripts/test.sh's machine must have: a failure under CI."""
    missing = sorted(kernels.NEEDS - kernels._cpu_flags())
    if missing:
        pytest.skip(f"the CPU lacks {', '.join(missing)}: the agent runs on torch's kernels here")
    if not kernels.available():
        missing_install("the agent's kernels did not build", "install g++ (Debian: build-essential)")


@pytest.mark.parametrize(("k", "n"), [(64, 48), (576, 13), (100, 7), (15, 5), (1536, 9)])
def test_the_int8_product_is_float32_exact_and_each_row_independent_of_the_others(built, k, n):
    torch.manual_seed(0)
    layer = quant.Int8Linear(torch.nn.Linear(k, n, bias=False))
    x = torch.randn(16, k)
    exact = x.double() @ (layer.qweight.double() * layer.scale.double()[:, None]).T
    got = kernels.int8_mm(x, layer.qweight, layer.scale)
    assert got.dtype == torch.float32 and got.shape == (16, n)
    assert float((got - exact).abs().max() / exact.abs().max()) < 1e-5
    for rows in (1, 3, 5, 8):  # tiles of 4 rows and what is left over
        assert torch.equal(kernels.int8_mm(x[:rows], layer.qweight, layer.scale), got[:rows])
    assert torch.equal(kernels.int8_mm(x[7:8], layer.qweight, layer.scale), got[7:8])


def fast_and_python_runners(bpe_tok) -> tuple[decoding.Runner, decoding.Runner]:
    """(one-call step, op-by-op step) runners on one int8 model's weights."""
    model = tiny_llama(len(bpe_tok), hidden=64)
    quant.quantize_linears(model, "int8")
    one_call, op_by_op = decoding.Runner(model), decoding.Runner(model)
    op_by_op.fast.decoder = None
    assert one_call.fast.decoder is not None
    return one_call, op_by_op


def test_the_one_call_step_computes_the_op_by_op_step_also_when_the_cache_grows(built, bpe_tok, monkeypatch):
    monkeypatch.setattr(decoding.GrowingLayer, "MIN_ROOM", 4)  # 6 tokens: room for 12, then 26
    one_call, op_by_op = fast_and_python_runners(bpe_tok)
    calls = []
    step = one_call.fast.decoder.step
    monkeypatch.setattr(one_call.fast, "decoder", type("Spy", (), {"step": lambda self, *a: calls.append(a) or step(*a)})())
    ids = bpe_tok(TRANSCRIPTS[0])["input_ids"][:6]
    with torch.inference_mode():
        for runner in (one_call, op_by_op):
            runner.sync(ids)
        for _ in range(20):
            token = int(op_by_op.logits.argmax())
            for runner in (one_call, op_by_op):
                runner.feed(token)
            assert int(one_call.logits.argmax()) == int(op_by_op.logits.argmax())
            torch.testing.assert_close(one_call.logits, op_by_op.logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(one_call.hidden, op_by_op.hidden, rtol=1e-4, atol=1e-4)
        for a, b in zip(one_call.cache.layers, op_by_op.cache.layers, strict=True):
            torch.testing.assert_close(a.keys, b.keys, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(a.values, b.values, rtol=1e-4, atol=1e-4)
    assert len(calls) == 19  # the step that found the buffers full ran op by op and grew them


def test_without_the_kernels_int8_runs_on_torchs_kernel(bpe_tok, monkeypatch):
    monkeypatch.setattr(kernels, "available", lambda: False)
    model = tiny_llama(len(bpe_tok), hidden=64)
    quant.quantize_linears(model, "int8")
    assert FastLlama(model).decoder is None
    layer = model.lm_head
    x = torch.randn(2, layer.in_features)
    want = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), layer.qweight, layer.scale).float()
    with torch.no_grad():
        assert torch.equal(layer(x), want)
