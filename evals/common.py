"""What the evaluations over transcript lines share (``rtchat eval switch``, ``ppl``, ``pred``,
``all``, ``relevance``): the error they report, the models they take by name (embedded-base,
embedded, a folder, a hub id, an adapter folder), their common options, the run that loads data
and model, evaluates and writes the JSON report with its provenance, and sharding (``--shard
K/N`` parts, joined by ``--merge``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path

from rtchat.configs.models import AGENT_BASE, EMBEDDED, EMBEDDED_BASE, EMBEDDED_V1, MODEL_NAMES


class EvalError(RuntimeError):
    """The evaluation cannot run; the message says what was wrong and how to fix it."""


def resolve_model(spec: str, device: str = "auto", weights: str = "auto"):
    """(model, tokenizer) in eval mode on ``device`` (auto: where the agent would run): embedded-base,
    embedded (base + the project's adapter), embedded-v1 (base + the first shipped adapter, pinned),
    a folder, a hub id, or a peft adapter folder (its base is loaded, the adapter merged).
    ``weights``: auto (float32 on the CPU, float16 on CUDA), or the agent's CPU int8 / int4 linears."""
    import torch

    from rtchat.configs.devices import resolve_device
    from rtchat.configs.models import agent_adapter_dir
    from rtchat.nodes.agent.loading import LoadError, load_model, resolve_dtype
    from rtchat.nodes.agent.quant import QUANTISED, quantize_linears

    device = resolve_device(device, "agent")
    if weights in QUANTISED and device != "cpu":
        raise EvalError(f"--weights {weights} is a CPU option; the model resolved to {device}")
    dtype = resolve_dtype("auto", device) if device != "cpu" else torch.float32
    base, adapter = spec, ""
    if spec == EMBEDDED_BASE:
        base = AGENT_BASE
    elif spec == EMBEDDED_V1:
        base, adapter = AGENT_BASE, EMBEDDED_V1
    elif spec == EMBEDDED:
        adapter_dir = agent_adapter_dir()
        if not (adapter_dir / "adapter_config.json").is_file():
            raise EvalError(f"model 'embedded': no project adapter at {adapter_dir}; make one with "
                            f"'rtchat train --model embedded-base --method lora --data DATA --out {adapter_dir}', "
                            "or use --model embedded-base")
        base, adapter = AGENT_BASE, str(adapter_dir)
    elif (Path(spec).expanduser() / "adapter_config.json").is_file():
        adapter = str(Path(spec).expanduser())
        base = json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    try:
        model, tok = load_model(base, adapter, device, dtype)
    except LoadError as exc:
        raise EvalError(str(exc)) from None
    if weights in QUANTISED:
        quantize_linears(model, weights)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_model(spec: str) -> str:
    """``--model`` as argparse checks it (an error exits 2): a model name, an existing folder or
    file, or a hub id ``owner/name``."""
    if spec in MODEL_NAMES or Path(spec).expanduser().exists() or HUB_ID_RE.fullmatch(spec):
        return spec
    raise argparse.ArgumentTypeError(f"{spec!r} is no model rtchat knows; allowed: {', '.join(MODEL_NAMES)}, a model or "
                                     "adapter folder, a .gguf file, or a hub id owner/name")


def check_data(path: str) -> str:
    """``--data`` as argparse checks it: a file or folder that exists."""
    if Path(path).expanduser().exists():
        return path
    raise argparse.ArgumentTypeError(f"{path}: no such file or folder; allowed: a file of transcript lines or a folder "
                                     "of *.txt (the held-out split: 'rtchat data synthetic --out data/syn' writes "
                                     "data/syn/dataset_test.txt)")


def configure_common(parser: argparse.ArgumentParser) -> None:
    """The options every ``rtchat eval`` over transcript lines takes (switch, ppl)."""
    parser.add_argument("--model", required=True,
                        help="embedded-base, embedded (+ project adapter), embedded-v1 (+ the first adapter), folder, "
                             "hub id or adapter folder")
    parser.add_argument("--data", required=True, help="a file (or folder of *.txt) of transcript lines")
    parser.add_argument("--num-examples", type=int, default=50, help="lines sampled (default 50)")
    parser.add_argument("--json", required=True, help="write the report here")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--weights", choices=("auto", "int8", "int4"), default="auto",
                        help="auto: float32 on the CPU (float16 on CUDA); int8 / int4: the agent's quantised CPU linears "
                             "(agent.dtype), applied to --model and --baseline")
    parser.add_argument("--max-length", type=int, default=512,
                        help="tokens per line, cut from the left as in training; points in the cut part are not "
                             "scored (default 512)")


def run_eval(args: argparse.Namespace, name: str, evaluate_fn, headline: tuple[str, ...]) -> int:
    """Load data and model, evaluate, write the JSON report (with model, seed, data hash and
    config) atomically and print the headline figures; 1 with a message on bad data/model."""
    from rtchat.common.files import write_atomic
    from rtchat.train.data import DataError, data_files, read_lines, sha256_files

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        files = data_files(args.data)
        lines = read_lines(files)
        model, tok = resolve_model(args.model, weights=args.weights)
        report = evaluate_fn(model, tok, lines, args.num_examples, args.seed, args.max_length)
    except (DataError, EvalError) as exc:
        print(f"rtchat eval {name}: {exc}")
        return 1
    digest = sha256_files(files)
    report |= {"model": args.model, "seed": args.seed, "data_sha256": digest}
    report["config"] = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    report["config"]["data_sha256"] = digest
    write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in headline}))
    return 0


# -------------------------------------------------------------------- shards


def parse_shard(text: str) -> tuple[int, int] | None:
    """``K/N`` (this is part K of N, from 0), ``env`` (torchrun's RANK/WORLD_SIZE), or "" (None)."""
    if not text:
        return None
    if text == "env":
        text = f"{os.environ.get('RANK', '')}/{os.environ.get('WORLD_SIZE', '')}"
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise EvalError(f"--shard: got {text!r}; allowed: K/N with 0 <= K < N, or env (RANK and WORLD_SIZE set)")
    return int(k), int(n)


def load_parts(paths: list[str]) -> tuple[dict, dict[int, dict]]:
    """(setting, unit index → result) from the part files of one sharded run (lines, dialogues), checked
    complete."""
    setting, results, seen = None, {}, set()
    for path in paths:
        try:
            part = json.loads(Path(path).read_text(encoding="utf-8"))
            shard, part_setting, part_results = tuple(part["shard"]), part["setting"], part["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EvalError(f"--merge {path}: not a part written by 'rtchat eval … --shard' ({exc})") from None
        if setting is None:
            setting = part_setting
        elif part_setting != setting:
            raise EvalError(f"--merge {path}: made with other settings than {paths[0]}; parts merge only within one run")
        seen.add(shard)
        results |= {int(k): v for k, v in part_results.items()}
    n = next(iter(seen))[1]
    missing = sorted(set(range(n)) - {k for k, _ in seen})
    if missing:
        raise EvalError(f"--merge: parts {missing} of {n} are missing; nothing was written")
    return setting, results
