"""herd.run_dir: atomic writes leave the old file and no litter when they fail; manifests decide skip or redo."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import stat
import warnings
from pathlib import Path

import pytest

from herd import run_dir
from herd.run_dir import AtomicFile, atomic_open, atomic_path, read_manifest, write_json, write_manifest, write_text


def crash_mid_write(monkeypatch, path: Path) -> None:
    """From now on, writing `path` (or a temporary file beside it named after it) stops half-way with an OSError,
    as a crash would."""
    real_open = io.open

    def aimed_at(file) -> bool:
        file = Path(file) if isinstance(file, str | os.PathLike) else None
        return file is not None and file.parent == path.parent and path.name in file.name

    def open_that_crashes(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        if aimed_at(file) and set(mode) & set("wax"):
            write = opened.write

            def half_then_crash(data):
                write(data[: len(data) // 2])
                opened.flush()
                raise OSError(f"simulated crash while writing {file}")

            opened.write = half_then_crash
        return opened

    monkeypatch.setattr(io, "open", open_that_crashes)
    monkeypatch.setattr(builtins, "open", open_that_crashes)


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text(path, "old")
    write_text(path, "new")
    assert path.read_text() == "new"
    assert _files(path.parent) == ["a.txt"]


def test_write_failing_half_way_keeps_old_file_and_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    write_json(path, {"v": 1})
    crash_mid_write(monkeypatch, path)
    with pytest.raises(OSError, match="simulated crash"):
        write_json(path, {"v": 2, "padding": "x" * 100})
    assert json.loads(path.read_text()) == {"v": 1}
    assert _files(tmp_path) == ["m.json"]
    monkeypatch.undo()
    monkeypatch.setattr(run_dir.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash before rename")))
    with pytest.raises(OSError, match="crash before rename"):
        write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert _files(tmp_path) == ["m.json"]


def test_streamed_writer_that_raises_leaves_nothing(tmp_path):
    path = tmp_path / "rows.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"a": 1}\n')
            raise RuntimeError("interrupted")
    assert _files(tmp_path) == []
    with atomic_open(path) as f:
        f.write('{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert _files(tmp_path) == ["rows.jsonl"]


def test_atomic_path_for_libraries_that_write_a_path(tmp_path):
    path = tmp_path / "w.bin"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_bytes(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _files(tmp_path) == ["w.bin"]


def test_atomic_file_commits_or_discards(tmp_path):
    kept, dropped = AtomicFile(tmp_path / "kept"), AtomicFile(tmp_path / "dropped")
    kept.tmp.write_text("k")
    dropped.tmp.write_text("d")
    assert _files(tmp_path) == sorted([dropped.tmp.name, kept.tmp.name])  # nothing under the final names yet
    assert kept.commit() == tmp_path / "kept"
    dropped.discard()
    assert _files(tmp_path) == ["kept"] and (tmp_path / "kept").read_text() == "k"


def test_atomic_open_refuses_append(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_manifest_finished_with_same_config(tmp_path):
    path = tmp_path / "manifest.json"
    assert read_manifest(path, {"lr": 1}) is None  # nothing written yet: run, no warning
    written = write_manifest(path, {"stage": "s", "config": {"lr": 1}, "steps": 3})
    assert written["complete"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_manifest(path, {"lr": 1}) == written


def test_manifest_of_another_config_is_not_finished_and_says_nothing(tmp_path):
    """A changed config is the user's choice: the stage runs again without a warning (a CLI error stays one line)."""
    path = tmp_path / "speedrun.json"
    write_manifest(path, {"chain": "abc"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_manifest(path, "xyz", key="chain") is None
    assert read_manifest(path, "abc", key="chain") is not None


@pytest.mark.parametrize("text", ['{"complete": true, "conf', "[1, 2]", '{"config": {"lr": 1}}', "\xff\xfe"])
def test_unreadable_or_incomplete_manifest_is_not_finished(tmp_path, text):
    path = tmp_path / "manifest.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.warns(UserWarning, match="manifest.json"):
        assert read_manifest(path, {"lr": 1}) is None


def test_a_filesystem_that_cannot_sync_directories_still_gets_its_files(tmp_path, monkeypatch):
    """CIFS and some FUSE mounts answer EINVAL to fsync on a directory: the write goes on (the rename is atomic)."""
    real_fsync = os.fsync

    def no_directory_sync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_directory_sync)
    write_json(tmp_path / "out.json", {"a": 1})
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
