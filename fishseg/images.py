"""Image files checked before they are decoded: a regular file, a known format, a pixel cap.

A PNG of a few hundred KB can declare 20000x20000 pixels (1.2 GB decoded as RGB, several
GB once converted to float); OpenCV decodes up to 2^30 pixels without complaint. The
size is read from the header (Pillow reads headers without decoding) and checked
against ``data.max_image_pixels`` first. The file's first bytes must also be the magic
of the format Pillow found, so that OpenCV, which picks its decoder by those bytes,
decodes the same image whose size was checked (no polyglot files).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Pillow format name -> the magic numbers a file of that format starts with.
MAGIC = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}


def _header_size(path: Path) -> tuple[str, int, int]:
    """Pillow's format name and (width, height), read from the header only."""
    bomb_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the cap below is ours; Pillow's own one would hide the size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return str(image.format), *image.size
    except (UnidentifiedImageError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit


def check_image_file(path: Path, max_pixels: int, knob: str = "data.max_image_pixels") -> tuple[int, int]:
    """(width, height) of an image file, before decoding it; ValueError naming what is wrong.

    Refused: anything but a regular file (a FIFO would block the reader), empty files,
    formats other than PNG, JPEG, BMP and TIFF, and more than ``max_pixels`` pixels
    (``knob`` names the setting that raises the cap).
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size == 0:
        raise ValueError("zero-byte file")
    kind, width, height = _header_size(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if kind not in MAGIC or not head.startswith(MAGIC[kind]):
        raise ValueError(f"not a PNG, JPEG, BMP or TIFF image (found {kind}); convert it to PNG")
    if width * height > max_pixels:
        raise ValueError(
            f"{width}x{height} = {width * height / 1e6:.0f} Mpx, more than {knob} = "
            f"{max_pixels / 1e6:g} Mpx; shrink the image, or raise the cap if the file is trusted"
        )
    return width, height
