"""The agent's C++ CPU kernels (``kernels.cpp``): built with g++ on first use, loaded as torch ops.

``int8_mm(x, weight, scale)`` is ``Int8Linear``'s product for a few rows (quant.py): float32
activations times int8 weights with one scale per output row, float32 out. torch's own int8
kernel (``_weight_int8pack_mm``) read the weights at about half the machine's memory bandwidth
(issue 19); this one streams them (see kernels.cpp). ``decoder(...)`` is a Llama decoder's
whole one-token step in one call (fastpath.py).

The library is compiled once per source, torch version and compiler flags into
``$RTCHAT_CACHE/kernels/`` (default ``~/.cache/rtchat/kernels/``), ~10 s, logged; later
processes load the cached file. Where it cannot be built — no g++, a CPU without AVX-512 (or not
Linux), a failed compile — ``available()`` is False after one warning, and callers use torch's
kernels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from rtchat.configs.models import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
# AVX-512 F/BW/VL/DQ (x86-64-v4); OpenMP, as torch's at::parallel_for is built on it here
NEEDS = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}  # /proc/cpuinfo's names
FLAGS = ("-O3", "-march=x86-64-v4", "-mtune=native", "-fopenmp", "-std=c++17", "-shared", "-fPIC", "-DNDEBUG")


def _compile(target: Path) -> None:
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    libs = cpp_extension.library_paths()
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = ["g++", *FLAGS, abi, *includes, str(SOURCE), "-o", str(out),
               *[f"-L{p}" for p in libs], *[f"-Wl,-rpath,{p}" for p in libs], "-lc10", "-ltorch_cpu"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"g++ failed ({result.returncode}): {result.stderr[-2000:]}")
        os.replace(out, target)  # atomic: a process beside this one loads a whole file or builds its own


def _library() -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + repr((torch.__version__, FLAGS)).encode()).hexdigest()[:16]
    return cache_root() / "kernels" / f"rtchat_kernels_{key}.so"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


@functools.cache
def available() -> bool:
    """Whether the kernels are loaded (building them on the first call); False after one warning."""
    missing = sorted(NEEDS - _cpu_flags())
    if missing:
        log.warning("agent kernels: the CPU lacks %s; using torch's int8 kernel", ", ".join(missing))
        return False
    path = _library()
    try:
        if not path.exists():
            if shutil.which("g++") is None:
                raise RuntimeError("no g++ on PATH")
            path.parent.mkdir(parents=True, exist_ok=True)
            log.info("agent kernels: compiling %s into %s (once, ~10 s)", SOURCE.name, path)
            t0 = time.perf_counter()
            _compile(path)
            log.info("agent kernels: compiled in %.1f s", time.perf_counter() - t0)
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as exc:
        log.warning("agent kernels: not built (%s); using torch's int8 kernel", exc)
        return False
    return True


def int8_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (m, k) float32 · int8 weight (n, k)ᵀ, times one scale per output row → (m, n) float32."""
    return torch.ops.rtchat.int8_mm(x, weight, scale)


def decoder(*args):
    """A Llama decoder's one-token step over int8 weights (kernels.cpp's ``Decoder``; fastpath.py
    passes the weights): ``step(token, position, n, keys, values, logits)`` → (the last-layer
    state after the final norm (1, d), logits (1, vocab) or (0, 0)), writing the token's key and
    value at index n of every layer's buffers (1, n_kv, room > n, head_dim)."""
    return torch.classes.rtchat.Decoder(*args)
