"""Resume state: the progress of a run and the file that lets an interrupted run continue.

``models/last/state.pt`` holds the model, optimizer, schedule, scaler, torch RNG, the
interrupted epoch's metric sums, the best epoch's weights and the :class:`Progress`,
under a fingerprint of the params and data. It is the one file the stage's outputs are
written from at the end: DVC deletes ``models/model`` and the metrics before it reruns
the stage, but keeps ``models/last``. A run resumes only from a state with its own
fingerprint that is not completed; anything else starts fresh.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fishseg.evaluation.metrics import EpochMeter
from fishseg.fsutil import atomic_write_bytes
from fishseg.params import Params, TrainParams
from fishseg.training import distributed

if TYPE_CHECKING:
    from fishseg.training.engine import Engine

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"

Weights = dict[str, torch.Tensor]  # a state_dict


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
    seconds: float = 0.0  # time spent training, summed over the processes that ran it
    trained: bool = False  # every epoch run (or stopped early): only the outputs are left to write
    completed: bool = False  # the outputs written too: a rerun starts fresh

    def close_epoch(self, row: dict[str, float], val_iou: float, improved: bool, train: TrainParams) -> bool:
        """Record the finished epoch (history, best, epochs without gain); True when patience ends the run."""
        self.history.append(row)
        if improved:
            self.best_val_iou, self.best_epoch, self.stale_epochs = val_iou, self.epoch + 1, 0
        else:
            self.stale_epochs += 1
        self.epoch, self.step = self.epoch + 1, 0
        early_stop = train.patience > 0 and self.stale_epochs >= train.patience
        self.trained = early_stop or self.epoch >= train.epochs
        return early_stop


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


def save_state(path: Path, **parts: Any) -> None:
    """Write the resume state atomically; only tensors and plain types, so it loads with weights_only."""
    buffer = io.BytesIO()
    torch.save(parts, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``; ``None``, with a warning, when there is none that can be used."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: never trust it, start fresh
        log.warning("ignoring unreadable resume state %s (%s)", path, exc)
        return None
    problem = _state_problem(state)
    if problem:
        log.warning("ignoring resume state %s: %s; starting fresh", path, problem)
        return None
    return state


# Everything Checkpoint.save writes.
STATE_KEYS = (
    "fingerprint",
    "progress",
    "best",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "torch_rng",
    "meter",
)


def _state_problem(state: Any) -> str | None:
    """What makes a loaded file unusable as a resume state (``None``: nothing)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a state"
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        return f"it lacks {', '.join(missing)} (written by another version?)"
    progress = state["progress"]
    known = {f.name for f in fields(Progress)}
    if not isinstance(progress, dict) or not set(progress) <= known:
        return "its progress record is not one this version reads"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """The resume state file of a run with this ``fingerprint``."""

    path: Path
    fingerprint: str

    def save(
        self, engine: Engine, progress: Progress, best: Weights, meter: EpochMeter | None = None
    ) -> None:
        """Write the state; ``best``: the best epoch's weights; ``meter``: the interrupted epoch's
        sums, already reduced over processes."""
        save_state(
            self.path,
            fingerprint=self.fingerprint,
            model=engine.model.state_dict(),
            optimizer=engine.optimizer.state_dict(),
            scheduler=engine.scheduler.state_dict(),
            scaler=engine.scaler.state_dict(),
            torch_rng=torch.get_rng_state(),
            meter=meter.sums.cpu() if meter is not None else torch.zeros(8, dtype=torch.float64),
            best=best,
            progress=progress.__dict__,
        )

    def load(self) -> dict[str, Any] | None:
        """The saved state, after removing what killed writes left beside it."""
        self.remove_partial_writes()
        return load_state(self.path)

    def remove_partial_writes(self) -> None:
        """Temp files of state writes cut by a kill (never renamed into place; one writer per folder)."""
        for partial in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            log.warning("removing %s, left by an interrupted write of %s", partial, self.path.name)
            partial.unlink(missing_ok=True)


@dataclass
class Resumed:
    """Where a run starts: its progress, the best weights so far, the interrupted epoch's sums."""

    progress: Progress = field(default_factory=Progress)
    best: Weights = field(default_factory=dict)
    sums: torch.Tensor | None = None


def resume(checkpoint: Checkpoint, engine: Engine) -> Resumed:
    """Load a matching state that is not completed into ``engine``; else a fresh start.

    A state whose training is done but whose outputs were not all written (``trained``, not
    ``completed``) resumes too: the run then only writes them. Rank 0 decides and shares:
    every rank resumes from the same state, or none does, even when the other nodes cannot
    see rank 0's files.
    """
    d = engine.dist
    state = distributed.broadcast_object(checkpoint.load() if d.is_main else None, d)
    if state is None:
        return Resumed()
    if state["fingerprint"] != checkpoint.fingerprint or state["progress"].get("completed"):
        log.info(
            "resume state in %s is for other params/data or finished: starting fresh", checkpoint.path.parent
        )
        return Resumed()
    engine.model.load_state_dict(state["model"])
    engine.optimizer.load_state_dict(state["optimizer"])
    if state["scheduler"]:
        engine.scheduler.load_state_dict(state["scheduler"])
    engine.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    progress = Progress(**state["progress"])
    if progress.trained:
        log.info("resuming from %s: training done, writing the outputs", checkpoint.path)
    else:
        log.info("resuming from %s: epoch %d, step %d", checkpoint.path, progress.epoch + 1, progress.step)
    return Resumed(progress, state["best"], state["meter"] if progress.step > 0 else None)


def copy_weights(model: torch.nn.Module) -> Weights:
    """A CPU copy of ``model``'s weights and buffers (kept as the best, saved with the state)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
