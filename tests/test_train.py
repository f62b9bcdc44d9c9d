"""rtchat train on a tiny random Llama with the tiny BPE tokenizer: full, LoRA, anchored."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from tiny_models import PREFIX, corpus, tiny_llama_dir

from rtchat.train.data import DataError, collate, data_files, decision_chars, read_lines, tokenize
from rtchat.train.train import TrainConfig, TrainError, last_checkpoint, main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, bpe_tok):
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny"), bpe_tok)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(corpus()[:8]) + "\n", encoding="utf-8")
    return path


def _cfg(tiny_dir, data_file, tmp_path, **kw):
    return TrainConfig(model=str(tiny_dir), data=str(data_file), out=str(tmp_path / "out"), max_steps=2, batch_size=2,
                       max_length=64, **kw)


@pytest.mark.parametrize("method", ["full", "lora", "anchored"])
def test_two_steps_write_checkpoint_with_config_hash_commit_and_finite_loss(tiny_dir, data_file, tmp_path, method):
    cfg = _cfg(tiny_dir, data_file, tmp_path, method=method)
    out = main(cfg)
    record = json.loads((out / "training.json").read_text())
    assert record["step"] == 2 and math.isfinite(record["loss"])
    assert record["config"]["method"] == method
    assert len(record["data_sha256"]) == 64 and record["git_commit"]
    ckpt = last_checkpoint(cfg.checkpoint_dir)
    assert ckpt.name == "step-2" and json.loads((ckpt / "training.json").read_text())["data_sha256"] == record["data_sha256"]
    weights = "adapter_config.json" if method == "lora" else "config.json"
    assert (out / weights).is_file() and (out / "tokenizer.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_resume_continues_the_step_count(tiny_dir, data_file, tmp_path):
    main(_cfg(tiny_dir, data_file, tmp_path, method="lora"))
    resumed = dataclasses.replace(_cfg(tiny_dir, data_file, tmp_path, method="lora"), resume=True, max_steps=3)
    out = main(resumed)
    record = json.loads((out / "training.json").read_text())
    assert record["resumed_from_step"] == 2 and record["step"] == 3
    assert last_checkpoint(_cfg(tiny_dir, data_file, tmp_path).checkpoint_dir).name == "step-3"


def test_lines_are_truncated_from_the_left(bpe_tok):
    line = corpus()[0]
    [example] = tokenize(bpe_tok, [line], max_length=10)
    ids = example["ids"]
    assert len(ids) == 10
    assert ids == bpe_tok(line)["input_ids"][-10:]  # the end of the conversation is kept


def test_batch_is_padded_not_packed(bpe_tok):
    examples = tokenize(bpe_tok, [PREFIX + " S1: hi", PREFIX + " S1: hello there how are you S2: fine"], max_length=512)
    batch = collate(examples, pad_id=bpe_tok.eos_token_id)
    assert batch["input_ids"].shape == (2, max(len(ex["ids"]) for ex in examples))  # one row per line, no concatenation
    short = len(examples[0]["ids"])
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (batch["input_ids"].shape[1] - short)
    assert (batch["labels"][0, short:] == -100).all() and torch.equal(batch["labels"][1], batch["input_ids"][1])


def test_line_without_transcript_names_file_and_line(tmp_path, tiny_dir):
    path = tmp_path / "bad.txt"
    path.write_text(corpus()[0] + "\n\nParticipants: S1 (name: a, age: b, sex: c) S1: hi\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:3"):
        read_lines(data_files(path))
    with pytest.raises(DataError, match=r"bad\.txt:3"):
        main(TrainConfig(model=str(tiny_dir), data=str(path), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.checkpoints").exists()


def test_empty_data_is_an_error(tmp_path, tiny_dir):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        main(TrainConfig(model=str(tiny_dir), data=str(path), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_missing_model_is_an_error_naming_it(tmp_path, data_file):
    missing = tmp_path / "no-such-model"
    with pytest.raises(TrainError, match="no-such-model"):
        main(TrainConfig(model=str(missing), data=str(data_file), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_cli_trains_and_reports_bad_method(tiny_dir, data_file, tmp_path, capsys):
    from rtchat.cli import main as cli

    assert cli(["train", "--model", str(tiny_dir), "--data", str(data_file), "--out", str(tmp_path / "o"),
                "--method", "full", "--max-steps", "1", "--max-length", "32"]) == 0
    assert (tmp_path / "o" / "config.json").is_file()
    with pytest.raises(SystemExit):
        cli(["train", "--model", "x", "--data", "y", "--out", "z", "--method", "qlora"])


def test_a_data_folder_made_by_rtchat_data_trains_on_its_train_split_only(tmp_path):
    from rtchat.train.data import data_files

    for split in ("train", "dev", "test"):
        (tmp_path / f"dataset_{split}.txt").write_text("x\n")
    assert data_files(tmp_path) == [tmp_path / "dataset_train.txt"]


def test_decision_points_are_speaker_tags_and_the_unit_after_each_pause(bpe_tok):
    line = PREFIX + " S1: so i went (0.6) to the store (0.3) S2: nice S1: yes"
    assert [line[c:c + 3] for c in decision_chars(line)] == ["S1:", "to ", "S2:", "S1:"]
    [example] = tokenize(bpe_tok, [line], max_length=512)
    flagged = [bpe_tok.decode([i]).strip() for i, f in zip(example["ids"], example["decision"], strict=True) if f]
    assert [piece[:1] for piece in flagged] == ["S", "t", "S", "S"]  # the token that starts each point
    assert not any(example["decision"][: len(bpe_tok(PREFIX)["input_ids"]) - 1])  # nothing in the header


def test_decision_weight_one_is_the_plain_loss_and_higher_weights_move_it(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rtchat.train.train import compute_loss

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    batch = collate(tokenize(tok, corpus()[:2], 64), tok.eos_token_id)
    cfg = TrainConfig(model="m", data="d", out="o")
    with torch.no_grad():
        plain = float(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss)
        one = float(compute_loss(model, None, batch, dataclasses.replace(cfg, decision_weight=1.0)))
        unit = float(compute_loss(model, None, batch, dataclasses.replace(cfg, decision_weight=1.0 + 1e-9)))
        heavy = float(compute_loss(model, None, batch, dataclasses.replace(cfg, decision_weight=1000.0)))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels, decision = batch["labels"][:, 1:], batch["decision"][:, 1:].bool()
        only = float(torch.nn.functional.cross_entropy(logits[decision], labels[decision]))
    assert batch["decision"].sum() > 0
    assert one == pytest.approx(plain, rel=1e-6) and unit == pytest.approx(plain, rel=1e-5)
    assert heavy == pytest.approx(only, rel=0.02) and abs(heavy - plain) > 1e-3  # dominated by the decision tokens


def test_decision_weight_below_one_is_refused():
    with pytest.raises(TrainError, match="decision_weight"):
        TrainConfig(model="m", data="d", out="o", decision_weight=0.5)
