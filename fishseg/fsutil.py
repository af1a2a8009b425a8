"""Atomic file and directory writes: an output appears complete or not at all."""

from __future__ import annotations

import contextlib
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
