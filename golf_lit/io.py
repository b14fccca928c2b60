"""Files: atomic writes (a reader never sees a half-written file, a good file is never lost) and output-directory
checks made before work starts (a read-only path fails in one line, not after training)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write_fn`` into a temporary sibling, fsync it, then rename it over ``path``.

    If ``write_fn`` raises (or the process dies), the temporary file is removed and whatever was at
    ``path`` before is left untouched.

    Args:
        path: Destination file.
        write_fn: Called with a binary file object open for writing.

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_name, dest)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def require_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Check that directory ``path`` exists and is writable, or could be created; nothing is created.

    Args:
        path: The output directory.
        option: The setting it came from, for the message (e.g. ``trainer.default_root_dir``).

    Raises:
        ValueError: One line naming ``option`` and the path, and what is wrong with it.
    """
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists():  # the nearest existing ancestor decides whether p can be created
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option}: cannot create directory {str(p)!r}: {str(probe)!r} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == p else f"cannot be created ({str(probe)!r} is not writable)"
        raise ValueError(f"{option}: output directory {str(p)!r} {what}")
    return p


LOCK_SUFFIX = ".golf-lit.lock"


class FolderInUse(ValueError):
    """Another live golf-lit process holds the lock on an output folder; the message names both."""


class FolderLock:
    """An exclusive lock on an output folder, held by this process until :meth:`release` (or exit).

    The lock is a sibling file ``<parent>/.<name>.golf-lit.lock`` holding the owner's pid, locked with
    ``fcntl.flock``: the kernel drops the lock when its process dies, however it dies, so a lock file left behind by
    a dead process is stale and simply taken over. Being a sibling, the lock survives the folder being built aside
    and renamed into place (``data tokenize``), and locking creates nothing inside the folder. The file is removed
    on release. A second writer gets :class:`FolderInUse` naming the folder, the option and the pid that holds it.

    Example::

        with FolderLock(out_dir, "--out"):
            ...  # write into out_dir
    """

    def __init__(self, folder: str | os.PathLike, option: str) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.option = option
        self.path = self.folder.parent / f".{self.folder.name}{LOCK_SUFFIX}"
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> FolderLock:
        import fcntl

        if self._fd is not None:
            return self
        missing = self.path.parent
        self._created = []
        while not missing.exists():  # remembered, so a release leaves no empty folders behind
            self._created.append(missing)
            missing = missing.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
                raise FolderInUse(
                    f"{self.option}: {str(self.folder)!r} is in use by another golf-lit process (pid {holder}, "
                    f"lock {str(self.path)!r}); wait for it to finish or choose another folder"
                ) from None
            # The file may have been unlinked by its previous owner between our open and our flock: lock the
            # file that is at the path now, or try again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        for folder in self._created:  # innermost first; only the ones still empty
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
