"""The layer contract (``.importlinter``, explained in docs/architecture.md) holds: imports point
down the layers, node packages do not import each other, pure cores do not import the shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import missing_install

ROOT = Path(__file__).resolve().parents[1]


def test_imports_keep_the_layer_contract():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.is_file():
        missing_install(f"needs import-linter ({lint_imports} not found)")
    out = subprocess.run([str(lint_imports), "--no-cache", "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "3 kept" in out.stdout
