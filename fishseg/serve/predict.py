"""Segment new images with a trained model: a binary mask and an overlay per image.

    python -m fishseg.predict photos/ extra.jpg --model models/model --out predictions/

``--model`` takes the train stage's directory (``models/model``) or any MLflow model URI:
``runs:/<run_id>/model``, ``models:/<name>@champion``, ``models:/<name>/<version>``,
``models:/<model_id>``, or a downloaded MLflow model directory. MLflow URIs are resolved
against the project's store (``MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri`` in
``params.yaml``, else ``sqlite:///<project>/mlflow.db``). Only safetensors and pt2 models
load: a pickled model could run code and is refused.

Outputs keep the inputs' folder structure: an image found in a folder argument is written
at its path relative to that folder (``photos/Sea Bass/00005.jpg`` ->
``<out>/masks/Sea Bass/00005.png`` and ``<out>/overlays/Sea Bass/00005.png``); a file given
by itself is written under its stem (``<out>/masks/<stem>.png``). Two inputs that would
land on one name (also when they differ only in case) get ``-2``, ``-3``... Masks are 0 =
background, 255 = fish, at the input's own resolution. ``<out>/predictions.csv`` gets one
row per input as soon as it is done, so an interrupted run keeps the finished rows.

Inputs that cannot be read (missing, corrupt, over the ``--max-pixels`` cap) are logged
by name and skipped. Exit status: 0 every input segmented, 1 some inputs failed, 2 usage
or output errors (no model, no inputs, --out not writable, disk full), 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from fishseg.cli import run_tool
from fishseg.dataset.index import read_rgb
from fishseg.device import select_device
from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_write_png, write_error
from fishseg.model.inference import load_inference_model, predict_image
from fishseg.params import Params, load_params
from fishseg.paths import find_root
from fishseg.progress import progress_bar
from fishseg.redact import redact_uri
from fishseg.sources.layout import IMAGE_SUFFIXES, folded

log = logging.getLogger(__name__)

# A URI scheme of two or more letters (runs:/, models:/, s3://); one letter is a Windows drive.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
OVERLAY_COLOUR = np.array([255, 64, 0], dtype=np.float32)  # orange: stands out on blue surfaces
OVERLAY_ALPHA = 0.45
COLUMNS = ["input", "mask", "overlay", "width", "height", "fg_frac", "error"]
_OUT_FIX = "free some disk space or choose another --out"


@dataclass
class Predictor:
    """A model that maps float RGB (B,3,H,W) in [0, 255] to probabilities, and its input size."""

    model: nn.Module
    image_size: tuple[int, int]
    source: str


@dataclass(frozen=True)
class Input:
    """An image to segment and the name its outputs get (``Sea Bass/00005``, no suffix)."""

    path: Path
    name: str


# --------------------------------------------------------------------------- model


def is_mlflow_uri(ref: str) -> bool:
    return bool(_URI.match(ref))


def load_predictor(ref: str, device: torch.device, root: Path | None = None) -> Predictor:
    """Load ``models/model``-style directories directly and anything else through MLflow."""
    path = Path(ref)
    if path.is_dir() and (path / "preprocessing.json").is_file():
        model, pre = load_inference_model(path, device)
        return Predictor(model, tuple(pre["image_size"]), str(path))
    if (path.is_dir() and (path / "MLmodel").is_file()) or is_mlflow_uri(ref):
        return _load_mlflow(ref, device, root)
    raise FishsegError(
        f"--model {ref}: not a model directory (config.json + preprocessing.json, as the train "
        "stage writes) nor an MLflow model (runs:/<run_id>/model, models:/<name>@<alias>, "
        "models:/<name>/<version>); run the train stage first or check the path"
    )


def _load_mlflow(ref: str, device: torch.device, root: Path | None) -> Predictor:
    """An MLflow-logged packaged model (pt2 only); its input size comes from its signature."""
    from fishseg.serve.mlflow_model import load_checked
    from fishseg.tracking import store as tracking

    root = (root or find_root()).resolve()
    uri = tracking.use_store(project_params(root).mlflow, root)
    model, size = load_checked(ref, uri, device)
    return Predictor(model, size, ref)


def project_params(root: Path) -> Params:
    """The project's params (for the MLflow store and the pixel cap), or the defaults outside one."""
    path = root / "params.yaml"
    return load_params(path) if path.is_file() else Params()


# --------------------------------------------------------------------------- inputs and outputs


def collect_inputs(args: Iterable[str], exclude: Path | None = None) -> list[Input]:
    """Files as given and image files inside folders (recursive, sorted), without duplicates.

    A file found in a folder is named by its path relative to that folder, a file given by
    itself by its stem. Paths that do not exist are kept: they fail later with a message
    naming them. Files under ``exclude`` (the output folder) are skipped, so a rerun never
    segments its own masks.
    """
    exclude = exclude.resolve() if exclude is not None else None
    seen: set[Path] = set()
    found: list[Input] = []

    def add(path: Path, name: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(Input(path, name))

    for arg in args:
        path = Path(arg)
        if not path.is_dir():
            add(path, path.stem)
            continue
        for file in sorted(path.rglob("*")):
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if exclude is not None and file.resolve().is_relative_to(exclude):
                continue
            add(file, file.relative_to(path).with_suffix("").as_posix())
    return found


def output_names(inputs: list[Input]) -> list[str]:
    """Each input's name, made unique with ``-2``, ``-3``... (case- and NFC-insensitively, for any file system)."""
    taken: set[str] = set()
    names = []
    for item in inputs:
        name, n = item.name, 1
        while folded(name) in taken:
            n += 1
            name = f"{item.name}-{n}"
        taken.add(folded(name))
        names.append(name)
    return names


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The RGB image with the fish tinted and outlined (float work on the fish pixels only)."""
    out = image.copy()
    fish = mask > 0
    out[fish] = (
        (1 - OVERLAY_ALPHA) * image[fish].astype(np.float32) + OVERLAY_ALPHA * OVERLAY_COLOUR
    ).round()
    contours, _ = cv2.findContours(fish.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, (255, 255, 0), thickness)
    return out


def _write_png(path: Path, image: np.ndarray) -> None:
    try:
        atomic_write_png(path, image)
    except OSError as exc:
        raise write_error(path, exc, _OUT_FIX) from None


class RowLog:
    """``predictions.csv``, one row appended (and flushed) per finished input."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self.writer = csv.DictWriter(self.file, COLUMNS)
            self.writer.writeheader()
            self.file.flush()
        except OSError as exc:
            raise write_error(path, exc, _OUT_FIX) from None

    def add(self, row: dict) -> None:
        try:
            self.writer.writerow(row)
            self.file.flush()
        except OSError as exc:
            raise write_error(self.path, exc, _OUT_FIX) from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as exc:
            raise write_error(self.path, exc, _OUT_FIX) from None


# --------------------------------------------------------------------------- the run


def segment_one(predictor: Predictor, item: Input, out_dir: Path, threshold: float, max_pixels: int) -> dict:
    """Segment one input and write its mask and overlay; its CSV row (with the error, if unreadable)."""
    row = {
        "input": str(item.path),
        "mask": "",
        "overlay": "",
        "width": 0,
        "height": 0,
        "fg_frac": "",
        "error": "",
    }
    try:
        image = read_rgb(item.path, max_pixels, knob="--max-pixels")
    except (ValueError, OSError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else str(exc)
        log.error("%s: skipped, %s", item.path, reason)
        return {**row, "error": reason}
    prob = predict_image(predictor.model, image, predictor.image_size)
    mask = np.where(prob >= threshold, 255, 0).astype(np.uint8)
    del prob
    mask_path, overlay_path = (
        out_dir / "masks" / f"{item.name}.png",
        out_dir / "overlays" / f"{item.name}.png",
    )
    try:
        _write_png(mask_path, mask)
        _write_png(overlay_path, overlay(image, mask))
    except BaseException:  # a failed write (or Ctrl-C): no mask without its overlay and CSV row
        mask_path.unlink(missing_ok=True)
        raise
    height, width = image.shape[:2]
    fg_frac = round(float((mask > 0).mean()), 6)
    return {
        **row,
        "mask": str(mask_path),
        "overlay": str(overlay_path),
        "width": width,
        "height": height,
        "fg_frac": fg_frac,
    }


def predict_files(
    predictor: Predictor,
    inputs: list[Input],
    out_dir: Path,
    *,
    threshold: float = 0.5,
    max_pixels: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Segment each input into ``out_dir``; one row per input (appended to predictions.csv as it ends)."""
    max_pixels = max_pixels or Params().data.max_image_pixels
    renamed = [Input(item.path, name) for item, name in zip(inputs, output_names(inputs), strict=True)]
    rows = []
    table = RowLog(out_dir / "predictions.csv")
    try:
        with logging_redirect_tqdm():
            for item in progress_bar(renamed, desc="predict", unit="image", enabled=progress):
                rows.append(segment_one(predictor, item, out_dir, threshold, max_pixels))
                table.add(rows[-1])
    finally:
        table.close()
    return pd.DataFrame(rows, columns=COLUMNS)


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1 (exclusive)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number of pixels")
    return value


def _device(spec: str) -> torch.device:
    if spec not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", spec):
        raise FishsegError(f"--device {spec}: use auto, cpu, cuda or cuda:N")
    try:
        return select_device(spec)
    except FishsegError as exc:
        # The same checks as train.device; name the option the user typed.
        raise FishsegError(str(exc).replace(f"train.device = {spec!r}", f"--device {spec}")) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fishseg.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (png, jpg, jpeg, bmp, tif)")
    parser.add_argument(
        "--model",
        default="models/model",
        help="models/model (default), runs:/<run_id>/model, models:/<name>@<alias>, "
        "models:/<name>/<version> or models:/<model_id>",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--threshold", type=_threshold, default=0.5, help="probability cut for fish (default: 0.5)"
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive,
        default=None,
        help="skip images with more pixels, read from the header before decoding "
        "(default: data.max_image_pixels of the project's params.yaml, 50 Mpx outside a project)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--root", type=Path, default=None, help="project root for the MLflow store (default: found from cwd)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def run(args: argparse.Namespace) -> int:
    """The command after argument parsing: 0, 1 (some inputs failed); raises for usage and output errors."""
    device = _device(args.device)
    inputs = collect_inputs(args.inputs, exclude=args.out)
    if not inputs:
        raise FishsegError(
            f"no images found in {', '.join(args.inputs)} ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    root = (args.root or find_root()).resolve()
    max_pixels = args.max_pixels or project_params(root).data.max_image_pixels
    predictor = load_predictor(args.model, device, root)
    log.info(
        "model %s (input %dx%d) on %s",
        redact_uri(predictor.source),
        predictor.image_size[1],
        predictor.image_size[0],
        device,
    )
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FishsegError(
            f"--out {args.out}: cannot create it ({exc.strerror}); choose a writable folder"
        ) from None
    table = predict_files(
        predictor,
        inputs,
        args.out,
        threshold=args.threshold,
        max_pixels=max_pixels,
        progress=not args.no_progress,
    )
    failed = table.loc[table["error"] != "", "input"]
    log.info("segmented %d of %d image(s) into %s", len(table) - len(failed), len(table), args.out)
    if len(failed):
        log.warning("%d input(s) could not be read (named above and in predictions.csv)", len(failed))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(args, run)


if __name__ == "__main__":
    raise SystemExit(main())
