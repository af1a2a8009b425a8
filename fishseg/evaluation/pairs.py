"""Image/mask pairs of two folders, matched by their path relative to each folder.

``images/Sea Bass/00005.jpg`` pairs with ``masks/Sea Bass/00005.png`` (any image suffix
on either side), and ``images/a.png`` with ``masks/a.png`` in flat folders. The folder
an image is in, relative to ``images/``, is its species (empty in a flat folder).
Everything that does not pair up is a :class:`Problem`, all of them listed at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fishseg.dataset.index import Problem
from fishseg.errors import FishsegError
from fishseg.sources.layout import IMAGE_SUFFIXES


@dataclass(frozen=True)
class LabelledPair:
    """An image, its mask, and its name: the relative path without suffix (``Sea Bass/00005``)."""

    name: str
    image: Path
    mask: Path

    @property
    def species(self) -> str:
        """The folder the image is in, relative to the images folder ("" at its top)."""
        parent = PurePosixPath(self.name).parent.as_posix()
        return "" if parent == "." else parent


@dataclass
class FolderPairs:
    pairs: list[LabelledPair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def files_by_name(folder: Path, skip: Path | None = None) -> dict[str, list[Path]]:
    """Image files under ``folder`` (recursive) by relative path without suffix; none under ``skip``."""
    skip = skip.resolve() if skip is not None else None
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    return found


def _inside(folder: Path, other: Path) -> bool:
    return folder.resolve().is_relative_to(other.resolve())


def _one(name: str, files: list[Path], what: str, problems: list[Problem]) -> Path | None:
    if len(files) == 1:
        return files[0]
    listed = ", ".join(p.name for p in files)
    problems.append(Problem(f"ambiguous {what}", str(files[0].parent / name), f"{listed}; keep one"))
    return None


def find_pairs(images_dir: Path, masks_dir: Path) -> FolderPairs:
    """Pair every image under ``images_dir`` with the mask at the same relative path under ``masks_dir``."""
    for option, folder in (("IMAGES", images_dir), ("MASKS", masks_dir)):
        if not folder.is_dir():
            raise FishsegError(f"{option} {folder}: not a folder; give the folder of the {option.lower()}")
    if images_dir.resolve() == masks_dir.resolve():
        raise FishsegError(f"IMAGES and MASKS are one folder ({images_dir}); give the masks' own folder")
    # One folder may hold the other (images/masks/...): its files belong to that other side.
    images = files_by_name(images_dir, skip=masks_dir if _inside(masks_dir, images_dir) else None)
    masks = files_by_name(masks_dir, skip=images_dir if _inside(images_dir, masks_dir) else None)
    result = FolderPairs()
    for name in sorted(images):
        image = _one(name, images[name], "image", result.problems)
        if name not in masks:
            fix = f"add {masks_dir / name}.png or remove the image"
            result.problems.append(Problem("image without mask", str(images[name][0]), fix))
            continue
        mask = _one(name, masks[name], "mask", result.problems)
        if image is not None and mask is not None:
            result.pairs.append(LabelledPair(name, image, mask))
    for name in sorted(set(masks) - set(images)):
        fix = f"add the image {images_dir / name}.<ext> or remove the mask"
        result.problems.append(Problem("mask without image", str(masks[name][0]), fix))
    return result
