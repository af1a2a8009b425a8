"""Atomic file and directory writes: an output appears complete or not at all."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fishseg.errors import FishsegError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


# Errors that mean "the disk (or this process's share of it) is full".
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"write:{path.name}")  # the data on disk, not yet in place
        # mkstemp creates 0600 files; give outputs the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Stable JSON (sorted keys, 2-space indent, trailing newline) so diffs stay small."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (H,W,3) or single-channel (H,W) uint8 image."""
    import cv2  # heavy: only the stages that write images pay for it

    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise FishsegError(f"cannot encode a {image.dtype} image of shape {image.shape} as PNG")
    return data.tobytes()


def atomic_write_png(path: Path, image: np.ndarray) -> None:
    """``image`` (RGB or single-channel uint8) as a PNG file, written atomically."""
    atomic_write_bytes(path, encode_png(image))


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp directory beside ``path``; on success it replaces ``path``.

    On any error the temp directory is removed and whatever was at ``path`` stays. A
    process killed outright (SIGKILL, out of memory) cannot clean up: the next
    ``atomic_dir`` on ``path`` does it (:func:`recover_dir`). The temp directory is locked
    while its writer lives, so only abandoned ones are removed. One writer per ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    lock = _lock(tmp)
    try:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(tmp, path)
    finally:
        if lock is not None:
            os.close(lock)


def _lock(folder: Path, wait: bool = True) -> int | None:
    """An fd holding an exclusive flock on ``folder`` (released when the process dies, even by
    SIGKILL); ``None`` when it is held elsewhere (``wait=False``) or the filesystem has no locks."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None  # gone, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.ENOLCK, errno.EBADF, errno.EOPNOTSUPP):
            raise
        return None
    return fd


def _old_copy(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_dir(path: Path) -> None:
    """Clean up after an ``atomic_dir`` on ``path`` that was killed: remove its abandoned temp
    directories, and put the old copy back if the kill came between the two renames of
    :func:`_swap_in`'s fallback (``path`` gone, only ``.<name>.old`` left)."""
    path = Path(path)
    writer_alive = False
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not stale.is_dir() or stale.is_symlink():
            continue
        fd = _lock(stale, wait=False)
        if fd is None:
            writer_alive = True  # or a filesystem without locks: leave it
            continue
        log.warning("removing %s, left by an interrupted write of %s", stale, path)
        shutil.rmtree(stale, ignore_errors=True)
        os.close(fd)
    old = _old_copy(path)
    if writer_alive or not old.is_dir():
        return
    if path.exists() or path.is_symlink():
        shutil.rmtree(old, ignore_errors=True)  # the swap was done; only the clean-up was cut
    else:
        log.warning("restoring %s from %s: its replacement was interrupted", path, old)
        os.replace(old, path)


def _swap_in(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path``: one atomic exchange where the OS has it, else two renames."""
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old copy; if cut here, recover_dir removes it
    else:
        old = _old_copy(path)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)  # a kill between these two renames is undone by recover_dir
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any | None:
    """glibc's ``renameat2`` (Linux, glibc 2.28+), or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (``renameat2(RENAME_EXCHANGE)``); ``False`` where the
    kernel or filesystem cannot, so the caller falls back."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise before writing ``needed`` bytes under ``folder`` when the disk has less free."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FishsegError(
            f"{what} needs {needed / 1e9:.2f} GB in {folder}, which has {free / 1e9:.2f} GB free: "
            "free some disk space and run again"
        )


def write_error(path: Path, exc: OSError, fix: str = "") -> FishsegError:
    """A one-line error for a failed write of ``path``: the reason and what to do."""
    hint = (
        "free some disk space" if exc.errno in DISK_FULL else "check that the folder exists and is writable"
    )
    return FishsegError(f"cannot write {path}: {exc.strerror or exc}; {fix or hint}, then run again")


_FAULT_PASSES: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A named point where a test can make this process die as a crash would; inert by default.

    ``FISHSEG_FAULT=<name>[@<n>][=<signal>]`` sends the process ``<signal>`` (``KILL``, the
    default, as the kernel's out-of-memory killer would; ``TERM``; ``INT``) the n-th time
    (default: the first) it passes ``<name>``. Points: ``write:<file name>`` in
    :func:`atomic_write_bytes` (the data on disk, the rename not done), and ``step`` in the
    training loop (between the backward pass and the optimizer step). Recovery from real
    kills at these points is what the tests check; nothing else sets the variable.
    """
    spec = os.environ.get("FISHSEG_FAULT")
    if not spec:
        return
    spec, _, signal_name = spec.partition("=")
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _FAULT_PASSES[name] = _FAULT_PASSES.get(name, 0) + 1
    if _FAULT_PASSES[name] == int(nth or 1):
        import signal

        os.kill(os.getpid(), signal.Signals[f"SIG{signal_name or 'KILL'}"])
