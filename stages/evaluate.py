"""evaluate: score the best model on the test split and add the numbers to its MLflow run.

Writes metrics/eval.json (test IoU and Dice first, then per-image IoU and Dice,
precision, recall, boundary F1, pixel accuracy), plots/eval/per_species.csv,
plots/eval/per_image.csv, and the test predictions (models/test_predictions.npz) that
the plot stage draws.

    python stages/evaluate.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.device import prepare_cpu_numerics

    prepare_cpu_numerics(params.train.reproducible)  # before torch is imported
    from fishseg.evaluation.evaluate import evaluate

    metrics = evaluate(params, paths)
    log.info(
        "test IoU %.4f (per image %.4f), Dice %.4f",
        metrics["test_iou"],
        metrics["test_iou_per_image"],
        metrics["test_dice"],
    )


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
