"""evals.workers: shards on spawned processes come back in order, a dead worker fails the run
naming its shard (and nothing is written), out-of-memory halves the batch, and eval all writes
the same CSVs with 1 and 2 CPU workers."""

from __future__ import annotations

import json
import logging

import pytest
from eval_worker_tasks import init as _init
from eval_worker_tasks import task as _task
from tiny_models import PREFIX, tiny_llama_dir

from rtchat.evals import suite, workers
from rtchat.evals.workers import Shard, WorkerError, halving, run_shards


def test_results_come_back_in_shard_order_from_spawned_workers():
    shards = [Shard(f"s{k}", size, k) for k, size in enumerate([1, 50, 3, 40, 2])]
    seen = []
    got = run_shards(_init, ("t",), _task, shards, workers=2, progress=seen.append)
    assert [r[0] for r in got] == [0, 2, 4, 6, 8]
    assert {r[1] for r in got} <= {"t:cpu"}
    assert sorted(s.name for s in seen) == ["s0", "s1", "s2", "s3", "s4"]


def test_in_process_run_goes_longest_first():
    shards = [Shard(f"s{k}", size, k) for k, size in enumerate([1, 50, 3])]
    seen = []
    assert [r[0] for r in run_shards(_init, ("t",), _task, shards, workers=1, progress=seen.append)] == [0, 2, 4]
    assert [s.name for s in seen] == ["s1", "s2", "s0"]


def test_a_dead_worker_fails_the_run_naming_the_shard():
    shards = [Shard("line 0 of the sample", 1, 1), Shard("line 1 of the sample", 9, "die")]
    with pytest.raises(WorkerError, match=r"line 1 of the sample.*no results were written"):
        run_shards(_init, ("t",), _task, shards, workers=2)


def test_a_worker_that_cannot_start_says_why():
    from eval_worker_tasks import init_fails

    with pytest.raises(ValueError, match="cannot load model 'm'"):
        run_shards(init_fails, ("m",), _task, [Shard("line 0 of the sample", 1, 1)], workers=2)


def test_out_of_memory_halves_the_batch_and_says_so(caplog):
    import torch

    sizes = []

    def fn(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [x + 1 for x in chunk]

    with caplog.at_level(logging.WARNING, logger="rtchat.evals.workers"):
        assert halving(fn, list(range(7)), 8, "branches") == list(range(1, 8))
    assert sizes == [7, 4, 2, 2, 2, 1]  # 8 -> 4 -> 2, then kept at 2
    assert "out of memory on a batch of 8 branches; retrying with 4" in caplog.text

    def always(chunk):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        halving(always, [1, 2], 2)


LINES = [
    PREFIX + " S1: how was it (0.3) the trip I mean. (0.8) S2: great (0.4) really great S1: good one um, yes",
    PREFIX + " S1: hello there (0.5) how are you S2: yeah. S1: fine thanks (0.2) and you (1.1) S2: fine haha",
    PREFIX + " S1: what about the weather S2: it is nice (0.3) sure",
    PREFIX + " S1: sure maybe later S2: thanks (0.6) what about today S1: it is fine",
]


@pytest.mark.slow
def test_one_and_two_workers_write_identical_csvs(tmp_path, bpe_tok):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    outs = []
    for n, gen_batch in ((1, 0), (2, 0), (1, 3)):  # and decoding contexts side by side (the GPU default)
        out = tmp_path / f"w{n}-{gen_batch}"
        assert cli(["eval", "all", "--model", str(model_dir), "--data", str(data), "--num-examples", "4", "--positions", "4",
                    "--responses", "1", "--decoding", "nucleus", "dynamic_contrastive_sampling", "--negatives", "6",
                    "--workers", str(n), "--threads", "1", "--gen-batch", str(gen_batch), "--out-dir", str(out)]) == 0
        outs.append(out)
    for name in ("evals_output_ppl_all.csv", "evals_output_pred_all_multiple.csv"):
        assert (outs[0] / name).read_text() == (outs[1] / name).read_text() == (outs[2] / name).read_text(), name


def test_a_failed_run_writes_no_csv(tmp_path, bpe_tok, monkeypatch, capsys):
    from rtchat.cli import main as cli

    def broken(*args, **kwargs):
        raise WorkerError("a worker process died; 1 shard(s) not evaluated (line 2 of the sample); no results were written")

    monkeypatch.setattr(suite, "run_shards", broken)
    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    assert cli(["eval", "all", "--model", str(model_dir), "--data", str(data), "--out-dir", str(out)]) == 1
    assert "line 2 of the sample" in capsys.readouterr().out
    assert not out.exists()


def test_devices_fall_back_to_the_cpu():
    assert workers.devices(3) == ["cpu"] * 3


def test_bus_gets_progress_and_result_events(tmp_path, bpe_tok, real_bus):
    import dataclasses

    import zmq

    from rtchat.bus.client import BusClient
    from rtchat.bus.clock import Clock
    from rtchat.bus.events import EvalProgress, EvalResult
    from rtchat.cli import main as cli
    from rtchat.common.files import write_atomic
    from rtchat.configs import dump, load

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_atomic(run_dir / "config.yaml", dump(dataclasses.replace(load("cpu"), bus=real_bus)))
    listener = BusClient(real_bus, src="ui", session="live", clock=Clock(), topics=("eval.",))
    listener.handshake(int(5e9))
    try:
        model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
        data = tmp_path / "d.txt"
        data.write_text("\n".join(LINES[:2]) + "\n", encoding="utf-8")
        assert cli(["eval", "pred", "--model", str(model_dir), "--data", str(data), "--positions", "2", "--responses", "1",
                    "--decoding", "greedy", "--workers", "1", "--threads", "1", "--out-dir", str(tmp_path / "o"),
                    "--bus", str(run_dir)]) == 0
        got = []
        while len(got) < 3 and listener.data.poll(2000, zmq.POLLIN):
            got.append(listener.decode(listener.data.recv_multipart()).event)
    finally:
        listener.close()
    assert got[:2] == [EvalProgress(name="pred", done=1, total=2), EvalProgress(name="pred", done=2, total=2)]
    assert isinstance(got[2], EvalResult) and json.loads(got[2].result_json)["pred"]["greedy"].keys() >= {"overall"}
    assert (tmp_path / "o" / "evals_output_pred_multiple_greedy.csv").is_file()


def test_bus_flag_without_a_live_run_is_a_clear_error(tmp_path, bpe_tok, capsys):
    from rtchat.cli import main as cli

    assert cli(["eval", "all", "--model", "x", "--data", "y", "--bus", str(tmp_path / "nowhere")]) == 1
    assert "--bus" in capsys.readouterr().out


def test_shards_on_several_machines_merge_into_the_same_csvs(tmp_path, bpe_tok, capsys):
    from rtchat.cli import main as cli

    model_dir = tiny_llama_dir(tmp_path / "m", bpe_tok)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    common = ["eval", "all", "--model", str(model_dir), "--data", str(data), "--positions", "2", "--responses", "1",
              "--decoding", "greedy", "nucleus", "--negatives", "4", "--workers", "1", "--threads", "1"]
    assert cli([*common, "--out-dir", str(tmp_path / "whole")]) == 0
    parts = []
    for k in range(3):
        assert cli([*common, "--shard", f"{k}/3", "--out-dir", str(tmp_path / f"machine{k}")]) == 0
        parts.append(str(tmp_path / f"machine{k}" / f"evals_part_all_{k}_of_3.json"))
    assert not (tmp_path / "machine0" / "evals_output_ppl_all.csv").exists()
    assert cli([*common, "--merge", *parts[:2], "--out-dir", str(tmp_path / "bad")]) == 1
    assert "parts [2] of 3 are missing" in capsys.readouterr().out
    assert cli([*common, "--merge", *parts, "--out-dir", str(tmp_path / "merged")]) == 0
    for name in ("evals_output_ppl_all.csv", "evals_output_pred_all_multiple.csv"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "merged" / name).read_text(), name
    assert cli([*common, "--shard", "3/3"]) == 1 and "--shard" in capsys.readouterr().out
