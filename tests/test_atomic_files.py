"""platform/atomic_files.write_atomic, robofleet's one atomic writer: old file or new file, never a part."""
from __future__ import annotations

import os
import threading

import pytest

from robofleet.platform import atomic_files
from robofleet.platform.atomic_files import write_atomic


def test_it_writes_text_and_bytes_and_leaves_no_temporary_file(tmp_path):
    assert write_atomic(tmp_path / "a.txt", "héllo\r\nworld\n") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_bytes() == "héllo\r\nworld\n".encode()  # UTF-8, newlines as given
    write_atomic(str(tmp_path / "a.txt"), b"\x89PNG")
    assert (tmp_path / "a.txt").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                 fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), replace(a, b)))
    write_atomic(tmp_path / "summary.json", "{}")
    assert events[:2] == [("fsync", False), ("replace", str(tmp_path / "summary.json"))]
    assert events[2:] == [("fsync", True)], "then the directory, so the rename survives a crash"


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "spec.toml"
    target.write_text("old")

    def broken(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


def test_a_new_file_gets_the_default_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_atomic(tmp_path / "report.md", "x")
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o666 & ~umask


def test_parallel_writers_never_share_a_temporary_file(tmp_path, monkeypatch):
    """Workers of one node write the same LIBERO stamp at once: each through its own temporary name."""
    names, start = [], threading.Barrier(8)
    opened = os.open

    def recording_open(path, flags, *mode):
        if str(path).endswith(".tmp"):
            names.append(str(path))
            start.wait(timeout=10)  # all eight have drawn their name before any file exists
        return opened(path, flags, *mode)

    monkeypatch.setattr(atomic_files.os, "open", recording_open)
    texts = [f"writer {i}\n" * 1000 for i in range(8)]
    threads = [threading.Thread(target=write_atomic, args=(tmp_path / "stamp.json", t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(names)) == 8
    assert (tmp_path / "stamp.json").read_text() in texts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stamp.json"]


def test_the_run_directory_and_the_reports_write_through_it():
    from robofleet.platform import report_files, results

    assert report_files.write_atomic is write_atomic and results.write_atomic is write_atomic
    assert report_files.read_rows is results.read_rows, "one reader of episodes.csv"
    assert not hasattr(results.RunStore, "write_json") and not hasattr(results.RunStore, "write_text")
