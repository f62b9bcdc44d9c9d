"""Fine-tune a causal LM on transcript lines: full, LoRA (peft) or anchored (spec §14.4).

Reads top to bottom like nanoGPT's train.py — config, data, model, optimizer, loop, checkpoint —
inside ``main(cfg)``; nothing runs at import. One ``accelerate.Accelerator`` does devices, mixed
precision (bf16/fp16 on GPU, fp32 on CPU) and multi-GPU/multi-node under ``torchrun`` or
``accelerate launch``.

Layout: checkpoints go to ``OUT.checkpoints/step-N/`` (trainable weights, optimizer, scheduler,
step, plus ``training.json``: the resolved config, the data sha256 and the git commit); the final
adapter (LoRA) or full model and the tokenizer go to ``OUT`` — written into a temporary folder
beside it and renamed into place, so ``OUT`` is either absent, the old result or the new one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from rtchat.common.provenance import git_commit
from rtchat.configs.models import EMBEDDED_BASE
from rtchat.train.data import collate, data_files, read_lines, sha256_files, tokenize

log = logging.getLogger(__name__)

METHODS = ("full", "lora", "anchored")
DTYPES = ("auto", "fp32", "bf16", "fp16")


class TrainError(RuntimeError):
    """Training cannot start or go on; the message names what was wrong."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str  # hub id, folder, or embedded-base
    data: str  # a file of transcript lines or a folder of *.txt
    out: str  # final adapter/model folder; checkpoints in OUT.checkpoints
    method: str = "lora"  # full | lora | anchored
    lora_r: int = 16  # lora-trial.md recipe
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all"  # "all" = every linear layer but lm_head, or a comma list (q_proj,v_proj)
    anchor_weight: float = 5.0  # λ_anc for the KL to the frozen copy (spec §14.1 default)
    kl_temperature: float = 2.0  # T
    cosine_weight: float = 1.0  # λ_cos for 1 - cos(hidden, anchor hidden)
    decision_weight: float = 1.0  # loss weight of decision-point tokens (speaker tags, the unit after a pause); 1 = plain LM
    lr: float = 2e-4
    warmup_steps: int = 5  # linear warm-up, then constant
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0 = epochs decide
    batch_size: int = 1  # lines per micro-batch per device
    grad_accum: int = 1  # micro-batches per optimizer step
    max_length: int = 512  # tokens per line, cut from the left
    save_steps: int = 0  # checkpoint every N optimizer steps; 0 = only at the end
    resume: bool = False  # continue from the last checkpoint in OUT.checkpoints
    seed: int = 0
    dtype: str = "auto"  # auto = bf16 (or fp16) on GPU, fp32 on CPU

    def __post_init__(self):
        if self.method not in METHODS:
            raise TrainError(f"method {self.method!r}: allowed {', '.join(METHODS)}")
        if self.dtype not in DTYPES:
            raise TrainError(f"dtype {self.dtype!r}: allowed {', '.join(DTYPES)}")
        for name in ("batch_size", "grad_accum", "epochs", "max_length", "lora_r"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.decision_weight >= 1:
            raise TrainError(f"decision_weight must be at least 1 (1 = plain LM loss), got {self.decision_weight}")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(f"{Path(self.out).expanduser()}.checkpoints")


def main(cfg: TrainConfig) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    # ---- config, precision, seed
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=_mixed_precision(cfg.dtype))
    set_seed(cfg.seed)

    # ---- data: checked lines, hashed, tokenised from the left, padded (never packed)
    files = data_files(cfg.data)
    lines = read_lines(files)
    data_sha256 = sha256_files(files)
    model, tok = load_for_training(cfg.model)
    examples = tokenize(tok, lines, cfg.max_length)
    loader = torch.utils.data.DataLoader(
        examples,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=lambda batch: collate(batch, tok.pad_token_id),
    )
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    record = {"config": dataclasses.asdict(cfg), "data_sha256": data_sha256, "data_files": [str(f) for f in files],
              "lines": len(lines), "git_commit": git_commit(), "total_steps": total_steps,
              "device": str(accelerator.device), "processes": accelerator.num_processes,
              "mixed_precision": str(accelerator.mixed_precision)}

    # ---- model: LoRA adapter, or a frozen anchor copy for anchored training
    anchor = None
    if cfg.method == "anchored":
        anchor = copy.deepcopy(model).eval().requires_grad_(False)
    if cfg.method == "lora":
        model = add_lora(model, cfg)
    model.train()

    # ---- optimizer and schedule (AdamW, linear warm-up then constant, grad-norm clip 1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if anchor is not None:
        anchor = anchor.to(accelerator.device)

    step = 0
    if cfg.resume:
        step = load_checkpoint(cfg.checkpoint_dir, accelerator, model, optimizer, scheduler)
    record["resumed_from_step"] = step

    # ---- loop
    bar = tqdm(total=total_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    micro = step * cfg.grad_accum  # micro-batches already done (the data order is the same on resume)
    tokens, loss_sum, loss_n = 0, 0.0, 0
    while step < total_steps:
        epoch_loader = accelerator.skip_first_batches(loader, micro % len(loader)) if micro % len(loader) else loader
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss = compute_loss(model, anchor, batch, cfg)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            micro += 1
            tokens += int(batch["attention_mask"].sum())
            loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            if not math.isfinite(loss_sum / loss_n):
                raise TrainError(f"loss is {loss_sum / loss_n} at step {step}; lower --lr or check the data")
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}")
            bar.update(1)
            record |= {"step": step, "loss": loss_sum / loss_n}
            loss_sum, loss_n = 0.0, 0
            if step == total_steps or (cfg.save_steps and step % cfg.save_steps == 0):
                save_checkpoint(cfg.checkpoint_dir, step, accelerator, model, optimizer, scheduler, record)
            if step >= total_steps:
                break
    bar.close()
    record["tokens_per_s"] = tokens / max(bar.format_dict["elapsed"], 1e-9)

    # ---- final adapter or model + tokenizer, atomically
    out = Path(cfg.out).expanduser()
    if accelerator.is_main_process:
        save_final(out, accelerator.unwrap_model(model), tok, record)
    accelerator.wait_for_everyone()
    return out


# -------------------------------------------------------------------- pieces used by main


def _mixed_precision(dtype: str) -> str:
    if dtype == "fp32" or (dtype == "auto" and not torch.cuda.is_available()):
        return "no"
    if dtype == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return dtype


def load_for_training(spec: str):
    """(model in fp32, tokenizer with pad = eos) for a hub id, a folder or embedded-base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rtchat.nodes.agent.loading import LoadError, embedded_model

    source = spec
    if spec == EMBEDDED_BASE:
        try:
            source = str(embedded_model("smollm2-135m"))
        except LoadError as exc:
            raise TrainError(str(exc)) from None
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TrainError(f"model {spec!r}: {path} has no config.json; expected a Hugging Face model folder")
        source = str(path)
    elif source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise TrainError(f"model {spec!r} does not exist: no such folder, and not a hub id")
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except Exception as exc:
        raise TrainError(f"model {spec!r} cannot be loaded (no such folder, or a hub id that cannot be fetched): {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def add_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if cfg.target_modules == "all" else [m.strip() for m in cfg.target_modules.split(",")]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      task_type="CAUSAL_LM", target_modules=targets)
    return get_peft_model(model, lora)


def compute_loss(model, anchor, batch: dict, cfg: TrainConfig) -> torch.Tensor:
    """Next-token cross-entropy over real tokens, decision-point tokens weighted by
    ``decision_weight`` (a weighted mean); anchored adds λ_anc·KL + λ_cos·(1 − cos) (§14.4)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if anchor is None and cfg.decision_weight == 1:
        return model(**inputs, labels=batch["labels"]).loss
    out = model(**inputs, output_hidden_states=anchor is not None)
    labels = batch["labels"][:, 1:]
    keep = labels != -100  # positions M: a real next token (right padding; the last real token is left out)
    z = out.logits[:, :-1][keep].float()
    weight = 1 + (cfg.decision_weight - 1) * batch["decision"][:, 1:][keep].float()
    loss = (F.cross_entropy(z, labels[keep], reduction="none") * weight).sum() / weight.sum()
    if anchor is None:
        return loss
    with torch.no_grad():
        ref = anchor(**inputs, output_hidden_states=True)
    vocab = ref.logits.shape[-1]  # V0: the anchor's vocabulary, before any added tokens
    a = ref.logits[:, :-1][keep].float()
    t = cfg.kl_temperature
    kl = F.kl_div(F.log_softmax(z[:, :vocab] / t, -1), F.log_softmax(a / t, -1), log_target=True, reduction="none")
    loss = loss + cfg.anchor_weight * t * t * kl.sum(-1).mean()
    if cfg.cosine_weight > 0:
        h, g = out.hidden_states[-1][:, :-1][keep].float(), ref.hidden_states[-1][:, :-1][keep].float()
        loss = loss + cfg.cosine_weight * (1 - F.cosine_similarity(h, g, dim=-1)).mean()
    return loss


def _trainable_state(accelerator, model) -> dict:
    names = {n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    return {n: t.cpu() for n, t in accelerator.get_state_dict(model).items() if n in names}


def save_checkpoint(root: Path, step: int, accelerator, model, optimizer, scheduler, record: dict) -> None:
    """``root/step-N``: trainable weights, optimizer, scheduler, RNG, and training.json; atomic."""
    state = _trainable_state(accelerator, model)
    if not accelerator.is_main_process:
        return
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.", dir=root))
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}, tmp / "state.pt")
    (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _replace_dir(tmp, root / f"step-{step}")


def last_checkpoint(root: Path) -> Path | None:
    steps = sorted((int(p.name.removeprefix("step-")), p) for p in root.glob("step-*") if (p / "state.pt").is_file())
    return steps[-1][1] if steps else None


def load_checkpoint(root: Path, accelerator, model, optimizer, scheduler) -> int:
    path = last_checkpoint(root)
    if path is None:
        raise TrainError(f"--resume: no checkpoint in {root}")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    accelerator.unwrap_model(model).load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    log.info("resumed from %s (step %d)", path, state["step"])
    return state["step"]


def save_final(out: Path, model, tok, record: dict) -> None:
    """The adapter (peft) or full model, the tokenizer and training.json into OUT, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename tmp to target; an existing target is moved aside first and removed after."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [tmp, *tmp.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
