"""The agent adapter the repository carries: its manifest, its recipe, and that it loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtchat.configs.models import SHIPPED_ADAPTER

MANIFEST = SHIPPED_ADAPTER / "manifest.json"


def rtchat(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtchat.cli", *args], capture_output=True, text=True, timeout=timeout)


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


def test_the_manifest_records_how_the_adapter_was_made():
    manifest = json.loads(MANIFEST.read_text())
    assert {"data_command", "train_command", "data_sha256", "git_commit", "metrics", "base"} <= set(manifest)
    assert manifest["train_command"][0] == "train" and manifest["data_command"][:2] == ["data", "synthetic"]
    assert {"f1", "f1_after_pause", "auc"} <= set(manifest["metrics"]["embedded"])
    size = sum(p.stat().st_size for p in SHIPPED_ADAPTER.iterdir())
    assert size <= 20 * 2**20


@pytest.mark.slow
@pytest.mark.model
def test_the_manifest_commands_still_run(tmp_path):
    manifest = json.loads(MANIFEST.read_text())
    data = rtchat(*with_option(manifest["data_command"], "--out", str(tmp_path / "data")), "--max-dialogues", "40")
    assert data.returncode == 0, data.stderr
    train_argv = with_option(manifest["train_command"], "--data", str(tmp_path / "data"))
    train_argv = with_option(with_option(train_argv, "--out", str(tmp_path / "adapter")), "--max-steps", "1")
    train = rtchat(*train_argv)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


@pytest.mark.model
def test_the_cpu_profile_agent_loads_base_plus_shipped_adapter_and_talks():
    from rtchat.configs import load
    from rtchat.nodes.agent.lm import load_lm

    cfg = load("cpu").agent
    assert cfg.adapter == "embedded"
    lm = load_lm(cfg)
    out = lm.generate(
        "Participants: S1 (name: Sam, age: unknown, sex: male), S2 (name: Ava, age: unknown, sex: female); "
        "Transcript: S1: hi how are you doing today (0.4)",
        7,
    )
    assert 1 <= out.n_tokens <= 7 and out.text.strip()


def test_embedded_v1_is_the_pinned_first_adapter_and_refuses_other_files(tmp_path, monkeypatch):
    import shutil

    from rtchat.configs import models as model_paths
    from rtchat.configs.checksums import verify_sums
    from rtchat.nodes.agent.loading import LoadError, v1_adapter

    assert v1_adapter() == model_paths.V1_ADAPTER and verify_sums(v1_adapter(), fix="")
    other = shutil.copytree(model_paths.V1_ADAPTER, tmp_path / "retrained")
    (other / "SHA256SUMS").write_text((other / "SHA256SUMS").read_text().replace("d86ce", "00000"))
    monkeypatch.setattr(model_paths, "V1_ADAPTER", other)
    with pytest.raises(LoadError, match="embedded-v1: .* no longer holds the pinned adapter"):
        v1_adapter()
