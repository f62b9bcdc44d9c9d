"""The one atomic write (common/files.py): old or new content, never a mix; the usual mode."""

from __future__ import annotations

import os
import stat

import pytest

from rtchat.common.files import replacing, write_atomic


def _usual_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_atomic_write_replaces_the_file_with_the_usual_mode(tmp_path):
    target = tmp_path / "out" / "config.yaml"
    write_atomic(target, "a: 1\n")
    write_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert stat.S_IMODE(target.stat().st_mode) == _usual_mode()
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_any_writer_gets_a_path_and_the_result_has_the_usual_mode(tmp_path):
    target = tmp_path / "a" / "b.bin"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and stat.S_IMODE(tmp.stat().st_mode) == _usual_mode()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == _usual_mode()
