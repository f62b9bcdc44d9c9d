"""Installation layout and the command-line surface."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rtchat

ROOT = Path(__file__).resolve().parents[1]


def rtchat_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtchat.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_wheel_installs_everything_under_the_rtchat_namespace_only(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("rtchat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("rtchat-")}
    assert top == {"rtchat"}
    for expected in ("rtchat/launcher.py", "rtchat/cli.py", "rtchat/bus/wire.py", "rtchat/nodes/logger.py",
                     "rtchat/configs/cpu.yaml", "rtchat/configs/gpu.yaml", "rtchat/datasets/__init__.py",
                     "rtchat/train/__init__.py", "rtchat/evals/__init__.py", "rtchat/ui/__init__.py",
                     "rtchat/nodes/agent/kernels.cpp"):
        assert expected in names
    assert "rtchat/setup.py" not in names
    assert not any(n.startswith("rtchat/tests/") for n in names)


def test_the_editable_install_maps_folders_into_the_namespace():
    import rtchat.bus.wire
    import rtchat.launcher

    assert Path(rtchat.bus.wire.__file__).resolve() == ROOT / "bus" / "wire.py"
    assert Path(rtchat.launcher.__file__).resolve() == ROOT / "launcher.py"


def test_version_and_help():
    out = rtchat_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rtchat {rtchat.__version__}"
    out = rtchat_cli("--help")
    assert out.returncode == 0
    for command in ("run", "config", "log", "replay", "bench", "keys"):
        assert command in out.stdout


def test_launcher_script_and_rtchat_run_share_their_options():
    a = subprocess.run([sys.executable, str(ROOT / "launcher.py"), "--help"], capture_output=True, text=True, timeout=60)
    b = rtchat_cli("run", "--help")
    assert a.returncode == b.returncode == 0
    options = lambda text: sorted(w for w in text.split() if w.startswith("--"))  # noqa: E731
    assert options(a.stdout) == options(b.stdout)


def test_unknown_command_is_a_usage_error():
    out = rtchat_cli("fly")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_a_missing_install_skips_locally_and_fails_under_ci(monkeypatch):
    from conftest import missing_install

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs chromium"):
        missing_install("needs chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs chromium -- scripts/test.sh should have installed it"):
        missing_install("needs chromium")
