"""The one atomic file write of robofleet: a reader (or the next process after a crash) sees the old
file or the new one, never a part of either.

A seam module (.importlinter, contract "seams"): it imports nothing of robofleet, so the platform,
the env adapters (LIBERO's config, asset manifest and stamp) and the policies may all use it.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (a str as UTF-8) to `path` atomically and durably; returns `path` as a Path.

    The bytes go to a temporary file in the same directory (the same filesystem: the rename is atomic)
    under a unique name (parallel writers, threads or processes, never share one), are flushed and
    fsynced, and the file is renamed over `path` (os.replace); the directory is then fsynced so the
    rename itself survives a crash. The new file gets the default mode (0o666 less the umask), as a
    plain open() would. On any failure the temporary file is removed and the old `path` is untouched.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:  # another writer drew the same name: draw again
            continue
        break
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; a filesystem that cannot fsync a directory is let be."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
