"""Run an evaluation's shards (one transcript line each) on one process per device.

``run_shards(init, init_args, task, shards, workers)``:

- ``workers`` > 1 starts that many **spawned** processes (``ProcessPoolExecutor``); each takes
  one device from a queue (``cuda:0``, ``cuda:1``, … or ``cpu``), calls ``init(device,
  *init_args)`` once (it loads its own model) and then ``task(payload)`` per shard. With 1
  worker everything runs in this process.
- Shards go out longest first (``Shard.size``), so the long lines do not end the run alone.
- Results come back in the shards' own order, whatever ran where: a shard's result depends only
  on the shard (the tasks reseed their generator per generation), so a run gives the same
  numbers with any number of workers.
- A worker that dies (killed, out of host memory, a crash in native code) breaks the pool:
  ``WorkerError`` names the shards that were lost, and nothing is written — the callers write
  their CSVs only after every shard came back, through a temporary file and a rename.
- ``halving(fn, items, batch)`` runs ``fn`` over batches of items and, on an out-of-memory error,
  halves the batch and retries (logged), down to one item.

Several machines: each runs ``rtchat eval … --shard K/N`` (or ``--shard env`` under torchrun,
which sets RANK and WORLD_SIZE) on the lines k with k % N == K, with its own workers, and writes
its raw results; ``--merge`` on all N parts writes the tables (``evals.suite``), identical to
one machine's.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A worker process died; the message names the lost shards. No output was written."""


@dataclasses.dataclass(frozen=True, slots=True)
class Shard:
    name: str  # for messages: "line 3 of the sample"
    size: int  # work estimate (characters); larger goes first
    payload: object


def devices(workers: int) -> list[str]:
    """One device per worker: the GPUs in turn, else the CPU."""
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{k % n}" for k in range(workers)] if n else ["cpu"] * workers


def default_workers() -> int:
    """One per GPU; without one, one per CPU core (each on one thread: a small model decoding one
    sequence gains little from a second thread, and loses a lot when the cores are busy)."""
    import torch

    return torch.cuda.device_count() or max(1, os.cpu_count() or 1)


def _start(device: str, threads: int, n_workers: int, init: Callable, init_args: tuple) -> None:
    if device == "cpu":
        import torch

        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // n_workers))
    init(device, *init_args)


_INIT_ERROR: list[BaseException] = []  # in a worker: why its init failed (raised again by every task)


def _init_worker(queue, threads: int, n_workers: int, init: Callable, init_args: tuple) -> None:
    try:
        _start(queue.get(), threads, n_workers, init, init_args)
    except Exception as exc:  # a failed initializer would break the pool without saying why
        _INIT_ERROR.append(exc)


def _run_task(task: Callable, payload):
    if _INIT_ERROR:
        raise _INIT_ERROR[0]
    return task(payload)


def run_shards(
    init: Callable,
    init_args: tuple,
    task: Callable,
    shards: Sequence[Shard],
    workers: int,
    progress: Callable[[Shard], None] | None = None,
    threads: int = 0,
) -> list:
    """``task(shard.payload)`` for every shard, in shard order (see the module docstring).
    ``threads``: torch threads per CPU worker (0: the cores / workers)."""
    order = sorted(range(len(shards)), key=lambda k: -shards[k].size)
    results: list = [None] * len(shards)
    if workers <= 1:
        _start(devices(1)[0], threads, 1, init, init_args)
        for k in order:
            results[k] = task(shards[k].payload)
            if progress:
                progress(shards[k])
        return results
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    for device in devices(workers):
        queue.put(device)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(queue, threads, workers, init, init_args)) as pool:
        futures = {pool.submit(_run_task, task, shards[k].payload): k for k in order}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    k = futures[future]
                    results[k] = future.result()
                    if progress:
                        progress(shards[k])
        except BrokenProcessPool:
            lost = sorted(futures[f] for f in futures if not f.done() or f.exception() is not None)
            names = ", ".join(shards[k].name for k in lost[:10]) + (" …" if len(lost) > 10 else "")
            raise WorkerError(f"a worker process died; {len(lost)} shard(s) not evaluated ({names}); "
                              "no results were written") from None
        except BaseException:  # a task's own error (EvalError…): stop, do not wait for the rest
            for future in futures:
                future.cancel()
            raise
    return results


def halving(fn: Callable[[list], list], items: list, batch: int, what: str = "items") -> list:
    """``fn`` over batches of ``items`` (concatenated results); an out-of-memory error halves the
    batch and retries it (logged), and the smaller size is kept for the rest."""
    import torch

    out, start = [], 0
    while start < len(items):
        chunk = items[start : start + batch]
        try:
            out += fn(chunk)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of memory on a batch of %d %s; retrying with %d", batch, what, batch // 2)
            batch //= 2
            continue
        start += len(chunk)
    return out
