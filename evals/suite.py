"""``rtchat eval all`` and ``rtchat eval pred``: the reference's tables 4 and 5 as its CSVs.

``eval all --model M --data FILE --num-examples N`` samples N lines as the reference does
(``random.Random(--data-random-state).sample``, default 42), then per line (one shard each,
``evals.workers``): the table-4 perplexities (``ppl.score_reference``) and, for every decoding
method, the table-5 generations (``pred.generate_line``). It writes into ``--out-dir`` (default
the current directory), each through a temporary file and a rename, only once every line is done:

- ``evals_output_ppl_all.csv``: one row, ``ppl_trp_pos, ppl_trp_neg, ppl_pause_pos, ppl_pause_neg``;
- ``evals_output_pred_all_all.csv``: one row per decoding method, the method in the first
  (unnamed) column, then ``pred.COLUMNS``;
- ``evals_output_all.json``: the configuration, model, data hash, example counts and timings.

Several machines: ``--shard K/N`` (or ``env``) writes ``evals_part_<name>_K_of_N.json`` with
the raw results of lines k % N == K; ``--merge PART…`` (all N parts, the same ``--data``) writes
the files above from them.

``eval pred`` writes only table 5 (``evals_output_pred_multiple_<methods>.csv``, the reference's
name for "pred and response"). A method list of one names the file after it, several give
``multiple``, all give ``all`` (spec §8.2). Empty cells are NaN (pandas' ``to_csv`` style).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import random
import time
from pathlib import Path

from rtchat.evals import compat, ppl, pred
from rtchat.evals.common import EvalError, load_parts, parse_shard
from rtchat.evals.workers import Shard, WorkerError, default_workers, run_shards

log = logging.getLogger(__name__)
CPU_NEGATIVES = 20
GPU_GEN_BATCH = 32

# -------------------------------------------------------------------- inside a worker

_STATE: dict = {}


def init_worker(device: str, spec: str, seed: int) -> None:
    from rtchat.configs.schema import AgentConfig
    from rtchat.evals.common import resolve_model
    from rtchat.nodes.agent.lm import AgentLM
    from rtchat.nodes.agent.loading import LoadError

    model, tok = resolve_model(spec, device)
    try:
        lm = AgentLM(model, tok, AgentConfig(seed=seed), name=spec)
    except LoadError as exc:
        raise EvalError(str(exc)) from None
    _STATE.update(model=model, tok=tok, lm=lm)


def run_line(job: dict) -> dict:
    out = {}
    if job["ppl"]:
        out["ppl"] = ppl.score_reference(_STATE["model"], _STATE["tok"], job["line"], job["max_length"], job["batch"],
                                         job["negatives"], job["key"])
    if job["methods"]:
        out["gen"] = pred.generate_line(_STATE["lm"], job["methods"], job["pred_contexts"], job["response_contexts"],
                                        job["seed"], job["compat"], job["gen_batch"])
    return out


# -------------------------------------------------------------------- the driver


def sample_lines(lines: list[str], num_examples: int, seed: int) -> list[str]:
    """The reference's sample (spec §1.2): all lines when num_examples <= 0 or >= their number."""
    if num_examples <= 0 or num_examples >= len(lines):
        return list(lines)
    return random.Random(seed).sample(lines, num_examples)


def suffix(names: list[str], every: tuple[str, ...]) -> str:
    if list(names) == list(every) or "all" in names:
        return "all"
    return names[0] if len(names) == 1 else "multiple"


def _json_safe(value):
    """NaN → None (JSON null), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _cell(v) -> str:
    return "" if isinstance(v, float) and math.isnan(v) else repr(float(v))


def csv_text(rows: list[dict], columns: tuple[str, ...], index: list[str] | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(([""] if index else []) + list(columns))
    for k, row in enumerate(rows):
        w.writerow(([index[k]] if index else []) + [_cell(row[c]) for c in columns])
    return buf.getvalue()


def _setting(args, with_ppl: bool, data_sha: str) -> dict:
    """Everything a part's results depend on; parts merge only when it is the same."""
    gpu = _cuda()
    return {
        "name": "all" if with_ppl else "pred", "model": args.model, "data_sha256": data_sha,
        "num_examples": args.num_examples, "data_random_state": args.data_random_state,
        "random_state": args.random_state, "reference_compat": args.reference_compat,
        "methods": list(compat.METHODS) if "all" in args.decoding else list(args.decoding),
        "positions": args.positions if args.positions is not None else (0 if gpu else pred.CPU_POSITIONS),
        "responses": args.responses if args.responses is not None else (0 if gpu else pred.CPU_RESPONSES),
        "negatives": args.negatives if args.negatives is not None else (0 if gpu else CPU_NEGATIVES),
        "max_length": args.max_length,
    }


def evaluate(args: argparse.Namespace, lines: list[str], with_ppl: bool, progress=None, setting: dict | None = None,
             merged: dict[int, dict] | None = None, shard: tuple[int, int] | None = None) -> dict:
    """The tables (and counts) for the sampled lines (see the module docstring); with ``shard``
    only that part's raw results; with ``merged`` the tables from the parts' results."""
    sample = sample_lines(lines, setting["num_examples"], setting["data_random_state"])
    methods = setting["methods"]
    n_pos, n_resp, n_neg = setting["positions"], setting["responses"], setting["negatives"]
    data_seed, seed, quirks = setting["data_random_state"], setting["random_state"], setting["reference_compat"]
    gen_batch = args.gen_batch if args.gen_batch is not None else (GPU_GEN_BATCH if _cuda() else 0)
    pred_ex, resp_ex, shards = [], [], []
    for k, line in enumerate(sample):
        pe = pred.sample_positions(pred.pred_examples(line, k), n_pos, data_seed, k, "pred")
        re_ = pred.sample_positions(pred.response_examples(line, k), n_resp, data_seed, k, "response")
        pred_ex.append(pe)
        resp_ex.append(re_)
        job = {"line": line, "ppl": with_ppl, "max_length": setting["max_length"], "batch": args.batch_size,
               "negatives": n_neg, "key": f"{data_seed}:{k}", "gen_batch": gen_batch,
               "methods": methods, "pred_contexts": [e.context for e in pe],
               "response_contexts": [e.context for e in re_], "seed": seed, "compat": quirks}
        shards.append(Shard(f"line {k} of the sample", len(line), job))
    if not any(pred_ex) and not any(resp_ex) and not with_ppl:
        raise EvalError("the sampled lines have no word positions to predict")
    t0 = time.monotonic()
    if merged is not None:
        if sorted(merged) != list(range(len(sample))):
            raise EvalError(f"--merge: the parts hold {len(merged)} lines, the sample has {len(sample)}")
        results = [merged[k] for k in range(len(sample))]
    else:
        mine = [k for k in range(len(sample)) if shard is None or k % shard[1] == shard[0]]
        got = run_shards(init_worker, (setting["model"], seed), run_line, [shards[k] for k in mine],
                         args.workers, progress, args.threads)
        if shard is not None:
            return {"part": dict(zip(mine, got, strict=True)), "seconds": round(time.monotonic() - t0, 1)}
        results = got
    out = {"lines": len(sample), "methods": methods, "seconds": round(time.monotonic() - t0, 1),
           "positions_per_line": n_pos or "all", "responses_per_line": n_resp or "all",
           "negatives_per_line": (n_neg or "all") if with_ppl else None}
    if with_ppl:
        out["ppl_row"], out["ppl_counts"] = ppl.reference_table([r["ppl"] for r in results])
    rows = []
    all_pred = [e for pe in pred_ex for e in pe]
    for m in methods:
        continuations = [t for r in results for t in r["gen"][m][0]]
        responses = [t for r in results for t in r["gen"][m][1]]
        row = pred.pred_scores(all_pred, continuations) | pred.response_scores(sample, responses, quirks)
        rows.append(row | pred.aggregate(row))
        out.setdefault("examples", {})[m] = [{"context_end": e.context[-60:], "prediction": t}
                                             for e, t in list(zip(all_pred, continuations, strict=True))[:5]]
    out["pred_rows"] = rows
    out["pred_counts"] = {"positions": len(all_pred), "responses": sum(len(r) for r in resp_ex),
                          **{f"{c}_targets": sum(e.target[i] == 1 for e in all_pred) for i, c in enumerate(pred.CLASSES)}}
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="embedded-base, embedded (+ project adapter), embedded-v1 (+ the first adapter), folder, "
                             "hub id or adapter folder")
    parser.add_argument("--data", required=True, help="a file (or folder of *.txt) of transcript lines")
    parser.add_argument("--num-examples", type=int, default=-1, help="lines sampled (default -1: all; the reference used 150)")
    parser.add_argument("--data-random-state", type=int, default=42, help="seed of the line sample (default 42)")
    parser.add_argument("--random-state", type=int, default=42, help="seed set before every generation (default 42)")
    parser.add_argument("--decoding", nargs="+", default=["all"], choices=("all", *compat.METHODS),
                        help="decoding methods, one row each (default all seven)")
    parser.add_argument("--positions", type=int, default=None,
                        help="word positions drawn per line for the prediction eval; 0 = every position (default: "
                             f"0 on a GPU, {pred.CPU_POSITIONS} on a CPU)")
    parser.add_argument("--responses", type=int, default=None,
                        help="speaker tags drawn per line for the response eval; 0 = every tag (default: "
                             f"0 on a GPU, {pred.CPU_RESPONSES} on a CPU)")
    parser.add_argument("--negatives", type=int, default=None,
                        help="table 4: inserted tags and inserted pauses scored per line, each; 0 = all (~4 per word, "
                             f"the reference; default: 0 on a GPU, {CPU_NEGATIVES} on a CPU)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes, each with its own model (default: one per GPU; without a GPU one per core)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per CPU worker (default: cores / workers)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="inserted tags/pauses scored per forward pass (halved on out-of-memory; default 64)")
    parser.add_argument("--gen-batch", type=int, default=None,
                        help="contexts of a line decoded side by side (halved on out-of-memory); "
                             f"0 = one by one over a shared cache (default: {GPU_GEN_BATCH} on a GPU, 0 on a CPU)")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per line for the perplexities (default 2048)")
    parser.add_argument("--reference-compat", action="store_true",
                        help="reproduce the reference's quirks (see rtchat/evals/compat.py) to compare with its CSVs")
    parser.add_argument("--out-dir", default=".", help="where the CSVs and the JSON go (default: here)")
    parser.add_argument("--shard", default="",
                        help="several machines: evaluate only part K/N of the lines (from 0; 'env': torchrun's RANK/"
                             "WORLD_SIZE) and write evals_part_*.json; then join them with --merge")
    parser.add_argument("--merge", nargs="+", metavar="PART", default=[],
                        help="write the tables from the part files of a sharded run (same --data)")
    parser.add_argument("--bus", metavar="RUN_DIR", default="",
                        help="also publish eval.progress / eval.result on the bus of this live run")


def run_suite(args: argparse.Namespace, with_ppl: bool) -> int:
    from tqdm.auto import tqdm

    from rtchat.common.files import write_atomic
    from rtchat.train.data import DataError, data_files, read_lines, sha256_files

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    name = "all" if with_ppl else "pred"
    if args.workers is None:
        args.workers = default_workers()
    publish, close = None, None
    try:
        if args.bus:
            publish, close = _bus_publisher(args.bus, name)
        files = data_files(args.data)
        lines = read_lines(files)
        digest = sha256_files(files)
        shard = parse_shard(args.shard)
        setting, merged = load_parts(args.merge) if args.merge else (_setting(args, with_ppl, digest), None)
        if merged is not None and setting["data_sha256"] != digest:
            raise EvalError("--merge: the parts were made from other data than --data")
        if merged is not None and setting["name"] != name:
            raise EvalError(f"--merge: the parts are of 'rtchat eval {setting['name']}', not of 'rtchat eval {name}'")
        n_lines = min(len(lines), args.num_examples) if args.num_examples > 0 else len(lines)
        bar = tqdm(total=len(range(shard[0], n_lines, shard[1])) if shard else 0 if merged else n_lines,
                   desc=f"eval {name}", unit="line")

        def progress(shard):
            bar.update(1)
            if publish:
                publish("progress", done=bar.n, total=bar.total)

        result = evaluate(args, lines, with_ppl, progress, setting, merged, shard)
        bar.close()
    except (DataError, EvalError, WorkerError) as exc:
        if close:
            close()
        print(f"rtchat eval {name}: {exc}")
        return 1
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shard is not None:
        path = out_dir / f"evals_part_{name}_{shard[0]}_of_{shard[1]}.json"
        write_atomic(path, json.dumps({"shard": list(shard), "setting": setting, "seconds": result["seconds"],
                                       "results": {str(k): v for k, v in result["part"].items()}}) + "\n")
        if close:
            close()
        print(f"wrote {path} ({len(result['part'])} lines); join the parts with --merge")
        return 0
    eval_suffix = "all" if with_ppl else "multiple"
    dec_suffix = suffix(result["methods"], compat.METHODS)
    written = []
    if with_ppl:
        path = out_dir / f"evals_output_ppl_{eval_suffix}.csv"
        write_atomic(path, csv_text([result["ppl_row"]], ppl.REFERENCE_COLUMNS))
        written.append(path)
    path = out_dir / f"evals_output_pred_{eval_suffix}_{dec_suffix}.csv"
    write_atomic(path, csv_text(result["pred_rows"], pred.COLUMNS, result["methods"]))
    written.append(path)
    report = {"model": args.model, "data_sha256": digest,
              "config": {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "evaluation")},
              **{k: v for k, v in result.items() if k not in ("ppl_row", "pred_rows")},
              "ppl": result.get("ppl_row"), "pred": dict(zip(result["methods"], result["pred_rows"], strict=True))}
    path = out_dir / f"evals_output_{eval_suffix}.json"
    write_atomic(path, json.dumps(_json_safe(report), indent=2, default=str) + "\n")
    written.append(path)
    if publish:
        publish("result", result_json=json.dumps(_json_safe({"ppl": report["ppl"], "pred": report["pred"]})))
        close()
    if with_ppl:
        print(json.dumps(result["ppl_row"]))
    for m, row in zip(result["methods"], result["pred_rows"], strict=True):
        print(f"{m}: " + ", ".join(f"{k}={row[k]:.3f}" for k in ("avg_non_verbal", "avg_verbal", "overall")))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _bus_publisher(run_dir: str, name: str):
    """(publish, close) for ``eval.progress`` / ``eval.result`` on the live run in ``run_dir``
    (its ``config.yaml`` names the bus), or EvalError saying why there is none."""
    from rtchat.bus.client import BusClient, HandshakeTimeout
    from rtchat.bus.clock import Clock
    from rtchat.bus.events import EvalProgress, EvalResult
    from rtchat.bus.sockets import check_security
    from rtchat.configs import ConfigError, load

    try:
        cfg = load(str(Path(run_dir) / "config.yaml"), [])
        check_security(cfg.bus)
    except (ConfigError, FileNotFoundError) as exc:
        raise EvalError(f"--bus {run_dir}: {exc}") from None
    if not cfg.bus.pub_endpoint:
        raise EvalError(f"--bus {run_dir}: its config names no bus endpoints (is it a live run's directory?)")
    client = BusClient(cfg.bus, src=f"eval-{name}", session=cfg.run.id, clock=Clock())
    try:
        client.handshake(int(cfg.bus.handshake_timeout_s * 1e9))
    except HandshakeTimeout as exc:
        client.close()
        raise EvalError(f"--bus {run_dir}: {exc}") from None

    def publish(kind: str, **fields) -> None:
        event = EvalProgress(name=name, **fields) if kind == "progress" else EvalResult(name=name, **fields)
        client.publish(event)

    return publish, client.close


def run(args: argparse.Namespace) -> int:
    """``rtchat eval all``."""
    return run_suite(args, with_ppl=True)


def run_pred(args: argparse.Namespace) -> int:
    """``rtchat eval pred``: the same options, table 5 only."""
    return run_suite(args, with_ppl=False)
