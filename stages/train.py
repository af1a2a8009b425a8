"""train: fit the segmentation model, tracked in MLflow.

Builds the model from params (smp), trains with albumentations augmentation on the
prepared arrays and keeps the resume state, with the best weights by val IoU, in
models/last; at the end it writes models/model, models/run.json, metrics/train.json and
plots/train/history.csv from that state. Interrupted runs (Ctrl-C, SIGTERM) save their
state, a second Ctrl-C stops at once; `dvc repro` resumes them, also after a kill -9.

    python stages/train.py [--params params.yaml]

With train.nproc_per_node > 1 the script runs itself under torchrun (one process
per GPU, or per CPU slot with train.device: cpu). On several nodes, start it by hand:

    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_id fish \
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 stages/train.py
"""

import sys

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.device import prepare_cpu_numerics

    prepare_cpu_numerics(params.train.reproducible)  # before torch is imported
    from fishseg.training import launch

    if launch.needs_launch(params.train):
        launch.run_torchrun(params.train, __file__, sys.argv[1:])
        return

    from fishseg.training.train import train

    result = train(params, paths)
    if result:
        log.info("best val IoU %.4f at epoch %d", result["best_val_iou"], result["best_epoch"])


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
