"""Bring the dataset from ``data.source`` into ``work/raw``, in one canonical layout.

Sources: ``synthetic`` (the built-in generator), ``realfish`` (the 252 real photos shipped
in ``datasets/realfish``), ``kaggle`` (the Kaggle API), or a path
to a ``.zip``/``.tar(.gz)`` archive or a folder. Whatever comes in, ``work/raw`` ends up
as the Kaggle archive's layout (:mod:`fishseg.sources.layout`)::

    Fish_Dataset/Fish_Dataset/<Species>/<Species>/<name>.png        images
    Fish_Dataset/Fish_Dataset/<Species>/<Species> GT/<name>.png     masks

Accepted input layouts, found anywhere inside the source (one dataset per source):

- the archive's: ``Fish_Dataset/Fish_Dataset/<Species>/<Species>/`` with masks in
  ``<Species>/<Species> GT/``, also with one ``Fish_Dataset`` level or none;
- generic: ``images/`` + ``masks/`` with matching file stems, either flat (species
  ``unknown``) or one subfolder per species (``images/<species>/``, ``masks/<species>/``).

Image types: png, jpg, jpeg, bmp, tif, tiff (any case). PNG files are copied byte for
byte; other types are converted to PNG (lossless, pixels as stored: no EXIF rotation),
so ``work/raw`` holds one ``<stem>.png`` per image and per mask, a mask named as its
image. A file that cannot be decoded for conversion is kept as it is, with a warning,
for the split stage to report. ``NA_Fish_Dataset`` (photos without masks), hidden files
and ``__MACOSX`` are ignored. Pixel content is not checked here: the split stage does.

``work/raw`` is replaced only when everything succeeded: the work happens in a temp
folder beside it, renamed into place at the end; on any error the previous ``work/raw``
stays as it was and the temp folder is removed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_dir, check_free_space
from fishseg.images import check_image_file
from fishseg.params import DataParams
from fishseg.paths import EMBEDDED_SOURCES, source_path
from fishseg.progress import progress_bar
from fishseg.sources.archive import Limits, SourceTree, open_tree
from fishseg.sources.layout import (
    DATASET_DIR,
    IMAGE_SUFFIXES,
    MASK_SUFFIX,
    canonical,
    folded,
    image_dir,
    mask_dir,
)

log = logging.getLogger(__name__)

UNKNOWN_SPECIES = "unknown"
NA_DIR = "NA_Fish_Dataset"
ACCEPTED_LAYOUTS = (
    "accepted layouts: Fish_Dataset/Fish_Dataset/<Species>/<Species>/<name>.png with masks in "
    "<Species>/<Species> GT/<name>.png (also with one Fish_Dataset level or none), or images/ + masks/ "
    "with matching file names, flat or with one folder per species (images/<species>/, masks/<species>/); "
    "image types: " + ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
)
_STAGING = ".staging"
# Room kept free beyond what the extraction itself needs.
_DISK_MARGIN = 64 << 20


@dataclass
class Found:
    """The dataset found in a source: member paths by species and stem."""

    layout: str  # "fish_dataset" | "images_masks"
    root: str  # where in the source ("" = top level)
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    masks: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, kind: str, species: str, rel: str) -> None:
        """Record a file under its NFC species and stem; refuse names that would share one file."""
        species = self._species(label, canonical(species), rel)
        table = (self.images if kind == "image" else self.masks).setdefault(species, {})
        stem = canonical(PurePosixPath(rel).stem)
        clash = next((other for other in table if folded(other) == folded(stem)), None)
        if clash is not None:
            same = PurePosixPath(table[clash]).stem == PurePosixPath(rel).stem
            how = "" if same else " (they differ only in case or Unicode normalisation)"
            raise FishsegError(
                f"{label}: two {kind}s named {stem!r} for species {species!r}{how}: {table[clash]} and {rel}; "
                "keep one of them (work/raw holds one <name>.png per image and per mask)"
            )
        table[stem] = rel

    def _species(self, label: str, species: str, rel: str) -> str:
        for other in set(self.images) | set(self.masks):
            if other != species and folded(other) == folded(species):
                raise FishsegError(
                    f"{label}: species folders {other!r} and {species!r} differ only in case or Unicode "
                    f"normalisation (seen at {rel}); rename one so that each species has one folder"
                )
        return species

    def pairs(self) -> dict[str, int]:
        species = sorted(set(self.images) | set(self.masks))
        return {s: len(set(self.images.get(s, {})) & set(self.masks.get(s, {}))) for s in species}


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def detect(files: list[str], label: str) -> Found:
    """Find the one dataset in ``files`` (relative POSIX paths); raise if none or several."""
    candidates: dict[tuple[str, str], Found] = {}
    na_files = other_files = 0
    for rel in files:
        parts = tuple(PurePosixPath(rel).parts)
        if _ignored(parts):
            continue
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
            other_files += 1
            continue
        if NA_DIR in parts[:-1]:
            na_files += 1
            continue
        hit = _classify(parts)
        if hit is None:
            other_files += 1
            continue
        layout, root, kind, species = hit
        found = candidates.setdefault((layout, root), Found(layout=layout, root=root))
        found.add(label, kind, species, rel)

    with_pairs = [f for f in candidates.values() if sum(f.pairs().values())]
    if not with_pairs:
        seen = f"{sum(len(t) for f in candidates.values() for t in f.images.values())} images and " + (
            f"{sum(len(t) for f in candidates.values() for t in f.masks.values())} masks in a known layout"
        )
        raise FishsegError(f"no image/mask pairs found in {label} ({seen}); {ACCEPTED_LAYOUTS}")
    if len(with_pairs) > 1:
        where = ", ".join(sorted(f"{f.root or '.'} ({f.layout})" for f in with_pairs))
        raise FishsegError(
            f"several datasets found in {label}: {where}; point data.source at the folder of the one to use"
        )
    found = with_pairs[0]
    ignored_roots = [f for f in candidates.values() if f is not found]
    if na_files:
        found.notes.append(f"{NA_DIR} ignored ({na_files} images without masks)")
    if ignored_roots:
        count = sum(len(t) for f in ignored_roots for table in (f.images, f.masks) for t in table.values())
        found.notes.append(f"{count} image files outside the dataset ignored")
    if other_files:
        found.notes.append(f"{other_files} other files ignored")
    return found


def _classify(parts: tuple[str, ...]) -> tuple[str, str, str, str] | None:
    """(layout, root, "image"|"mask", species) for a file in a known layout, else None."""
    if len(parts) >= 3:
        species, folder = parts[-3], parts[-2]
        if folder == species:
            return "fish_dataset", "/".join(parts[:-3]), "image", species
        if folder == species + MASK_SUFFIX:
            return "fish_dataset", "/".join(parts[:-3]), "mask", species
    kinds = {"images": "image", "masks": "mask"}
    if len(parts) >= 2 and parts[-2].lower() in kinds:
        return "images_masks", "/".join(parts[:-2]), kinds[parts[-2].lower()], UNKNOWN_SPECIES
    if len(parts) >= 3 and parts[-3].lower() in kinds:
        return "images_masks", "/".join(parts[:-3]), kinds[parts[-3].lower()], parts[-2]
    return None


def _materialize(
    tree: SourceTree, found: Found, out: Path, staging: Path, max_pixels: int, *, progress: bool
) -> dict[str, Any]:
    """Copy (and convert to PNG) the found files into ``out``'s canonical layout.

    Non-PNG files are first copied into ``staging`` (a scratch folder the caller removes).
    """
    staging.mkdir(parents=True, exist_ok=True)
    plan: dict[str, Path] = {}
    conversions: list[tuple[Path, Path]] = []
    for species in sorted(set(found.images) | set(found.masks)):
        for table, folder in (
            (found.images, image_dir(out, species)),
            (found.masks, mask_dir(out, species)),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            for stem, rel in table.get(species, {}).items():
                final = folder / f"{stem}.png"
                suffix = PurePosixPath(rel).suffix.lower()
                if suffix == ".png":
                    plan[rel] = final
                else:
                    staged = staging / f"{len(plan)}{suffix}"
                    plan[rel] = staged
                    conversions.append((staged, final))
    # Staged copies and their PNG conversions may coexist: count converted files twice.
    needed = sum(tree.size(rel) for rel in plan) + sum(
        tree.size(rel) for rel, dest in plan.items() if dest.parent == staging
    )
    check_free_space(out.parent, needed + _DISK_MARGIN, f"unpacking {tree.path}")
    tree.copy_out(plan, progress=progress)
    kept = _convert(conversions, max_pixels, progress=progress)
    notes = list(found.notes)
    if conversions:
        notes.append(f"{len(conversions) - len(kept)} files converted to PNG")
    if kept:
        notes.append(
            f"{len(kept)} files could not be decoded and were kept as they are: {', '.join(kept[:5])}"
        )
    return {
        "layout": found.layout,
        "root": found.root,
        "images": sum(len(t) for t in found.images.values()),
        "masks": sum(len(t) for t in found.masks.values()),
        "notes": notes,
    }


def _convert(conversions: list[tuple[Path, Path]], max_pixels: int, *, progress: bool) -> list[str]:
    """Write each staged non-PNG file as PNG; return the names of those kept unconverted.

    Files over the pixel cap are not decoded: they are kept as they are, for the split
    stage to report (or skip and count).
    """
    if not conversions:
        return []
    import cv2  # heavy import, only needed for non-PNG input

    kept: list[str] = []
    for staged, final in progress_bar(conversions, desc="to PNG", unit="file", enabled=progress):
        try:
            check_image_file(staged, max_pixels)
            # UNCHANGED keeps 16-bit depth and alpha, and the stored pixel order (EXIF ignored).
            pixels = cv2.imread(str(staged), cv2.IMREAD_UNCHANGED)
        except ValueError:
            pixels = None
        written = False
        if pixels is not None:
            try:
                written = bool(cv2.imwrite(str(final), pixels))
            except cv2.error:
                written = False
        if not written:
            # Keep the bytes under their own suffix: the split stage reports the file.
            keep = final.with_suffix(staged.suffix)
            final.unlink(missing_ok=True)
            shutil.move(staged, keep)
            log.warning("cannot decode %s for conversion to PNG; kept as is", keep)
            kept.append(keep.relative_to(final.parents[2]).as_posix())
        else:
            staged.unlink()
    return kept


def check_layout(raw_dir: Path) -> dict[str, int]:
    """Image/mask pairs per species in a canonical ``raw_dir``; raise if it holds none."""
    base = raw_dir / DATASET_DIR
    if not base.is_dir():
        raise FishsegError(f"{raw_dir}: no {DATASET_DIR.as_posix()} folder; run the download stage again")
    pairs: dict[str, int] = {}
    for species_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        species = species_dir.name
        stems = []
        for folder in (image_dir(raw_dir, species), mask_dir(raw_dir, species)):
            files = folder.iterdir() if folder.is_dir() else ()
            stems.append({p.stem for p in files if p.suffix.lower() in IMAGE_SUFFIXES})
        pairs[species] = len(stems[0] & stems[1])
    if not sum(pairs.values()):
        raise FishsegError(
            f"{raw_dir}: no image/mask pairs under {DATASET_DIR.as_posix()}; {ACCEPTED_LAYOUTS}"
        )
    return pairs


def _fetch_synthetic(data: DataParams, out: Path, *, progress: bool) -> dict[str, Any]:
    from fishseg.sources.synthetic import generate

    cfg = data.synthetic
    generate(
        out,
        photos_per_species=cfg.photos_per_species,
        copies_per_photo=cfg.copies_per_photo,
        width=cfg.width,
        height=cfg.height,
        seed=cfg.seed,
        progress=progress,
    )
    return {"source": "synthetic", "location": "synthetic", "layout": "fish_dataset", "root": "", "notes": []}


def _fetch_tree(
    tree: SourceTree, out: Path, staging: Path, max_pixels: int, *, progress: bool
) -> dict[str, Any]:
    found = detect(tree.files(), str(tree.path))
    log.info("found a %s layout in %s at %s", found.layout, tree.path, found.root or "the top level")
    return _materialize(tree, found, out, staging, max_pixels, progress=progress)


def _fetch_kaggle(
    data: DataParams, out: Path, staging: Path, creds: Any, *, progress: bool
) -> dict[str, Any]:
    from fishseg.sources import kaggle as kaggle_source
    from fishseg.sources.zipsource import ZipTree

    _, slug, _ = kaggle_source.parse_dataset(data.kaggle_dataset)
    download_dir = staging / "download"
    download_dir.mkdir(parents=True)
    zip_path = kaggle_source.download(
        creds,
        data.kaggle_dataset,
        download_dir / f"{slug}.zip",
        max_bytes=data.max_archive_bytes,
        retries=data.download_retries,
        backoff_s=data.download_backoff_s,
        timeout_s=data.download_timeout_s,
        progress=progress,
    )
    # From here on the download is a local zip like any other, with the same checks.
    try:
        tree = ZipTree(zip_path, Limits.of(data))
    except FishsegError as exc:
        raise FishsegError(
            f"the download of Kaggle dataset {data.kaggle_dataset} is unusable: {exc}"
        ) from None
    found = detect(tree.files(), f"Kaggle dataset {data.kaggle_dataset} ({zip_path.name})")
    return _materialize(tree, found, out, staging / "convert", data.max_image_pixels, progress=progress)


def fetch(data: DataParams, raw_dir: Path, *, root: Path | None = None, progress: bool = True) -> dict:
    """Bring the dataset from ``data.source`` into ``raw_dir`` in the canonical layout, atomically.

    Work happens in a temp folder beside ``raw_dir``, which replaces it only when
    everything succeeded and the layout check passed; on any failure the previous
    ``raw_dir`` is untouched and no temp folder remains. Returns a small summary:
    source kind and location, layout found, pairs per species, notes. A relative path
    in ``data.source`` and the embedded datasets (``realfish``) are found from ``root``
    (the project root; the current directory by default).
    """
    raw_dir = Path(raw_dir)
    source = data.source.strip()
    creds = None
    tree: SourceTree | None = None
    # Checks that need no output folder come first, so that a bad setting touches nothing.
    if source == "kaggle":
        from fishseg.sources.kaggle import authenticate, parse_dataset

        parse_dataset(data.kaggle_dataset)
        creds = authenticate()
    elif source != "synthetic":
        tree = open_tree(source_path(source, Path(root or Path.cwd())), Limits.of(data))

    with atomic_dir(raw_dir) as tmp:
        # Scratch space (download, files awaiting conversion) inside the temp folder, so
        # that it goes away with it on error; removed before the rename on success.
        staging = tmp / _STAGING
        if source == "synthetic":
            summary = _fetch_synthetic(data, tmp, progress=progress)
        elif source == "kaggle":
            summary = {"source": "kaggle", "location": data.kaggle_dataset}
            summary.update(_fetch_kaggle(data, tmp, staging, creds, progress=progress))
        else:
            assert tree is not None
            kind = source if source in EMBEDDED_SOURCES else tree.kind
            summary = {"source": kind, "location": str(tree.path)}
            summary.update(_fetch_tree(tree, tmp, staging, data.max_image_pixels, progress=progress))
        shutil.rmtree(staging, ignore_errors=True)
        summary["pairs"] = check_layout(tmp)
    total = sum(summary["pairs"].values())
    log.info(
        "%s: %d image/mask pairs, %d species (%s)%s",
        raw_dir,
        total,
        len(summary["pairs"]),
        summary["source"],
        "".join(f"; {note}" for note in summary.get("notes", [])),
    )
    return summary
