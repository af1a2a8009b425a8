"""Tiny datasets on disk for the source tests: real image files, real archives."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import cv2
import numpy as np

SHAPE = (12, 16)  # height, width: tiny, so that tests stay fast


@functools.cache
def image_bytes(value: int, ext: str = ".png", mask: bool = False) -> bytes:
    """An encoded 16x12 image (3 channels) or mask (0/255), distinct per ``value``."""
    if mask:
        pixels = np.zeros(SHAPE, np.uint8)
        pixels[2:10, 3 : 3 + value % 10 + 2] = 255
    else:
        rng = np.random.default_rng(value)
        pixels = rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    return buf.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fish_dataset(root: Path, species: dict[str, int], *, levels: int = 2, ext: str = ".png") -> Path:
    """The archive's layout under ``root`` with ``levels`` Fish_Dataset folders (2, 1 or 0)."""
    base = root.joinpath(*["Fish_Dataset"] * levels)
    for s_index, (name, count) in enumerate(species.items()):
        for i in range(count):
            value = 100 * s_index + i
            write(base / name / name / f"{i:05d}{ext}", image_bytes(value, ext))
            write(base / name / f"{name} GT" / f"{i:05d}{ext}", image_bytes(value, ext, mask=True))
    return root


def generic_dataset(root: Path, species: dict[str, int] | None, count: int = 3, *, ext: str = ".png") -> Path:
    """``images/`` + ``masks/``: per species subfolder, or flat when ``species`` is None."""
    groups = species or {"": count}
    for s_index, (name, n) in enumerate(groups.items()):
        for i in range(n):
            value = 100 * s_index + i
            sub = Path(name) if name else Path()
            write(root / "images" / sub / f"img_{i}{ext}", image_bytes(value, ext))
            write(root / "masks" / sub / f"img_{i}.png", image_bytes(value, ".png", mask=True))
    return root


def zip_tree(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip every file under ``folder`` (with directory entries, as common tools write them)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            name = prefix + path.relative_to(folder).as_posix()
            if path.is_dir():
                zf.writestr(name + "/", b"")
            else:
                zf.write(path, name)
    return zip_path


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: file bytes, or None for a directory."""
    return {
        p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


def make_good_raw(raw_dir: Path) -> dict[str, bytes | None]:
    """A previous, good ``work/raw`` (one species, two pairs); returns its snapshot."""
    fish_dataset(raw_dir, {"Trout": 2})
    (raw_dir / "marker.txt").write_text("previous run\n")
    return snapshot(raw_dir)


def assert_untouched(raw_dir: Path, before: dict[str, bytes | None]) -> None:
    """``raw_dir`` is byte-for-byte as before, and nothing else was left beside it."""
    assert snapshot(raw_dir) == before
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == [raw_dir.name]
