"""Training throughput: the pipeline's training step vs a bare smp loop on the same batches.

The pipeline side is ``fishseg.training.loop.train_one_epoch`` with the engine the train stage
builds: the prepared-array loader with augmentation, transfer and normalisation on the
device, the epoch meter (confusion counts), the lr schedule and the stop-signal check. The bare side
is model + loss + optimizer over the very same batches, collated, normalised and moved
to the device beforehand. Each round times one epoch of each, back to back (the order
alternating), so both see the same machine load; the overhead is the median over rounds
of the time ratio, the throughputs are medians too.

    python benchmarks/train_overhead.py [--photos 2] [--size 96 128] [--batch-size 8] [--rounds 7]

Device: CUDA when present (bf16 autocast, channels_last, as the train stage does), else CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import _common
import torch
from tqdm import tqdm

from fishseg.dataset.arrays import load_split
from fishseg.device import default_workers, resolve_precision, select_device
from fishseg.evaluation.metrics import EpochMeter
from fishseg.model.factory import build_model
from fishseg.model.forward import Forward
from fishseg.model.normalize import Normalizer
from fishseg.training import distributed
from fishseg.training.augment import build_augmentation
from fishseg.training.engine import Engine
from fishseg.training.loaders import EpochSampler, SegmentationDataset, make_loader
from fishseg.training.loop import train_one_epoch
from fishseg.training.losses import build_loss
from fishseg.training.optim import build_optimizer, build_scheduler
from fishseg.training.signals import StopFlag


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline_epoch(model, loader, epoch, params, forward: Forward) -> float:
    """Seconds for one epoch of the engine's own training step."""
    tp = params.train
    optimizer = build_optimizer(model, tp)
    engine = Engine(
        model=model,
        net=model,
        forward=forward,
        loss_fn=build_loss(tp.loss),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, tp, len(loader)),
        scaler=torch.amp.GradScaler(forward.device.type, enabled=forward.amp_dtype == torch.float16),
        accumulate=1,
        dist=distributed.Dist(),
    )
    loader.sampler.set_epoch(epoch)
    synchronize(forward.device)
    started = time.perf_counter()
    train_one_epoch(engine, loader, EpochMeter(forward.device), first_step=0, stop=StopFlag(), show_bar=False)
    synchronize(forward.device)
    return time.perf_counter() - started


def bare_epoch(model, batches, params, device, amp_dtype) -> float:
    """Seconds for model + loss + optimizer over ready tensors: the floor."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.train.lr, weight_decay=params.train.weight_decay
    )
    loss_fn = build_loss(params.train.loss)
    model.train()
    synchronize(device)
    started = time.perf_counter()
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--photos", type=int, default=2, help="synthetic photos per species (x9 species x4 copies)"
    )
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="height width")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--encoder", default="mobilenet_v2")
    parser.add_argument(
        "--weights", default=None, help="model.encoder_weights (default: none, random initialisation)"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    params = _common.params_with(
        data={
            "source": "synthetic",
            "image_size": args.size,
            "synthetic": {"photos_per_species": args.photos, "copies_per_photo": 4},
        },
        model={"encoder": args.encoder, "encoder_weights": args.weights},
        train={"batch_size": args.batch_size, "deterministic": False, "warmup_epochs": 0},
    )
    device = select_device("auto")
    amp_dtype = resolve_precision("auto", device)
    channels_last = device.type == "cuda"
    torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        paths = _common.synthetic_project(Path(tmp), params)
        split = load_split(paths, "train")
        stats = json.loads(paths.stats_json.read_text())
        normalizer = Normalizer(stats["mean"], stats["std"]).to(device)
        forward = Forward(normalizer, device, amp_dtype, channels_last)
        sampler = EpochSampler(len(split), shuffle=True, seed=0)
        workers = default_workers(device)
        loader = make_loader(
            SegmentationDataset(split, build_augmentation(params.augment, params.data.image_size)),
            sampler,
            batch_size=args.batch_size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )

        # The bare loop's batches: epoch 1's, exactly as the pipeline's loader makes them.
        sampler.set_epoch(1)
        batches = []
        for images, masks in loader:
            x = normalizer(images.to(device))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batches.append((x, masks.to(device).float()))

        initial = build_model(params.model).to(device)
        if channels_last:
            initial = initial.to(memory_format=torch.channels_last)
        warm = copy.deepcopy(initial)  # one untimed epoch each: allocator, kernels, workers
        pipeline_epoch(warm, loader, 1, params, forward)
        bare_epoch(copy.deepcopy(initial), batches, params, device, amp_dtype)

        pipe_s, bare_s = [], []
        for i in tqdm(range(args.rounds), desc="rounds", leave=False):
            for side in ("pipe", "bare") if i % 2 == 0 else ("bare", "pipe"):
                model = copy.deepcopy(initial)
                if side == "pipe":
                    pipe_s.append(pipeline_epoch(model, loader, 1, params, forward))
                else:
                    bare_s.append(bare_epoch(model, batches, params, device, amp_dtype))

    n = len(split)
    pipe, bare = n / statistics.median(pipe_s), n / statistics.median(bare_s)
    overhead = statistics.median(p / b for p, b in zip(pipe_s, bare_s, strict=True)) - 1
    precision = str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32"
    print(
        f"train images/s, Unet {args.encoder}, {args.size[0]}x{args.size[1]}, batch {args.batch_size}, "
        f"{device} {precision}, {torch.get_num_threads()} CPU threads, loader workers {workers}, "
        f"medians of {args.rounds} rounds"
    )
    print(f"{'pipeline step':>14} {'bare smp loop':>14} {'overhead':>9}")
    print(f"{pipe:>14.1f} {bare:>14.1f} {100 * overhead:>8.1f}%")
    print(
        "rounds (s): pipeline "
        + " ".join(f"{t:.2f}" for t in pipe_s)
        + " | bare "
        + " ".join(f"{t:.2f}" for t in bare_s)
    )


if __name__ == "__main__":
    main()
