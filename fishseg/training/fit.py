"""The epochs of a run: train, validate, close the epoch (history, best weights, early stop), save state."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from fishseg.evaluation.metrics import EpochMeter
from fishseg.params import TrainParams
from fishseg.tracking.runs import log_epoch
from fishseg.training import distributed
from fishseg.training.engine import Engine
from fishseg.training.history import history_row
from fishseg.training.loop import train_one_epoch, validate
from fishseg.training.signals import Interrupted, StopFlag
from fishseg.training.state import Checkpoint, Progress, Weights, copy_weights

log = logging.getLogger(__name__)


@dataclass
class EpochLoop:
    """The remaining epochs of one run; ``progress`` and ``best`` say where it stands and are what resumes."""

    engine: Engine
    train_loader: DataLoader
    val_loader: DataLoader
    checkpoint: Checkpoint
    settings: TrainParams
    progress: Progress
    best: Weights  # the best epoch's weights so far (CPU), saved with every state
    show_bar: bool = True  # progress bars (rank 0)
    _clock: float = field(default_factory=time.perf_counter, init=False)

    def run(self, stop: StopFlag, resumed_sums: torch.Tensor | None = None) -> None:
        """Train the remaining epochs; raise :class:`Interrupted`, state saved, when a signal stops a step."""
        while not self.progress.trained:
            train_meter = self.train_epoch(stop, resumed_sums)
            resumed_sums = None
            val_meter = self.validate_epoch()
            if self.close_epoch(train_meter.result(), val_meter.result()):
                log.info("early stopping: no val IoU gain in %d epochs", self.settings.patience)
                break

    def train_epoch(self, stop: StopFlag, resumed_sums: torch.Tensor | None) -> EpochMeter:
        prog, d = self.progress, self.engine.dist
        items_done = prog.step * self.engine.accumulate * self.settings.batch_size  # by this rank
        self.train_loader.sampler.set_epoch(prog.epoch, start=items_done)
        meter = EpochMeter(self.engine.device)
        if resumed_sums is not None and d.is_main:
            meter.sums += resumed_sums.to(self.engine.device)  # already summed over ranks: added once
        stopped_at = train_one_epoch(
            self.engine, self.train_loader, meter, first_step=prog.step, stop=stop, show_bar=self.show_bar
        )
        meter.reduce_from_all_processes()
        if stopped_at is not None:
            prog.step = stopped_at
            self.save(meter)
            raise Interrupted(
                f"training interrupted in epoch {prog.epoch + 1} (step {prog.step}); state saved to "
                f"{self.checkpoint.path}. Run `dvc repro` again to resume."
            )
        return meter

    def validate_epoch(self) -> EpochMeter:
        # Every rank validates (and rank 0 saves) the model with rank 0's batch-norm statistics.
        distributed.sync_buffers(self.engine.model, self.engine.dist)
        # The plain model: each rank scores its own shard, with no DDP collectives in between.
        meter = validate(self.engine.model, self.engine.forward, self.engine.loss_fn, self.val_loader)
        meter.reduce_from_all_processes()
        return meter

    def close_epoch(self, train: dict[str, float], val: dict[str, float]) -> bool:
        """History, schedule, best weights and state after an epoch; True when patience ends the run."""
        prog, engine = self.progress, self.engine
        row = history_row(prog.epoch + 1, engine.lr, train, val)
        engine.after_epoch(val["iou"])
        improved = len(self.val_loader.dataset) == 0 or val["iou"] > prog.best_val_iou
        early_stop = prog.close_epoch(row, val["iou"], improved, self.settings)
        log.info(
            "epoch %d/%d  loss %.4f/%.4f  IoU %.4f/%.4f (train/val)%s",
            prog.epoch, self.settings.epochs, train["loss"], val["loss"], train["iou"], val["iou"],
            "  *best*" if improved else "",
        )  # fmt: skip
        if improved:
            self.best = copy_weights(engine.model)
        if engine.dist.is_main:
            log_epoch(row)
        self.save()
        distributed.barrier(engine.dist)
        return early_stop

    def save(self, meter: EpochMeter | None = None) -> None:
        """The resume state (rank 0), with the training time up to now."""
        now = time.perf_counter()
        self.progress.seconds += now - self._clock
        self._clock = now
        if self.engine.dist.is_main:
            self.checkpoint.save(self.engine, self.progress, self.best, meter)

    def complete(self) -> None:
        """Record that every output is written: a rerun of the stage starts fresh."""
        self.progress.completed = True
        self.save()

    def best_model(self) -> nn.Module:
        """A copy of the model holding the best epoch's weights."""
        model = copy.deepcopy(self.engine.model)
        model.load_state_dict(self.best)
        return model
