"""Atomic writes: all or nothing, never a partial file, take files never overwritten."""

from __future__ import annotations

import os

import pytest

from tui_app import files


def test_atomic_write_returns_sha256_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.wav"
    digest = files.atomic_write(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert digest == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert [p.name for p in target.parent.iterdir()] == ["a.wav"]


def test_crash_before_rename_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "a.wav"
    target.write_bytes(b"old take")

    def boom(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        files.atomic_write(target, b"new take")
    assert target.read_bytes() == b"old take"
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "a.wav"
    target.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        files.atomic_write(target, b"y", overwrite=False)
    assert target.read_bytes() == b"x"


def test_free_take_path_skips_orphans(tmp_path):
    (tmp_path / "k.take1.wav").write_bytes(b"orphan from a crash")
    path, number = files.free_take_path(tmp_path, "k", 1, ".wav")
    assert number == 2 and path.name == "k.take2.wav"


def test_remove_temp_files(tmp_path):
    keep = tmp_path / "a.take1.wav"
    keep.write_bytes(b"x")
    tmp = files.temp_name(tmp_path / "b.take1.wav")
    tmp.write_bytes(b"partial")
    assert files.remove_temp_files(tmp_path) == [tmp]
    assert keep.exists() and not tmp.exists()
