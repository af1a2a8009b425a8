"""Segment new images with a trained model: a binary mask and an overlay per image.

    python -m fishseg.predict photos/ extra.jpg --model models/model --out predictions/

``--model`` takes the train stage's directory (``models/model``) or any MLflow model URI:
``runs:/<run_id>/model``, ``models:/<name>@champion``, ``models:/<name>/<version>``,
``models:/<model_id>``, or a downloaded MLflow model directory. MLflow URIs are resolved
against the project's store (``MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri`` in
``params.yaml``, else ``sqlite:///<project>/mlflow.db``).

For each input ``<stem>.<ext>`` it writes ``<out>/masks/<stem>.png`` (0 = background,
255 = fish) and ``<out>/overlays/<stem>.png``, both at the input's own resolution, and
one row in ``<out>/predictions.csv``. Inputs sharing a stem get ``<stem>-2``, ``<stem>-3``...
Unreadable inputs are logged by name and skipped. Exit status: 0 when every input was
segmented, 1 when some failed, 2 on usage errors (no model, no inputs).
"""

from __future__ import annotations

import argparse
import contextlib
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
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fishseg.cli import offline_env, setup_logging
from fishseg.dataset.index import read_rgb
from fishseg.device import select_device
from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_write_png, atomic_write_text
from fishseg.model.inference import load_inference_model, predict_image
from fishseg.sources.layout import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# A URI scheme of two or more letters (runs:/, models:/, s3://); one letter is a Windows drive.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
OVERLAY_COLOUR = np.array([255, 64, 0], dtype=np.float32)  # orange: stands out on blue surfaces
OVERLAY_ALPHA = 0.45


@dataclass
class Predictor:
    """A model that maps float RGB (B,3,H,W) in [0, 255] to probabilities, and its input size."""

    model: nn.Module
    image_size: tuple[int, int]
    source: str


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
    """An MLflow-logged packaged model; its input size comes from its signature."""
    import mlflow

    from fishseg.params import MlflowParams, load_params
    from fishseg.paths import find_root
    from fishseg.tracking import store as tracking

    root = (root or find_root()).resolve()
    params = load_params(root / "params.yaml").mlflow if (root / "params.yaml").is_file() else MlflowParams()
    uri = tracking.use_store(params, root)
    try:
        info = mlflow.models.get_model_info(ref)
        model = mlflow.pytorch.load_model(ref)
    except mlflow.exceptions.MlflowException as exc:
        raise FishsegError(f"--model {ref}: cannot load it from {uri}: {exc.message}") from None
    inputs = info.signature.inputs.inputs if info.signature is not None else []
    shape = getattr(inputs[0], "shape", None) if len(inputs) == 1 else None
    if not shape or len(shape) != 4 or min(shape[2:]) <= 0:
        raise FishsegError(
            f"--model {ref}: its signature does not give a fixed input size (B, 3, H, W): {shape}; "
            "log it with fishseg.tracking.logged_model.log_inference_model"
        )
    # A torch.export (pt2) graph refuses eval(); it was exported in eval mode already.
    with contextlib.suppress(NotImplementedError):
        model.eval()
    return Predictor(model.to(device), (int(shape[2]), int(shape[3])), ref)


# --------------------------------------------------------------------------- inputs and outputs


def collect_inputs(args: Iterable[str], exclude: Path | None = None) -> list[Path]:
    """Files as given and image files inside folders (recursive, sorted), without duplicates.

    Paths that do not exist are kept: they fail later with a message naming them. Files under
    ``exclude`` (the output folder) are skipped, so a rerun never segments its own masks.
    """
    exclude = exclude.resolve() if exclude is not None else None
    seen: set[Path] = set()
    found: list[Path] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for arg in args:
        path = Path(arg)
        if not path.is_dir():
            add(path)
            continue
        for file in sorted(path.rglob("*")):
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if exclude is not None and file.resolve().is_relative_to(exclude):
                continue
            add(file)
    return found


def output_stems(inputs: list[Path]) -> list[str]:
    """Each input's stem, made unique with ``-2``, ``-3``... (case-insensitively, for any file system)."""
    taken: set[str] = set()
    stems = []
    for path in inputs:
        stem, n = path.stem, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The RGB image with the fish tinted and outlined."""
    out = image.astype(np.float32)
    fish = mask > 0
    out[fish] = (1 - OVERLAY_ALPHA) * out[fish] + OVERLAY_ALPHA * OVERLAY_COLOUR
    out = out.round().astype(np.uint8)
    contours, _ = cv2.findContours(fish.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, (255, 255, 0), thickness)
    return out


# --------------------------------------------------------------------------- the run


def predict_files(
    predictor: Predictor,
    inputs: list[Path],
    out_dir: Path,
    *,
    threshold: float = 0.5,
    progress: bool = True,
) -> pd.DataFrame:
    """Segment each input; one row per input with its outputs or its error."""
    masks_dir, overlays_dir = out_dir / "masks", out_dir / "overlays"
    rows = []
    with logging_redirect_tqdm():
        for path, stem in tqdm(
            list(zip(inputs, output_stems(inputs), strict=True)),
            desc="predict",
            unit="image",
            disable=not progress,
        ):
            row: dict = {"input": str(path), "mask": "", "overlay": "", "width": 0, "height": 0}
            try:
                image = read_rgb(path)
            except (ValueError, OSError) as exc:
                reason = "no such file" if isinstance(exc, FileNotFoundError) else str(exc)
                log.error("%s: skipped, %s", path, reason)
                rows.append({**row, "fg_frac": float("nan"), "error": reason})
                continue
            prob = predict_image(predictor.model, image, predictor.image_size)
            mask = np.where(prob >= threshold, 255, 0).astype(np.uint8)
            mask_path, overlay_path = masks_dir / f"{stem}.png", overlays_dir / f"{stem}.png"
            atomic_write_png(mask_path, mask)
            atomic_write_png(overlay_path, overlay(image, mask))
            rows.append(
                {
                    **row,
                    "mask": str(mask_path),
                    "overlay": str(overlay_path),
                    "width": image.shape[1],
                    "height": image.shape[0],
                    "fg_frac": round(float((mask > 0).mean()), 6),
                    "error": "",
                }
            )
    table = pd.DataFrame(rows, columns=["input", "mask", "overlay", "width", "height", "fg_frac", "error"])
    atomic_write_text(out_dir / "predictions.csv", table.to_csv(index=False))
    return table


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1 (exclusive)")
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
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--root", type=Path, default=None, help="project root for the MLflow store (default: found from cwd)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        # Configure only a bare process; a host (pytest, a notebook) keeps its own set-up.
        setup_logging(args.verbose)
    offline_env()
    try:
        device = _device(args.device)
        inputs = collect_inputs(args.inputs, exclude=args.out)
        if not inputs:
            raise FishsegError(
                f"no images found in {', '.join(args.inputs)} ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        predictor = load_predictor(args.model, device, args.root)
        log.info(
            "model %s (input %dx%d) on %s",
            predictor.source,
            predictor.image_size[1],
            predictor.image_size[0],
            device,
        )
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FishsegError(f"--out {args.out}: cannot create it ({exc.strerror})") from None
        table = predict_files(
            predictor, inputs, args.out, threshold=args.threshold, progress=not args.no_progress
        )
    except FishsegError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    failed = int((table["error"] != "").sum())
    log.info("segmented %d of %d image(s) into %s", len(table) - failed, len(table), args.out)
    if failed:
        log.error(
            "%d input(s) could not be read: %s", failed, ", ".join(table.loc[table["error"] != "", "input"])
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
