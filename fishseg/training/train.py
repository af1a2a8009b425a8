"""The train stage: one readable run on CPU, one GPU or many (torchrun).

``train`` wires the pieces together: the runtime (device, processes, seeds, precision),
the loaders, the engine (model, forward pass, loss, optimizer, schedule, scaler), the
resume state, the MLflow run and the epoch loop; then it writes the results. Per epoch
the loop trains, validates, logs to MLflow, keeps the best epoch's weights and saves the
full resume state (``models/last/state.pt``, best weights included). A SIGINT/SIGTERM
finishes the current step, saves the state mid-epoch and exits non-zero; a second one
stops at once, keeping the last saved state. The next run with the same params and data
resumes there and ends with the same outputs as an uninterrupted run.

Every output (``models/model``, ``metrics/train.json``, the history, ``models/run.json``)
is written at the end from the state alone, because DVC deletes them before it reruns
the stage; only then is the state marked completed, so a run killed while writing them
writes them on the next run without training again.
"""

from __future__ import annotations

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
from fishseg.training.signals import Interrupted, StopFlag
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
    start = resume(checkpoint, engine)
    engine.distribute(params.train.compile)
    run = None
    if rt.dist.is_main:
        extra = {
            "data.n_train": len(data.train),
            "data.n_val": len(data.val),
            "device": str(rt.device),
            "cpu_numerics": rt.cpu_numerics,
        }
        run = start_training_run(params, paths.root, start.progress.run_id, extra)
        start.progress.run_id = run.info.run_id
    loop = EpochLoop(
        engine,
        train_loader,
        val_loader,
        checkpoint,
        params.train,
        start.progress,
        start.best,
        progress and rt.dist.is_main,
    )
    result: dict[str, Any] = {}
    try:
        with StopFlag().installed() as stop:
            loop.run(stop, start.sums)
            if rt.dist.is_main:
                result = finish(params, paths, loop, data.stats, run)
    except BaseException as exc:
        stopped = isinstance(exc, (Interrupted, KeyboardInterrupt, SystemExit))
        end_run(run, status="KILLED" if stopped else "FAILED")
        runtime.stop(rt)
        raise
    distributed.barrier(rt.dist)
    runtime.stop(rt)
    return result


def summary(prog: Progress) -> dict[str, Any]:
    """``metrics/train.json``: the best epoch's val scores and the last epoch's train scores.

    In this order in the file: the columns of ``dvc exp show`` after the test scores.
    """
    best = next(r for r in prog.history if r["epoch"] == prog.best_epoch)
    return {
        "best_val_iou": best["val_iou"],
        "best_val_dice": best["val_dice"],
        "best_val_loss": best["val_loss"],
        "best_epoch": prog.best_epoch,
        "epochs_run": len(prog.history),
        "final_train_iou": prog.history[-1]["train_iou"],
        "final_train_loss": prog.history[-1]["train_loss"],
    }


def finish(params: Params, paths: Paths, loop: EpochLoop, stats: dict, run: Any) -> dict[str, Any]:
    """Write every output from the state, log the finals and the model, end the run, mark the state completed.

    Each write replaces its file whole, so a run killed in here does it all again next time.
    """
    import mlflow

    prog = loop.progress
    result = summary(prog)
    write_model_dir(paths.model_dir, loop.best_model(), stats["mean"], stats["std"], params.data.image_size)
    atomic_write_json(paths.metrics_dir / "train.json", result, sort_keys=False)
    write_history(paths.plots_dir / "train" / "history.csv", prog.history)
    mlflow.log_metrics({"best_val_iou": result["best_val_iou"], "best_epoch": result["best_epoch"]})
    mlflow.log_metric("train_seconds", round(prog.seconds, 1))
    mlflow.log_artifacts(str(paths.model_dir), artifact_path="checkpoint")
    if params.mlflow.log_model:
        from fishseg.tracking.logged_model import log_inference_model

        log_inference_model(paths.model_dir, params.data.image_size)
    write_run_record(paths.run_json, run)
    end_run(run)
    loop.complete()
    return result
