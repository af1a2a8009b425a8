"""The training engine: one readable loop that runs on CPU, one GPU or many (torchrun).

``train`` builds everything from params, then per epoch: train, validate, log to MLflow,
keep the best model by val IoU (``models/model``) and the full resume state
(``models/last/state.pt``). A SIGINT/SIGTERM finishes the current step, saves the state
mid-epoch and exits non-zero; the next run with the same params and data resumes there
and ends with the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fishseg.dataset.arrays import load_split
from fishseg.device import default_workers, pin_cpu_runtime, resolve_precision, seed_everything, select_device
from fishseg.errors import FishsegError
from fishseg.evaluation.metrics import EpochMeter, confusion_counts
from fishseg.fsutil import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from fishseg.model.factory import build_model, set_train_mode
from fishseg.model.io import save_model
from fishseg.model.normalize import Normalizer
from fishseg.params import Params, TrainParams
from fishseg.paths import Paths
from fishseg.training import distributed
from fishseg.training.augment import build_augmentation
from fishseg.training.loaders import EpochSampler, SegmentationDataset, make_loader
from fishseg.training.losses import build_loss

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_iou", "train_dice", "val_loss", "val_iou", "val_dice"]
STATE_FILE = "state.pt"


class Interrupted(FishsegError):
    """Training stopped by a signal after saving its state."""


# --------------------------------------------------------------------------- set-up


def build_optimizer(model: nn.Module, train: TrainParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainParams, steps_per_epoch: int):
    """Per-step schedulers (cosine with linear warmup, onecycle), or per-epoch plateau."""
    total = max(1, train.epochs * steps_per_epoch)
    if train.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total)
    if train.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    warmup = min(train.warmup_epochs * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / max(1, warmup)
        if train.scheduler == "none":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fingerprint(params: Params, stats: dict, ids: dict[str, list[str]], world_size: int = 1) -> str:
    """What a resume state must match: the training params, the data and its statistics.

    The number of processes counts too: it decides which items a step has seen.
    """
    payload = {
        "world_size": world_size,
        "model": params.model.model_dump(),
        "train": params.train.model_dump(exclude={"num_workers", "device"}),
        "augment": params.augment.model_dump(),
        "image_size": list(params.data.image_size),
        "stats": stats,
        "ids": ids,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- stop signals


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum: int, _frame: Any) -> None:
            if self.signal is None:
                log.warning(
                    "received %s: finishing the current step, then saving", signal.Signals(signum).name
                )
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


# --------------------------------------------------------------------------- state


@dataclass
class Progress:
    """Everything besides tensors that a resume needs."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # optimizer steps done in that epoch
    best_val_iou: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None
    completed: bool = False


def save_state(path: Path, **parts: Any) -> None:
    """Write the resume state atomically; only tensors and plain types, so it loads with weights_only."""
    buffer = io.BytesIO()
    torch.save(parts, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: never trust it, start fresh
        log.warning("ignoring unreadable resume state %s (%s)", path, exc)
        return None


# --------------------------------------------------------------------------- loops


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    normalizer: Normalizer,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    accumulate: int,
    meter: EpochMeter,
    skip_steps: int,
    stop: StopFlag,
    on_step: Any,
    d: distributed.Dist,
    channels_last: bool,
    progress: bool,
) -> bool:
    """Train over ``loader``; return False when stopped early by a signal (state saved by caller)."""
    set_train_mode(model)
    # After a resume the sampler starts past the skipped steps: count micro-batches globally.
    skipped = skip_steps * accumulate
    total = skipped + len(loader)
    steps = math.ceil(total / accumulate)
    bar = tqdm(total=steps, initial=skip_steps, desc="train", unit="step", leave=False, disable=not progress)
    step_scheduler = not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and scheduler
    optimizer.zero_grad(set_to_none=True)
    step = skip_steps
    for i, (images, masks) in enumerate(loader, start=skipped):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True).float()
        x = normalizer(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        last_micro = (i + 1) % accumulate == 0 or i + 1 == total
        sync = contextlib.nullcontext() if (last_micro or not d.enabled) else model.no_sync()
        with (
            sync,
            torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
        ):
            logits = model(x)
            loss = loss_fn(logits.float(), masks)
        scaler.scale(loss / accumulate).backward()
        meter.update(loss.detach(), confusion_counts(logits.detach(), masks))
        if not last_micro:
            continue
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if step_scheduler:
            scheduler.step()
        step += 1
        bar.update(1)
        if distributed.broadcast_flag(bool(stop), d):
            on_step(step)
            bar.close()
            return False
    bar.close()
    return True


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    loss_fn: nn.Module | None,
    normalizer: Normalizer,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    threshold: float = 0.5,
    channels_last: bool = False,
    keep_probs: bool = False,
    progress: bool = False,
) -> tuple[EpochMeter, np.ndarray, np.ndarray | None]:
    """Score a loader: the meter, per-image ``[tp, fp, fn, tn]``, and optionally the probabilities."""
    model.eval()
    meter = EpochMeter(device)
    all_counts, all_probs = [], []
    for images, masks in tqdm(loader, desc="eval", unit="batch", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True).float()
        x = normalizer(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).float()
        counts = confusion_counts(logits, masks, threshold)
        loss = loss_fn(logits, masks) if loss_fn is not None else torch.zeros((), device=device)
        meter.update(loss, counts)
        all_counts.append(counts.cpu().numpy())
        if keep_probs:
            all_probs.append(torch.sigmoid(logits)[:, 0].cpu().numpy().astype(np.float16))
    counts = np.concatenate(all_counts) if all_counts else np.zeros((0, 4), dtype=np.int64)
    probs = np.concatenate(all_probs) if keep_probs and all_probs else None
    return meter, counts, probs


# --------------------------------------------------------------------------- the run


def _round(values: dict[str, float], digits: int = 6) -> dict[str, float]:
    return {k: round(float(v), digits) for k, v in values.items()}


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    frame["epoch"] = frame["epoch"].astype(int)
    atomic_write_text(path, frame.to_csv(index=False))


def train(params: Params, paths: Paths, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training from params; write models/, metrics/train.json, plots/train/."""
    from fishseg.tracking import store as tracking

    tp = params.train
    d = distributed.from_env()
    device = select_device(tp.device, d.local_rank if d.enabled else None)
    distributed.init(d, device)
    distributed.quiet_other_ranks(d)
    seed_everything(tp.seed + d.rank, tp.deterministic)
    cpu_numerics = pin_cpu_runtime(tp.reproducible)
    amp_dtype = resolve_precision(tp.precision, device)
    channels_last = tp.channels_last and device.type == "cuda"
    if device.type == "cuda" and not tp.deterministic:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if not paths.stats_json.is_file():
        raise FishsegError(f"{paths.stats_json}: missing; run the stats stage first (dvc repro stats)")
    stats = json.loads(paths.stats_json.read_text())
    train_split, val_split = load_split(paths, "train"), load_split(paths, "val")
    if len(train_split) == 0:
        raise FishsegError("the train split is empty; add data or lower split.val/split.test")
    if len(val_split) == 0:
        log.warning("the val split is empty; the model of the last epoch is kept")

    workers = default_workers(device, d.local_world_size) if tp.num_workers == "auto" else tp.num_workers
    pin = device.type == "cuda"
    augmentation = build_augmentation(params.augment, params.data.image_size)
    train_sampler = EpochSampler(
        len(train_split), shuffle=True, seed=tp.seed, rank=d.rank, world_size=d.world_size
    )
    train_loader = make_loader(
        SegmentationDataset(train_split, augmentation),
        train_sampler,
        batch_size=tp.batch_size,
        num_workers=workers,
        pin_memory=pin,
    )
    val_loader = make_loader(
        SegmentationDataset(val_split),
        EpochSampler(
            len(val_split), shuffle=False, seed=tp.seed, rank=d.rank, world_size=d.world_size, pad=False
        ),
        batch_size=tp.batch_size,
        num_workers=min(workers, 2),
        pin_memory=pin,
    )

    model = build_model(params.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(stats["mean"], stats["std"]).to(device)
    loss_fn = build_loss(tp.loss)
    optimizer = build_optimizer(model, tp)
    steps_per_epoch = math.ceil(len(train_loader) / tp.accumulate)
    scheduler = build_scheduler(optimizer, tp, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    # Resume when an unfinished state matches these params and this data exactly.
    ids = {"train": train_split.ids, "val": val_split.ids}
    fp = fingerprint(params, stats, ids, d.world_size)
    state_path = paths.last_dir / STATE_FILE
    # Rank 0 decides and shares: every rank resumes from the same state, or none does,
    # even when the other nodes cannot see rank 0's files.
    state = distributed.broadcast_object(load_state(state_path) if d.is_main else None, d)
    prog = Progress()
    if state is not None and state.get("fingerprint") == fp and not state["progress"]["completed"]:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        prog = Progress(**state["progress"])
        log.info("resuming from %s: epoch %d, step %d", state_path, prog.epoch + 1, prog.step)
    elif state is not None:
        log.info("resume state in %s is for other params/data or finished: starting fresh", paths.last_dir)
    resume_meter = state["meter"] if state is not None and prog.step > 0 else None

    net: nn.Module = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if tp.compile:
        net = torch.compile(net)

    mlflow_run = None
    if d.is_main:
        import mlflow

        experiment_id = tracking.setup(params.mlflow, paths.root)
        if prog.run_id:
            mlflow_run = tracking.reopen_run(prog.run_id, experiment_id, paths.root)
        else:
            mlflow_run = mlflow.start_run(experiment_id=experiment_id, tags=tracking.run_tags(paths.root))
            mlflow.log_params(params.flat())
            mlflow.log_params(
                {"data.n_train": len(train_split), "data.n_val": len(val_split), "device": str(device)}
            )
            mlflow.log_param("cpu_numerics", cpu_numerics)
        prog.run_id = mlflow_run.info.run_id
        log.info("MLflow run %s (%s)", prog.run_id, mlflow.get_tracking_uri())

    def save(epoch_meter: EpochMeter | None) -> None:
        if not d.is_main:
            return
        save_state(
            state_path,
            fingerprint=fp,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else {},
            scaler=scaler.state_dict(),
            torch_rng=torch.get_rng_state(),
            meter=epoch_meter.sums.cpu() if epoch_meter is not None else torch.zeros(8, dtype=torch.float64),
            progress=prog.__dict__,
        )

    stop = StopFlag()
    started = time.perf_counter()
    try:
        with stop.installed():
            while prog.epoch < tp.epochs:
                epoch = prog.epoch
                train_sampler.set_epoch(epoch, start=prog.step * tp.accumulate * tp.batch_size)
                meter = EpochMeter(device)
                if resume_meter is not None and d.is_main:
                    # The saved sums are already reduced over ranks: add them once.
                    meter.sums += resume_meter.to(device)
                resume_meter = None

                def on_stop(step: int, meter: EpochMeter = meter) -> None:
                    prog.step = step
                    reduced = EpochMeter(device)
                    reduced.sums = distributed.all_reduce_sum(meter.sums.clone(), d)
                    save(reduced)

                finished = train_one_epoch(
                    net,
                    train_loader,
                    loss_fn=loss_fn,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    normalizer=normalizer,
                    device=device,
                    amp_dtype=amp_dtype,
                    scaler=scaler,
                    accumulate=tp.accumulate,
                    meter=meter,
                    skip_steps=prog.step,
                    stop=stop,
                    on_step=on_stop,
                    d=d,
                    channels_last=channels_last,
                    progress=progress and d.is_main,
                )
                if not finished:
                    raise Interrupted(
                        f"training interrupted in epoch {epoch + 1} (step {prog.step}); state saved to "
                        f"{state_path}. Run `dvc repro` again to resume."
                    )
                train_scores = distributed.all_reduce_sum(meter.sums, d)
                meter.sums = train_scores
                distributed.sync_buffers(model, d)
                val_meter, _, _ = evaluate_loader(
                    model,
                    val_loader,
                    loss_fn=loss_fn,
                    normalizer=normalizer,
                    device=device,
                    amp_dtype=amp_dtype,
                    channels_last=channels_last,
                )
                distributed.all_reduce_sum(val_meter.sums, d)
                tr, va = meter.result(), val_meter.result()
                lr = optimizer.param_groups[0]["lr"]
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(va["iou"])
                row = _round(
                    {
                        "epoch": epoch + 1,
                        "lr": lr,
                        "train_loss": tr["loss"],
                        "train_iou": tr["iou"],
                        "train_dice": tr["dice"],
                        "val_loss": va["loss"],
                        "val_iou": va["iou"],
                        "val_dice": va["dice"],
                    }
                )
                prog.history.append(row)
                improved = len(val_split) == 0 or va["iou"] > prog.best_val_iou
                if improved:
                    prog.best_val_iou, prog.best_epoch, prog.stale_epochs = va["iou"], epoch + 1, 0
                else:
                    prog.stale_epochs += 1
                log.info(
                    "epoch %d/%d  loss %.4f/%.4f  IoU %.4f/%.4f (train/val)%s",
                    epoch + 1,
                    tp.epochs,
                    tr["loss"],
                    va["loss"],
                    tr["iou"],
                    va["iou"],
                    "  *best*" if improved else "",
                )
                prog.epoch, prog.step = epoch + 1, 0
                early_stop = tp.patience > 0 and prog.stale_epochs >= tp.patience
                if early_stop or prog.epoch >= tp.epochs:
                    prog.completed = True
                if d.is_main:
                    import mlflow

                    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
                    if improved:
                        with atomic_dir(paths.model_dir) as tmp:
                            save_model(model, tmp)
                            atomic_write_json(
                                tmp / "preprocessing.json",
                                {
                                    "mean": stats["mean"],
                                    "std": stats["std"],
                                    "image_size": list(params.data.image_size),
                                    "threshold": 0.5,
                                },
                            )
                    save(None)
                distributed.barrier(d)
                if early_stop:
                    log.info("early stopping: no val IoU gain in %d epochs", tp.patience)
                    break
    finally:
        if mlflow_run is not None and not prog.completed:
            import mlflow

            mlflow.end_run(status="KILLED")
        if not prog.completed:
            distributed.shutdown(d)

    result: dict[str, Any] = {}
    if d.is_main:
        import mlflow

        best = next(r for r in prog.history if r["epoch"] == prog.best_epoch)
        result = {
            "best_epoch": prog.best_epoch,
            "epochs_run": len(prog.history),
            "best_val_iou": best["val_iou"],
            "best_val_dice": best["val_dice"],
            "best_val_loss": best["val_loss"],
            "final_train_loss": prog.history[-1]["train_loss"],
            "final_train_iou": prog.history[-1]["train_iou"],
        }
        paths.metrics_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.metrics_dir / "train.json", result)
        _write_history(paths.plots_dir / "train" / "history.csv", prog.history)
        mlflow.log_metrics({"best_val_iou": result["best_val_iou"], "best_epoch": result["best_epoch"]})
        mlflow.log_metric("train_seconds", round(time.perf_counter() - started, 1))
        mlflow.log_artifacts(str(paths.model_dir), artifact_path="checkpoint")
        if params.mlflow.log_model:
            from fishseg.tracking.logged_model import log_inference_model

            log_inference_model(paths.model_dir, params.data.image_size)
        atomic_write_json(
            paths.run_json,
            {
                "run_id": prog.run_id,
                "experiment_id": mlflow_run.info.experiment_id,
            },
        )
        mlflow.end_run()
    distributed.barrier(d)
    distributed.shutdown(d)
    return result
