"""Where models live: the model cache, the agent's embedded base and the project's LoRA adapter.

Paths only — nothing here loads, converts or downloads a model. The cache is ``$RTCHAT_CACHE``
(default ``~/.cache/rtchat``); converted and merged agent models go under its ``models/``. The
``rtchat models`` command (``rtchat/models.py``) reports and installs what is found here.
"""

from __future__ import annotations

import os
from pathlib import Path

ADAPTER_NAME = "smollm2-135m-rtchat-lora"  # the project's LoRA adapter folder under the model cache
SHIPPED_ADAPTER = Path(__file__).resolve().parents[1] / "train" / "embedded" / ADAPTER_NAME  # carried by the repo
EMBEDDED_BASE = "embedded-base"  # what rtchat train and rtchat eval call the converted SmolLM2 base (embedded_dir)
EMBEDDED = "embedded"  # ... and that base with the project's adapter (rtchat eval)
EMBEDDED_V1 = "embedded-v1"  # ... and with the adapter shipped first (2026-11-26), pinned, so later runs can compare
MODEL_NAMES = (EMBEDDED, EMBEDDED_V1, EMBEDDED_BASE)  # the agent models rtchat eval takes by name
AGENT_BASE = "embedded:smollm2-135m"  # the base all three share (agent.model of the cpu profile)
# embedded-v1's adapter: today the shipped one. A new default adapter ships into a folder of its
# own; these files stay, and the sha256 of their SHA256SUMS pins them (checked at load).
V1_ADAPTER = SHIPPED_ADAPTER
V1_SUMS_SHA256 = "192cbf40117bf63403a5ad6b654518e226b38fa652e373d806f03602f8425b07"
WHISPER_PT = "models/whisper-tiny.en.pt"  # the default `rtchat models convert-whisper` output, under the cache root


def cache_root() -> Path:
    return Path(os.environ.get("RTCHAT_CACHE") or Path.home() / ".cache" / "rtchat")


def embedded_dir(name: str) -> Path:
    """The folder an embedded agent model (``embedded:NAME``) is converted into, once."""
    return cache_root() / "models" / name


def agent_adapter_dir() -> Path:
    """The project's adapter: one trained locally into the model cache wins over the shipped one."""
    local = cache_root() / "models" / ADAPTER_NAME
    if (local / "adapter_config.json").is_file() or not (SHIPPED_ADAPTER / "adapter_config.json").is_file():
        return local
    return SHIPPED_ADAPTER
