"""Atomic file and directory writes: an output appears complete or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fishseg.errors import FishsegError

if TYPE_CHECKING:
    import numpy as np


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

    On any error the temp directory is removed and whatever was at ``path`` stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists() or path.is_symlink():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


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
