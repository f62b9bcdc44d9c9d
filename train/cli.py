"""``rtchat train``: fine-tune a causal LM on transcript lines (full, LoRA, anchored).

    rtchat train --model embedded-base --data data/train.txt --out runs/lora --max-steps 100 --grad-accum 4
    accelerate launch -m rtchat.cli train …        # several GPUs or nodes (torchrun works too)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from rtchat.train.train import DTYPES, METHODS, TrainConfig

# flags whose names differ from the TrainConfig fields only by - for _
_OPTIONS = (
    ("--method", str, "full | lora | anchored (KL and hidden-state cosine to a frozen copy, spec §14.4)"),
    ("--lora-r", int, "LoRA rank"),
    ("--lora-alpha", int, "LoRA alpha"),
    ("--lora-dropout", float, "LoRA dropout"),
    ("--target-modules", str, "'all' (every linear layer but lm_head) or a comma list such as q_proj,v_proj"),
    ("--anchor-weight", float, "anchored: weight of the KL term"),
    ("--kl-temperature", float, "anchored: softmax temperature of the KL term"),
    ("--cosine-weight", float, "anchored: weight of the last-hidden-state cosine term"),
    ("--decision-weight", float, "loss weight of decision-point tokens: speaker tags and the unit after a pause "
     "(1 = plain LM loss)"),
    ("--lr", float, "peak learning rate (AdamW)"),
    ("--warmup-steps", int, "linear warm-up steps, then constant"),
    ("--epochs", int, "passes over the data (ignored with --max-steps)"),
    ("--max-steps", int, "optimizer steps; 0 = --epochs decide"),
    ("--batch-size", int, "lines per micro-batch per device"),
    ("--grad-accum", int, "micro-batches per optimizer step"),
    ("--max-length", int, "tokens per line; longer lines lose their beginning"),
    ("--save-steps", int, "checkpoint every N steps into OUT.checkpoints; 0 = only at the end"),
    ("--seed", int, "seed for the data order and initialisation"),
    ("--dtype", str, f"{' | '.join(DTYPES)}; auto = bf16/fp16 on GPU, fp32 on CPU"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    parser.add_argument("--model", required=True, help="hub id, model folder, or embedded-base (the converted SmolLM2)")
    parser.add_argument("--data", required=True, help="a file of transcript lines, or a folder of *.txt")
    parser.add_argument("--out", required=True, help="folder for the final adapter/model; checkpoints go to OUT.checkpoints")
    for flag, kind, help_text in _OPTIONS:
        name = flag[2:].replace("-", "_")
        choices = {"method": METHODS, "dtype": DTYPES}.get(name)
        parser.add_argument(flag, type=kind, default=defaults[name], choices=choices,
                            help=f"{help_text} (default {defaults[name]})")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT.checkpoints")


def run(args: argparse.Namespace) -> int:
    from rtchat.train.data import DataError
    from rtchat.train.train import TrainError, main

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        out = main(cfg)
    except TrainError as exc:
        print(f"rtchat train: {exc}")
        return 2 if "allowed" in str(exc) else 1
    except DataError as exc:
        print(f"rtchat train: {exc}")
        return 2
    print(f"wrote {out}")
    return 0
