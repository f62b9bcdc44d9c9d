"""AgentLM: the KV cache kept across calls, lookahead, tokeniser quirks and load errors.

Tiny random Llama models with tokenizers trained here in a fraction of a second: a byte-level
BPE (GPT-2/SmolLM2 style, " S" = "ĠS") and a SentencePiece-style BPE (Llama style: BOS, a lone
"▁" before a leading space, the first piece's space dropped on decode). The embedded SmolLM2
test (marked ``model``) converts the packaged GGUF into the real cache folder once (~15 s) and
reuses it afterwards, as the agent does.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import PREFIX, TRANSCRIPTS, tiny_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rtchat.configs.schema import AgentConfig, Config
from rtchat.nodes.agent import decoding, loading, quant, sampling
from rtchat.nodes.agent import lm as lm_module
from rtchat.nodes.agent.lm import AgentLM, CompletionAndResponse, load_lm
from rtchat.nodes.agent.loading import LoadError, convert_once


def agent(tok, decoding="greedy", model=None, **over) -> AgentLM:
    cfg = dataclasses.replace(AgentConfig(), decoding=decoding, device="cpu", **over)
    return AgentLM(model or tiny_llama(len(tok)), tok, cfg)


# -------------------------------------------------------------------- the cache across calls


def no_cache_greedy(model, ids, n, eos):
    out = []
    with torch.no_grad():
        while len(out) < n and eos not in out:
            out.append(int(model(torch.tensor([ids + out])).logits[0, -1].argmax()))
    return out


@pytest.mark.parametrize("decoding", ["greedy", "nucleus", "typical", "contrastive", "dynamic_contrastive"])
def test_cached_calls_give_what_fresh_full_encoding_gives_and_reuse_the_cache(bpe_tok, decoding):
    model = tiny_llama(len(bpe_tok))
    over = {"min_penalty_alpha": 0.5} if decoding == "contrastive" else {}
    kept = agent(bpe_tok, decoding, model, seed=7, **over)
    for i, text in enumerate(TRANSCRIPTS):
        before = kept.runner.tokens_run
        got = kept.generate(text, 7)
        fresh = agent(bpe_tok, decoding, model, seed=7, **over)
        assert got == fresh.generate(text, 7), (decoding, text)
        n_ids = len(bpe_tok(text)["input_ids"])
        prefill_ran = kept.runner.tokens_run - before - (fresh.runner.tokens_run - n_ids)  # minus the decoding's own
        if i:
            assert 0 < prefill_ran < n_ids // 2, (text, prefill_ran)  # only the tail since the last call ran
        if decoding == "greedy":
            want = no_cache_greedy(model, bpe_tok(text)["input_ids"], 7, bpe_tok.eos_token_id)
            assert got.text == kept.decode_text(want)


@pytest.mark.parametrize("decoding", ["greedy", "dynamic_contrastive"])
def test_a_generation_told_when_it_is_done_stops_there_with_the_full_generations_tokens(bpe_tok, decoding):
    model = tiny_llama(len(bpe_tok))
    text = TRANSCRIPTS[3]
    full = agent(bpe_tok, decoding, model, seed=7).generate(text, 7)
    assert full.n_tokens == 7
    seen = []

    def done(so_far: str) -> bool:
        seen.append(so_far)
        return len(seen) == 3

    stopped = agent(bpe_tok, decoding, model, seed=7).generate(text, 7, done)
    assert stopped.n_tokens == 3 and stopped.text == seen[-1]
    assert full.text.startswith(stopped.text) and len(stopped.text) < len(full.text)
    assert all(b.startswith(a) for a, b in itertools.pairwise(seen))  # the continuation so far, a token at a time


def test_generated_tokens_survive_in_the_cache_only_where_the_next_transcript_agrees(bpe_tok):
    kept = agent(bpe_tok)
    kept.strategy = Scripted(ids_of(bpe_tok, " sure maybe later it is"))
    text = TRANSCRIPTS[5]
    gen = kept.generate(text, 5)
    assert gen.text == " sure maybe later it is"
    before = kept.runner.tokens_run
    kept.strategy = Scripted(ids_of(bpe_tok, " nice"))
    kept.generate(text + " sure maybe later it is", 1)  # the agent's words appended: all but the last were fed already
    assert kept.runner.tokens_run - before == 1
    before = kept.runner.tokens_run
    kept.strategy = Scripted(ids_of(bpe_tok, " nice"))
    kept.generate(text + " well", 1)  # other words: the cache is cropped back to the transcript
    assert kept.runner.tokens_run - before == len(ids_of(bpe_tok, " well"))


def test_a_transcript_longer_than_the_model_is_cut_from_the_left_keeping_bos(sp_tok):
    lm = agent(sp_tok, model=tiny_llama(len(sp_tok), max_positions=64))
    long = PREFIX + " S1:" + " hello there how are you" * 30
    gen = lm.generate(long, 7)
    assert gen.n_tokens == 7
    assert len(lm.runner.ids) <= 64 and lm.runner.ids[0] == sp_tok.bos_token_id
    assert lm.runner.ids[1:9] == sp_tok(long)["input_ids"][-(64 - 7 - 1) :][:8]


def test_timings_are_reported_by_kind_and_reset(bpe_tok):
    lm = agent(bpe_tok, "dynamic_contrastive")
    lm.generate(TRANSCRIPTS[0], 5)
    first = lm.timings_ns()
    assert {"prefill", "decode", "tokenize"} <= set(first) and all(v > 0 for v in first.values())
    assert lm.timings_ns() == {}


# -------------------------------------------------------------------- lookahead (scripted tokens)


class Scripted:
    """A strategy that emits a fixed token list (the runner still feeds them through the model)."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def choose(self, runner, logits, generator):
        return self.tokens.pop(0), False


def ids_of(tok, text):
    return lm_module.encode_fragment(tok, text)


@pytest.fixture
def scripted(bpe_tok):
    lm = agent(bpe_tok)

    def run(words: str, max_new=80, max_response=10):
        lm.strategy = Scripted(ids_of(bpe_tok, words) + [bpe_tok.eos_token_id])
        return lm.lookahead(TRANSCRIPTS[1], max_new, max_response)

    return lm, run


def test_lookahead_splits_completion_and_response_and_stops_at_the_second_tag(scripted, bpe_tok):
    lm, run = scripted
    la = run(" today I am fine S2: sure maybe later S1: no")
    assert (la.completion, la.response) == (" today I am fine", " S2: sure maybe later")
    assert la.completion_tokens == len(ids_of(bpe_tok, " today I am fine"))
    assert len(lm.runner.ids) - len(bpe_tok(TRANSCRIPTS[1])["input_ids"]) == len(
        ids_of(bpe_tok, " today I am fine S2: sure maybe later")
    )


def test_lookahead_embedding_is_the_mean_state_over_completion_tokens_like_embed_continuation(scripted):
    lm, run = scripted
    la = run(" today I am fine S2: sure")
    assert la.embedding.shape == (48,)
    actual = lm.embed_continuation(TRANSCRIPTS[1], " today I am fine")
    np.testing.assert_allclose(la.embedding, actual, atol=1e-5)
    fresh = agent(lm.tok, model=lm.runner.model).embed_continuation(TRANSCRIPTS[1], " today I am fine")
    np.testing.assert_allclose(fresh, actual, atol=1e-5)
    assert lm.embed_continuation(TRANSCRIPTS[1], "") is None


def test_lookahead_response_is_cut_at_max_response_tokens_with_its_tag_counted(scripted, bpe_tok):
    _, run = scripted
    la = run(" fine S2: sure maybe later it is nice", max_response=5)
    assert la.response == bpe_tok.decode(ids_of(bpe_tok, " S2: sure maybe later")[:5])
    assert la.completion == " fine"


def test_a_lookahead_cut_short_gives_no_prediction_and_the_next_one_is_whole(scripted, bpe_tok):
    """Issue 20: ``abort`` is asked after every token; once it says so the lookahead ends there
    with no prediction, and the next one runs in full on the same cache."""
    lm, run = scripted
    asked = []
    lm.strategy = Scripted(ids_of(bpe_tok, " fine S2: sure maybe later"))
    assert lm.lookahead(TRANSCRIPTS[1], 80, 10, abort=lambda: asked.append(1) or len(asked) >= 3) is None
    assert len(asked) == 3  # three tokens, then it stopped
    la = run(" fine S2: sure")
    assert (la.completion, la.response) == (" fine", " S2: sure")


def test_lookahead_with_a_tag_first_is_a_switch_without_embedding(scripted):
    _, run = scripted
    la = run(" S2: sure maybe S1:")
    assert (la.completion, la.completion_tokens, la.embedding) == ("", 0, None)
    assert la.response == " S2: sure maybe"


def test_lookahead_without_a_tag_fills_the_budget_and_averages_the_fed_tokens(scripted, bpe_tok):
    lm, run = scripted
    la = run(" today I am fine thanks what about", max_new=4)
    assert la.completion_tokens == 4 and la.response == ""
    four = ids_of(bpe_tok, " today I am fine thanks what about")[:4]
    np.testing.assert_allclose(la.embedding, lm.embed_continuation(TRANSCRIPTS[1], bpe_tok.decode(four[:3])), atol=1e-5)


def test_completion_and_response_rule():
    rule = CompletionAndResponse(s_id=9, max_response=3)
    assert [rule(t) for t in (1, 2, 9, 4, 5)] == [False, False, False, False, True]
    assert (rule.completion_length, rule.response_length) == (2, 3)
    rule = CompletionAndResponse(s_id=9, max_response=10)
    assert [rule(t) for t in (9, 4, 9)] == [False, False, True]


@pytest.mark.parametrize("fast", [True, False])
def test_next_speaker_prob_is_the_tags_probability_from_one_forward_over_the_new_tokens(bpe_tok, fast):
    """P(" S") after the transcript × P(the tag's second token | transcript + " S"), each from a
    plain uncached forward pass; the probe runs one forward over the new tokens and the " S"
    token, and leaves the cache holding exactly the transcript."""
    lm = agent(bpe_tok, prevent_special_tokens=False)
    lm.runner = decoding.Runner(lm.runner.model, fast=fast)
    tag = ids_of(bpe_tok, " S2:")
    for text in TRANSCRIPTS[:5]:  # grows, is rewritten, its pause grows
        ids = bpe_tok(text)["input_ids"]
        with torch.no_grad():
            p_s = torch.softmax(lm.runner.model(torch.tensor([ids])).logits[0, -1], -1)[tag[0]]
            p_2 = torch.softmax(lm.runner.model(torch.tensor([ids + tag[:1]])).logits[0, -1], -1)[tag[1]]
        lm.forwards()
        got = lm.next_speaker_prob(text, " S2:")
        assert got == pytest.approx(float(p_s * p_2), rel=1e-4)
        assert lm.runner.ids == ids and lm.forwards() == {"prefill": 1}
    with pytest.raises(ValueError, match="turn-switch"):
        lm.next_speaker_prob(TRANSCRIPTS[0], " hello")


@pytest.mark.parametrize("fast", [True, False])
def test_next_speaker_probs_gives_each_pauses_probability_from_one_forward(bpe_tok, fast):
    """Issue 20's schedule: the transcript as it stands and followed by pauses of 0.1 … 0.5 s,
    side by side in one forward pass, give what one probe of each gives; the cache then holds
    the shared beginning only."""
    lm = agent(bpe_tok, prevent_special_tokens=False)
    lm.runner = decoding.Runner(lm.runner.model, fast=fast)
    base = TRANSCRIPTS[1]
    texts = [base] + [f"{base} (0.{t})" for t in range(1, 6)]
    want = [lm.next_speaker_prob(text, " S2:") for text in texts]
    lm.runner.reset()
    lm.forwards()
    got = lm.next_speaker_probs(texts, " S2:")
    assert got == pytest.approx(want, rel=1e-3)
    assert lm.forwards() == {"tree": 1}  # the transcript and every pause after it in one pass
    base_ids = bpe_tok(base)["input_ids"]
    assert lm.runner.ids == base_ids[:-1]  # the trunk the texts share stays cached (their last token differs in kind)
    lm.forwards()
    again = lm.next_speaker_probs([f"{base} (0.{t})" for t in range(2, 6)], " S2:")
    assert again == pytest.approx(want[2:], rel=1e-3)
    assert lm.runner.ids == bpe_tok(f"{base} (0.2)")["input_ids"][:-2]  # now " (0." is shared as well
    assert lm.next_speaker_probs([], " S2:") == []
    with pytest.raises(ValueError, match="turn-switch"):
        lm.next_speaker_probs(texts, " hello")


# -------------------------------------------------------------------- tokeniser quirks


def test_sentencepiece_tokens_are_decoded_with_their_leading_space(sp_tok):
    lm = agent(sp_tok)
    assert lm.s_id == sp_tok.convert_tokens_to_ids("▁S")  # after the lone "▁"
    ids = ids_of(sp_tok, " sure maybe later")
    assert sp_tok.convert_ids_to_tokens(ids)[0] == "▁sure" and sp_tok.decode(ids) == "sure maybe later"
    assert lm.decode_text(ids) == " sure maybe later"
    assert lm.split_tokens(" S2: sure maybe later", 2) == [" S2", ": sure", " maybe later"]
    gen = lm.generate(TRANSCRIPTS[5], 7)
    assert gen.n_tokens == 7


def test_split_tokens_pieces_join_back_to_the_text(bpe_tok):
    lm = agent(bpe_tok)
    text = " S2: sure, I think that we can go to the market"
    pieces = lm.split_tokens(text, 3)
    assert "".join(pieces) == text and all(len(ids_of(bpe_tok, p)) <= 3 for p in pieces)


def test_pad_defaults_to_eos_and_is_removed_from_text(bpe_tok):
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe_tok.backend_tokenizer, eos_token="<|endoftext|>")
    lm = agent(tok)
    assert tok.pad_token == tok.eos_token
    assert lm.decode_text([tok.eos_token_id] + ids_of(tok, " hello") + [tok.eos_token_id]) == " hello"


def test_a_tokenizer_whose_tags_do_not_start_with_one_s_token_is_refused():
    tk = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "S1:": 2, "S2:": 3, "S": 4, "hello": 5}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", unk_token="<unk>")
    with pytest.raises(LoadError, match="turn-switch"):
        agent(tok)


def test_prevent_special_tokens_bans_newlines_eos_and_the_prefix_words(bpe_tok):
    model = tiny_llama(len(bpe_tok))
    newline = bpe_tok.convert_tokens_to_ids("Ċ")
    probe = agent(bpe_tok, model=model)
    probe.generate(TRANSCRIPTS[1], 1)
    with torch.no_grad():  # make a newline the model's clear favourite
        h = probe.runner.hidden[-1]
        model.lm_head.weight[newline] = 50 * h / h.norm() ** 2
    assert agent(bpe_tok, model=model).generate(TRANSCRIPTS[1], 1).text == "\n"
    lm = agent(bpe_tok, model=model, prevent_special_tokens=True)
    assert "\n" not in lm.generate(TRANSCRIPTS[1], 5).text
    assert {newline, bpe_tok.eos_token_id} <= set(lm.bans.always)
    assert ids_of(bpe_tok, " Transcript:") in [list(s) for s in lm.bans.sequences]


# -------------------------------------------------------------------- loading


def test_a_missing_path_is_a_load_error_naming_it(tmp_path):
    for spec in (str(tmp_path / "nope"), str(tmp_path / "nope.gguf"), "./not/here"):
        with pytest.raises(LoadError, match="no such file") as err:
            load_lm(dataclasses.replace(AgentConfig(), model=spec, device="cpu"))
        assert spec in str(err.value)


def test_a_broken_gguf_is_a_load_error_naming_it(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    with pytest.raises(LoadError, match="GGUF") as err:
        load_lm(dataclasses.replace(AgentConfig(), model=str(bad), device="cpu"))
    assert str(bad) in str(err.value)


def test_a_gguf_checkpoint_loads_as_a_working_agent(tmp_path, bpe_tok, monkeypatch):
    """agent.model=FILE.gguf: transformers reads the file (stood in for here: writing a real GGUF
    needs a tokenizer in it); the agent gets the model and the tokenizer, each in its place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_llama(len(bpe_tok))
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    seen = []

    def reads(what):
        def from_pretrained(folder, gguf_file=None, **kwargs):
            seen.append((what, Path(folder) / gguf_file))
            return model if what == "model" else bpe_tok
        return from_pretrained

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", reads("model"))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", reads("tokenizer"))
    cfg = dataclasses.replace(AgentConfig(), model=str(path), device="cpu", decoding="greedy", threads=2)
    assert load_lm(cfg).generate(TRANSCRIPTS[1], 5) == agent(bpe_tok, model=model).generate(TRANSCRIPTS[1], 5)
    assert sorted(seen) == [("model", path), ("tokenizer", path)]


def test_a_folder_without_a_model_and_an_unknown_embedded_name_are_load_errors(tmp_path):
    with pytest.raises(LoadError, match="config.json"):
        load_lm(dataclasses.replace(AgentConfig(), model=str(tmp_path), device="cpu"))
    with pytest.raises(LoadError, match="embedded:smollm2-135m"):
        load_lm(dataclasses.replace(AgentConfig(), model="embedded:gpt-5", device="cpu"))


def test_a_saved_folder_and_a_lora_adapter_load(tmp_path, bpe_tok, monkeypatch):
    from peft import LoraConfig, get_peft_model

    monkeypatch.setenv("RTCHAT_CACHE", str(tmp_path / "cache"))

    model = tiny_llama(len(bpe_tok))
    model.save_pretrained(tmp_path / "base")
    bpe_tok.save_pretrained(tmp_path / "base")
    cfg = dataclasses.replace(AgentConfig(), model=str(tmp_path / "base"), device="cpu", decoding="greedy", threads=2)
    assert load_lm(cfg).generate(TRANSCRIPTS[1], 5) == agent(bpe_tok, model=model).generate(TRANSCRIPTS[1], 5)

    peft = get_peft_model(tiny_llama(len(bpe_tok)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "lora")
    merged = load_lm(dataclasses.replace(cfg, adapter=str(tmp_path / "lora")))
    want = agent(bpe_tok, model=peft.merge_and_unload()).generate(TRANSCRIPTS[1], 5)
    assert merged.generate(TRANSCRIPTS[1], 5) == want
    # merged once into the cache: a restart loads that folder and merges nothing
    (folder,) = (tmp_path / "cache" / "models" / "merged").iterdir()
    monkeypatch.setattr(loading, "_apply_adapter", lambda *a: pytest.fail("merged again"))
    assert load_lm(dataclasses.replace(cfg, adapter=str(tmp_path / "lora"))).generate(TRANSCRIPTS[1], 5) == want
    monkeypatch.undo()
    monkeypatch.setenv("RTCHAT_CACHE", str(tmp_path / "cache"))
    # a retrained adapter gets a folder of its own
    get_peft_model(tiny_llama(len(bpe_tok)), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(
        tmp_path / "lora"
    )
    load_lm(dataclasses.replace(cfg, adapter=str(tmp_path / "lora")))
    assert len(list((tmp_path / "cache" / "models" / "merged").iterdir())) == 2 and folder.is_dir()
    with pytest.raises(LoadError, match="LoRA"):
        load_lm(dataclasses.replace(cfg, adapter=str(tmp_path / "base")))


def test_int8_linears_stay_close_to_float32_and_load_with_dtype_int8(tmp_path, bpe_tok):
    model = tiny_llama(len(bpe_tok))
    ids = torch.tensor([bpe_tok(TRANSCRIPTS[1])["input_ids"]])
    with torch.no_grad():
        want = model(ids).logits
        quant.quantize_linears(model)
        got = model(ids).logits  # prefill: the bf16 path; one token: the int8 kernel
        one = model(ids[:, :1]).logits
    assert isinstance(model.lm_head, quant.Int8Linear)
    assert float((got - want).abs().mean() / want.abs().mean()) < 0.08  # a wrong layer would be ~1
    assert float((got.argmax(-1) == want.argmax(-1)).float().mean()) > 0.8
    assert float((one[0, 0] - want[0, 0]).abs().mean() / want[0, 0].abs().mean()) < 0.08
    tiny_llama(len(bpe_tok)).save_pretrained(tmp_path)
    bpe_tok.save_pretrained(tmp_path)
    cfg = dataclasses.replace(AgentConfig(), model=str(tmp_path), device="cpu", dtype="int8", decoding="dynamic_contrastive")
    assert load_lm(cfg).generate(TRANSCRIPTS[1], 5).n_tokens == 5


def test_int8_prefill_matmuls_see_a_fixed_set_of_row_counts_and_give_the_rows_results(monkeypatch):
    """oneDNN keeps compiled kernels for every shape it meets: a prefill of every length once
    made a long session's agent grow by ~1 MB per new length. Whatever the length, the bf16
    matmul must see only the fixed row counts, and each row must come out as a plain matmul's."""
    torch.manual_seed(0)
    layer = quant.Int8Linear(torch.nn.Linear(64, 48, bias=True))
    x = torch.randn(400, 64)
    weight = layer.qweight.to(torch.bfloat16) * layer.scale[:, None]
    want = torch.nn.functional.linear(x.to(torch.bfloat16), weight).float() + layer.bias
    seen, linear = set(), torch.nn.functional.linear
    monkeypatch.setattr(quant.F, "linear", lambda a, w: seen.add(a.shape[0]) or linear(a, w))
    for n in [*range(17, 300, 7), 399, 400]:
        got = layer(x[:n].reshape(1, n, 64))
        assert got.shape == (1, n, 48)
        torch.testing.assert_close(got[0], want[:n], rtol=0.02, atol=0.02)
    assert seen == {32, 64, 96, 128}


def test_conversion_is_atomic_and_done_once(tmp_path):
    target = tmp_path / "models" / "m"
    calls = []

    def convert(out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    def broken(out):
        (out / "half.bin").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        convert_once(target, broken)
    assert not target.exists() and not list(target.parent.iterdir())  # nothing half-written is left
    assert convert_once(target, convert) == target and convert_once(target, convert) == target
    assert len(calls) == 1 and (target / "config.json").stat().st_mode & 0o044  # readable by others, as usual


@pytest.mark.model
@pytest.mark.slow
def test_embedded_smollm2_loads_from_its_converted_folder_and_generates():
    lm = load_lm(dataclasses.replace(AgentConfig(), device="cpu", decoding="greedy"))
    assert lm.tok.convert_ids_to_tokens(lm.s_id) == "ĠS"
    assert loading.embedded_dir("smollm2-135m").joinpath("config.json").is_file()
    text = PREFIX + " S1: hi, how are you doing today? (0.6) S2: I'm good, thanks. How about you? (0.5) S1: pretty good (0.8)"
    gen = lm.generate(text, 7)
    assert gen.n_tokens >= 1 and gen.text.strip()
    la = lm.lookahead(PREFIX + " S1: hi, how are you doing", 40, 10)
    assert la.completion_tokens + len(la.response) > 0


def test_configure_switches_the_decoding_live(bpe_tok):

    lm = agent(bpe_tok, decoding="dynamic_contrastive")
    assert isinstance(lm.strategy, sampling.DynamicContrastive)
    before = lm.generate(PREFIX + " S1: hello there", 5)
    lm.configure(dataclasses.replace(lm.cfg, decoding="greedy", prevent_special_tokens=True))
    assert isinstance(lm.strategy, sampling.Greedy) and lm.bans is not None
    assert 1 <= lm.generate(PREFIX + " S1: hello there", 5).n_tokens <= 5 and 1 <= before.n_tokens <= 5


def test_forward_passes_are_counted_by_kind_and_reset(bpe_tok):
    lm = agent(bpe_tok, "dynamic_contrastive")
    lm.generate(TRANSCRIPTS[0], 4)
    assert lm.forwards() == {"prefill": 1, "decode": 3}  # one pass per decode step (a candidate batch is one)
    assert lm.forwards() == {}


@pytest.mark.parametrize(("n_gpus", "expected"), [(0, "cpu"), (1, "cuda:0"), (2, "cuda:1"), (3, "cuda:2")])
def test_an_agent_on_auto_takes_the_placement_rules_device(monkeypatch, n_gpus, expected):
    """A node started alone resolves ``auto`` as the launcher would place it: the agent gets a GPU
    of its own on a machine with two or more (configs/devices.py), not always cuda:0."""
    import rtchat.configs.devices as devices

    class Loaded(Exception):
        pass

    def load_model(spec, adapter, device, dtype):
        raise Loaded(device)

    monkeypatch.setattr(devices, "cuda_device_count", lambda: n_gpus)
    monkeypatch.setattr(lm_module, "load_model", load_model)
    with pytest.raises(Loaded) as placed:
        load_lm(AgentConfig(device="auto"))
    assert placed.value.args == (expected,)
    assert placed.value.args[0] == devices.place(Config(), n_gpus)["agent"]  # the launcher would say the same
