"""The split stage's work: index, validate, group, split, and write training arrays.

Each pair is decoded and resized exactly once here; training reads the resulting
arrays (``fishseg.dataset.arrays``) memory-mapped, with no image decoding on the hot path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from fishseg.dataset.arrays import save_split
from fishseg.dataset.grouping import group_ids
from fishseg.dataset.index import (
    MASK_FIX,
    DecodedPair,
    Problem,
    ScanResult,
    decode_pairs,
    make_ids,
    scan_pairs,
)
from fishseg.dataset.splitting import assign_splits
from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_dir, atomic_write_json, atomic_write_text, check_free_space, write_error
from fishseg.params import DataParams, SplitParams
from fishseg.paths import SPLITS, Paths

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["id", "species", "image", "mask", "width", "height", "fg_frac", "group", "split"]
MAX_LISTED_PROBLEMS = 30


def _problem_report(problems: list[Problem]) -> str:
    """The problems on one line (the first ``MAX_LISTED_PROBLEMS``; all are in data/validation.json)."""
    listed = "; ".join(str(p) for p in problems[:MAX_LISTED_PROBLEMS])
    if len(problems) > MAX_LISTED_PROBLEMS:
        listed += f"; ... and {len(problems) - MAX_LISTED_PROBLEMS} more (see data/validation.json)"
    return listed


def prepare(data: DataParams, split: SplitParams, paths: Paths, progress: bool = True) -> pd.DataFrame:
    """Build ``data/index.csv``, ``data/validation.json`` and ``data/prepared``; return the index.

    A write that fails (disk full) is one error naming the file; the previous outputs stay.
    """
    scan = scan_pairs(paths.raw_dir)
    try:
        return _prepare(scan, data, split, paths, progress)
    except OSError as exc:  # reads are checked pair by pair: what escapes is a failed write
        raise write_error(Path(exc.filename) if exc.filename else paths.prepared_dir, exc) from None


def _prepare(
    scan: ScanResult, data: DataParams, split: SplitParams, paths: Paths, progress: bool
) -> pd.DataFrame:
    problems = list(scan.problems)
    height, width = data.image_size
    n = len(scan.pairs)
    # The arrays of every pair (RGB + mask), then the same again split three ways.
    check_free_space(paths.prepared_dir.parent, 2 * max(n, 1) * height * width * 4, "data/prepared")

    with atomic_dir(paths.prepared_dir) as tmp:
        all_images = np.lib.format.open_memmap(
            tmp / "_images.npy", "w+", np.uint8, (max(n, 1), height, width, 3)
        )
        all_masks = np.lib.format.open_memmap(tmp / "_masks.npy", "w+", np.uint8, (max(n, 1), height, width))
        decoded = decode_pairs(scan.pairs, data.image_size, problems, data.max_image_pixels)
        rows, has_fish = [], []
        for item in tqdm(decoded, total=n, desc="decode+resize", unit="pair", disable=not progress):
            all_images[len(rows)], all_masks[len(rows)] = item.image, item.mask
            rows.append(_index_row(item, paths.root))
            has_fish.append(item.fg_frac > 0)  # not the rounded fraction: a few pixels count
        # Valid, but worth a look: an empty mask may be a photo without fish or a mask
        # whose fish were lost (an encoding that reads as background).
        empty = [row["mask"] for row, fish in zip(rows, has_fish, strict=True) if not fish]
        _report_problems(paths, data.on_invalid, n, len(rows), problems, empty)
        index = _index_frame(rows)
        images, masks = all_images[: len(index)], all_masks[: len(index)]
        index["group"] = group_ids(images, masks, index["species"].tolist(), threshold=split.group_threshold)
        index["split"] = assign_splits(
            index["species"],
            index["group"],
            val=split.val,
            test=split.test,
            seed=split.seed,
            strategy=split.strategy,
        )
        _require_foreground(index["split"], has_fish, paths)
        _write_splits(tmp, index, images, masks)
        del all_images, all_masks, images, masks
        (tmp / "_images.npy").unlink()
        (tmp / "_masks.npy").unlink()

    index = index[INDEX_COLUMNS]
    atomic_write_text(paths.index_csv, index.to_csv(index=False))
    return index


def _index_row(item: DecodedPair, root: Path) -> dict:
    return {
        "species": item.species,
        "image": item.image_path.relative_to(root).as_posix(),
        "mask": item.mask_path.relative_to(root).as_posix(),
        "width": item.width,
        "height": item.height,
        "fg_frac": round(item.fg_frac, 6),
    }


def _report_problems(
    paths: Paths, on_invalid: str, found: int, valid: int, problems: list[Problem], empty: list[str]
) -> None:
    """Write ``data/validation.json`` (with the empty masks); stop on problems (``on_invalid:
    error``) or on no valid pair."""
    report = {
        "pairs_found": found,
        "valid": valid,
        "on_invalid": on_invalid,
        "problems": [vars(p) for p in problems],
        "empty_masks": empty,
    }
    atomic_write_json(paths.validation_json, report)
    if problems and on_invalid == "error":
        raise FishsegError(
            f"{len(problems)} problem(s) in {paths.raw_dir}: {_problem_report(problems)}. "
            "Fix or remove these files, or set data.on_invalid: skip to drop them "
            "(they are then counted in metrics/data.json)."
        )
    if problems:
        log.warning(
            "skipping %d bad file(s) (data.on_invalid: skip): %s",
            len(problems),
            _problem_report(problems),
        )
    if not valid:
        raise FishsegError(f"{paths.raw_dir}: no valid image/mask pairs; check data.source")
    if empty:
        log.warning("%d of %d masks are empty (listed in %s)", len(empty), valid, paths.validation_json)


def _require_foreground(split: pd.Series, has_fish: list[bool], paths: Paths) -> None:
    """Refuse a split whose masks are all empty: on it an empty prediction scores a perfect IoU."""
    fish = np.asarray(has_fish, dtype=bool)
    for name in SPLITS:
        in_split = split.to_numpy() == name
        if in_split.any() and not fish[in_split].any():
            raise FishsegError(
                f"every mask of the {name} split ({int(in_split.sum())} pairs) is empty, so no score on it "
                f"would mean anything (empty masks are listed in {paths.validation_json}); check that the "
                f"masks mark fish ({MASK_FIX}) or add pairs with fish"
            )


def _index_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per valid pair with its id (``<species>/<stem>``, unique or an error)."""
    index = pd.DataFrame(rows)
    index.insert(0, "id", make_ids(index))
    duplicated = index["id"][index["id"].duplicated()].tolist()
    if duplicated:
        raise FishsegError(
            f"duplicate ids {duplicated[:5]}: two images share a species and file stem "
            "(e.g. x.png and x.jpg); rename or remove one"
        )
    return index


def _write_splits(out_dir: Path, index: pd.DataFrame, images: np.ndarray, masks: np.ndarray) -> None:
    for name in SPLITS:
        sel = np.flatnonzero(index["split"].to_numpy() == name)
        (out_dir / name).mkdir()
        save_split(out_dir / name, images[sel], masks[sel], index["id"].iloc[sel].tolist())
        log.info("%s: %d pairs", name, len(sel))
