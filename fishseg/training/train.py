"""The train stage: one readable run on CPU, one GPU or many (torchrun).

``train`` wires the pieces together: the runtime (device, processes, seeds, precision),
the loaders, the engine (model, forward pass, loss, optimizer, schedule, scaler), the
resume state, the MLflow run and the epoch loop; then it writes the results. Per epoch
the loop trains, validates, logs to MLflow, keeps the best model by val IoU
(``models/model``) and the full resume state (``models/last/state.pt``). A SIGINT/SIGTERM
finishes the current step, saves the state mid-epoch and exits non-zero; the next run
with the same params and data resumes there and ends with the same metrics as an
uninterrupted run.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from fishseg.fsutil import atomic_write_json
from fishseg.model.inference import write_model_dir
from fishseg.params import Params
from fishseg.paths import Paths
from fishseg.tracking.runs import end_run, start_training_run, write_run_record
from fishseg.training import distributed, runtime
from fishseg.training.engine import build_engine
from fishseg.training.fit import EpochLoop
from fishseg.training.history import write_history
from fishseg.training.loaders import build_loaders, load_training_data
from fishseg.training.optim import steps_per_epoch
from fishseg.training.signals import StopFlag
from fishseg.training.state import STATE_FILE, Checkpoint, Progress, fingerprint, resume


def train(params: Params, paths: Paths, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training from params; write models/, metrics/train.json, plots/train/."""
    rt = runtime.start(params.train)
    data = load_training_data(paths)
    train_loader, val_loader = build_loaders(params, data, rt)
    engine = build_engine(params, data.stats, rt, steps_per_epoch(len(train_loader), params.train.accumulate))
    checkpoint = Checkpoint(
        paths.last_dir / STATE_FILE, fingerprint(params, data.stats, data.ids, rt.dist.world_size)
    )
    prog, resumed_sums = resume(checkpoint, engine)
    engine.distribute(params.train.compile)
    run = None
    if rt.dist.is_main:
        extra = {"data.n_train": len(data.train), "data.n_val": len(data.val), "device": str(rt.device)}
        run = start_training_run(params, paths.root, prog.run_id, extra)
        prog.run_id = run.info.run_id
    save_best = functools.partial(
        write_model_dir,
        paths.model_dir,
        mean=data.stats["mean"],
        std=data.stats["std"],
        image_size=params.data.image_size,
    )
    loop = EpochLoop(
        engine,
        train_loader,
        val_loader,
        checkpoint,
        save_best,
        params.train,
        prog,
        progress and rt.dist.is_main,
    )
    started = time.perf_counter()
    try:
        with StopFlag().installed() as stop:
            loop.run(stop, resumed_sums)
    finally:
        if not prog.completed:
            end_run(run, status="KILLED")
            runtime.stop(rt)
    result = finish(params, paths, prog, run, time.perf_counter() - started) if rt.dist.is_main else {}
    distributed.barrier(rt.dist)
    runtime.stop(rt)
    return result


def summary(prog: Progress) -> dict[str, Any]:
    """``metrics/train.json``: the best epoch's val scores and the last epoch's train scores."""
    best = next(r for r in prog.history if r["epoch"] == prog.best_epoch)
    return {
        "best_epoch": prog.best_epoch,
        "epochs_run": len(prog.history),
        "best_val_iou": best["val_iou"],
        "best_val_dice": best["val_dice"],
        "best_val_loss": best["val_loss"],
        "final_train_loss": prog.history[-1]["train_loss"],
        "final_train_iou": prog.history[-1]["train_iou"],
    }


def finish(params: Params, paths: Paths, prog: Progress, run: Any, seconds: float) -> dict[str, Any]:
    """Write metrics/train.json, history.csv and models/run.json; log the finals and the model; end the run."""
    import mlflow

    result = summary(prog)
    atomic_write_json(paths.metrics_dir / "train.json", result)
    write_history(paths.plots_dir / "train" / "history.csv", prog.history)
    mlflow.log_metrics({"best_val_iou": result["best_val_iou"], "best_epoch": result["best_epoch"]})
    mlflow.log_metric("train_seconds", round(seconds, 1))
    mlflow.log_artifacts(str(paths.model_dir), artifact_path="checkpoint")
    if params.mlflow.log_model:
        from fishseg.tracking.logged_model import log_inference_model

        log_inference_model(paths.model_dir, params.data.image_size)
    write_run_record(paths.run_json, run)
    end_run(run)
    return result
