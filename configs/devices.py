"""Device placement: explicit ``device:`` per node, or ``auto`` like the reference.

``auto`` follows the reference's rule for the three model nodes: with 3 or more visible GPUs
TTS on cuda:0, ASR on cuda:1, agent on cuda:2; with 2, TTS and ASR share cuda:0 and the agent
has cuda:1; with 1, everything on cuda:0; with none, the CPU.
"""

from __future__ import annotations

from rtchat.configs import ConfigError
from rtchat.configs.schema import Config

MODEL_NODES = ("tts", "asr", "agent")


def cuda_device_count() -> int:
    """Visible CUDA devices; 0 when torch is not installed or has no CUDA."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def auto_device(node: str, n_gpus: int) -> str:
    if n_gpus <= 0:
        return "cpu"
    if n_gpus == 1:
        return "cuda:0"
    if n_gpus == 2:
        return {"tts": "cuda:0", "asr": "cuda:0", "agent": "cuda:1"}[node]
    return {"tts": "cuda:0", "asr": "cuda:1", "agent": "cuda:2"}[node]


def resolve_device(device: str, node: str) -> str:
    """A node's configured device as it will run: ``auto`` (a node started alone, without the
    launcher's placement) → what the placement rule gives ``node`` on this machine's GPUs."""
    if device != "auto":
        return device
    return auto_device(node, cuda_device_count())


def place(cfg: Config, n_gpus: int) -> dict[str, str]:
    """Node → concrete device, or ConfigError naming a device this machine does not have."""
    placement = {}
    for node in MODEL_NODES:
        requested = getattr(cfg, node).device
        if requested == "auto":
            placement[node] = auto_device(node, n_gpus)
            continue
        if requested.startswith("cuda:") and int(requested[5:]) >= n_gpus:
            allowed = ", ".join(["cpu", "auto"] + [f"cuda:{i}" for i in range(n_gpus)])
            raise ConfigError(
                f"{node}.device: {requested} does not exist on this machine "
                f"({n_gpus} CUDA device(s) visible); allowed: {allowed}"
            )
        placement[node] = requested
    return placement


def needs_gpu_count(cfg: Config) -> bool:
    """Whether placing this config needs to ask torch how many GPUs there are."""
    return any(getattr(cfg, node).device != "cpu" for node in MODEL_NODES)
