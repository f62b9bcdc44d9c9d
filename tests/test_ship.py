"""Shipping a trained adapter: float16 weights, the config, and a manifest."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from rtchat.configs.checksums import verify_sums
from rtchat.train.ship import ship


def test_ship_halves_the_weights_and_writes_the_manifest(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"lora_A": torch.randn(4, 8), "lora_B": torch.zeros(8, 4)}, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text('{"r": 4, "base_model_name_or_path": "/root/.cache/rtchat/models/x"}')
    training = {"data_sha256": "ab12", "git_commit": "c0ffee", "steps": 3,
                "config": {"data": "/tmp/data", "out": "/tmp/A"}, "data_files": ["/tmp/data/dataset_train.txt"]}
    (adapter / "training.json").write_text(json.dumps(training))
    for name, f1 in (("base.json", 0.3), ("adapted.json", 0.8)):
        (tmp_path / name).write_text(json.dumps({"f1": f1, "auc": 0.7, "f1_after_pause": f1, "precision": 1, "recall": 1}))
    (tmp_path / "ppl.json").write_text(json.dumps({"ppl_trp_pos": 2.5, "ppl_trp_neg": 40.0, "counts": {}}))
    dest = ship(
        adapter, tmp_path / "base.json", tmp_path / "adapted.json",
        "data synthetic --out DATA", "train --model embedded-base --data DATA --out OUT", dest=tmp_path / "shipped",
        ppl_adapter=tmp_path / "ppl.json", eval_commands=("eval switch --model embedded --data T",),
    )
    weights = load_file(str(dest / "adapter_model.safetensors"))
    assert weights["lora_A"].dtype == torch.float16
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["train_command"] == ["train", "--model", "embedded-base", "--data", "DATA", "--out", "OUT"]
    assert (manifest["data_sha256"], manifest["git_commit"]) == ("ab12", "c0ffee")
    assert manifest["metrics"]["embedded"]["f1"] == 0.8 and manifest["metrics"]["embedded-base"]["f1"] == 0.3
    assert manifest["metrics"]["embedded"]["ppl_trp_pos"] == 2.5 and "ppl_trp_pos" not in manifest["metrics"]["embedded-base"]
    assert manifest["eval_commands"] == [["eval", "switch", "--model", "embedded", "--data", "T"]]
    # no folder of the machine that trained: names only
    assert manifest["training"]["config"] == {"data": "data", "out": "A"}
    assert manifest["training"]["data_files"] == ["dataset_train.txt"] and manifest["training"]["steps"] == 3
    config = json.loads((dest / "adapter_config.json").read_text())
    assert config == {"r": 4, "base_model_name_or_path": "embedded-base"}
    assert sorted(p.name for p in dest.iterdir()) == [
        "SHA256SUMS", "adapter_config.json", "adapter_model.safetensors", "manifest.json"
    ]
    assert verify_sums(dest, fix="")  # checked at every load
