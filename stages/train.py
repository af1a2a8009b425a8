"""train: fit the segmentation model, tracked in MLflow.

Builds the model from params (smp), trains with albumentations augmentation on the
prepared arrays, keeps the best model by val IoU in models/model, the resume state in
models/last, and writes metrics/train.json and plots/train/history.csv. Interrupted
runs (Ctrl-C, SIGTERM) save their state; `dvc repro` resumes them.

    python stages/train.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.train import train

    result = train(params, paths)
    if result:
        log.info("best val IoU %.4f at epoch %d", result["best_val_iou"], result["best_epoch"])


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
