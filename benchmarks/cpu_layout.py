"""CPU training speed of the two memory formats: ``train.channels_last`` true (NHWC) vs false (NCHW).

Both run in one process, pinned as the train stage pins the CPU (``train.reproducible``
from params.yaml), through the stage's runtime, loader and engine, on the same batches
from the same seed: rounds of one epoch of ``--steps`` optimizer steps each, the two
layouts alternating which goes first, so both see the same machine load. Printed: the
median seconds per step of each and their ratio, and how far apart the two models' first
losses are (rounding only).

    python benchmarks/cpu_layout.py [--source datasets/realfish] [--size 192 256] [--steps 6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import _common

_common.pin_like_the_stages(__name__ == "__main__")

from fishseg.dataset.arrays import PreparedSplit  # noqa: E402  (after the CPU is pinned)
from fishseg.evaluation.metrics import EpochMeter  # noqa: E402
from fishseg.training import runtime  # noqa: E402
from fishseg.training.engine import build_engine  # noqa: E402
from fishseg.training.loaders import TrainingData, build_loaders, load_training_data  # noqa: E402
from fishseg.training.loop import train_one_epoch  # noqa: E402
from fishseg.training.optim import steps_per_epoch  # noqa: E402
from fishseg.training.signals import StopFlag  # noqa: E402


def epoch_seconds(engine, loader) -> tuple[float, float]:
    """Wall seconds of one epoch of ``loader`` and its mean train loss."""
    meter = EpochMeter()
    start = time.perf_counter()
    train_one_epoch(engine, loader, meter, first_step=0, stop=StopFlag(), show_bar=False)
    return time.perf_counter() - start, float(meter.sums[0] / meter.sums[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="datasets/realfish", help="data.source (default: the embedded photos)"
    )
    parser.add_argument("--size", type=int, nargs=2, default=None, help="height width (default: params.yaml)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per epoch")
    parser.add_argument("--rounds", type=int, default=5, help="epochs per layout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    source = args.source if args.source == "synthetic" else str(Path(args.source).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        defaults = _common.params_with()
        data_params = {"source": source, "image_size": args.size or list(defaults.data.image_size)}
        base = _common.params_with(data=data_params, train={"device": "cpu"})
        paths = _common.synthetic_project(Path(tmp), base)
        data = load_training_data(paths)
        n = args.steps * base.train.batch_size
        train = PreparedSplit(data.train.images[:n], data.train.masks[:n], data.train.ids[:n])
        data = TrainingData(train, data.val, data.stats)
        engines = {}
        for layout in (True, False):
            params = _common.params_with(data=data_params, train={"device": "cpu", "channels_last": layout})
            rt = runtime.start(params.train)  # seeds: both engines start from the same weights
            loader, _ = build_loaders(params, data, rt)
            engine = build_engine(params, data.stats, rt, steps_per_epoch(len(loader), 1))
            engines[layout] = (engine, loader)
        times: dict[bool, list[float]] = {True: [], False: []}
        losses: dict[bool, float] = {}
        for k in range(args.rounds):
            for layout in (True, False) if k % 2 == 0 else (False, True):
                seconds, loss = epoch_seconds(*engines[layout])
                times[layout].append(seconds / args.steps)
                losses.setdefault(layout, loss)
    h, w = base.data.image_size
    nhwc, nchw = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"Unet {base.model.encoder}, {h}x{w}, batch {base.train.batch_size}, reproducible "
        f"{str(base.train.reproducible).lower()}; {os.cpu_count()} CPUs; median of {args.rounds} epochs of {args.steps} steps"
    )
    print(f"channels_last true  (NHWC): {nhwc:.3f} s/step, first epoch loss {losses[True]:.6f}")
    print(f"channels_last false (NCHW): {nchw:.3f} s/step, first epoch loss {losses[False]:.6f}")
    print(f"NHWC is {nchw / nhwc:.2f}x as fast")


if __name__ == "__main__":
    main()
