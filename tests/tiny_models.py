"""Tiny random language models and tokenizers trained in a fraction of a second, for tests that
need a real model without downloading one. Import as ``from tiny_models import …`` (pytest puts
``tests/`` on the path); the tokenizers are session fixtures in conftest.py.
"""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

WORDS = "hello there how are you doing today I am fine thanks what about the weather it is nice sure maybe later".split()
PREFIX = (
    "Participants: S1 (name: unknown, age: unknown, sex: unknown), S2 (name: unknown, age: unknown, sex: unknown); Transcript:"
)


TRANSCRIPTS = [  # append, rewrite the tail (a revised partial), a pause that grows, a turn switch
    PREFIX + " S1: hello there how",
    PREFIX + " S1: hello there how are you",
    PREFIX + " S1: hello there what about",
    PREFIX + " S1: hello there what about the weather (0.3)",
    PREFIX + " S1: hello there what about the weather (0.4)",
    PREFIX + " S1: hello there what about the weather (0.4) S2:",
    PREFIX + " S1: hello there what about the weather (0.4) S2: sure maybe later",
]


def corpus() -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(150):
        turns = [
            f"S{t % 2 + 1}: " + " ".join(rng.sample(WORDS, 4)) + f" ({rng.randint(0, 2)}.{rng.randint(0, 9)})" for t in range(6)
        ]
        lines.append(PREFIX + " " + " ".join(turns))
    return lines + ["Summary: S1 and S2 are talking.\nNew line", "participants: summary: transcript:"]


def make_bpe_tok():
    """Byte-level BPE, GPT-2 pre-tokenisation (letters, digits and punctuation apart): " S1:" = ĠS 1 :."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tk.train_from_iterator(
        corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def make_sp_tok():
    """SentencePiece-style BPE as Llama's fast tokenizer: "▁" for spaces with one prepended, BOS,
    and a decoder that strips the first space."""
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(prepend_scheme="never"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(),
        ]
    )
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)])
    alphabet = sorted(set("".join(corpus()).replace(" ", "▁")) | {"▁"})
    tk.train_from_iterator(
        corpus(), trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet)
    )
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_llama(vocab: int, seed: int = 0, max_positions: int = 512, hidden: int = 48) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=0.3,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # peaked distributions, as a trained model's
    return model


def tiny_llama_dir(path, tok, seed: int = 0):
    """A model folder (tokenizer + tiny random Llama) that loads by path, as a user's model would."""
    tok.save_pretrained(path)
    tiny_llama(len(tok), seed).save_pretrained(path)
    return path


def tiny_opt(vocab: int, seed: int = 0, max_positions: int = 512) -> OPTForCausalLM:
    torch.manual_seed(seed)
    cfg = OPTConfig(
        vocab_size=vocab,
        hidden_size=48,
        ffn_dim=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_positions,
        word_embed_proj_dim=48,
        init_std=0.3,
    )
    model = OPTForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)
    return model
