"""Log the trained model to MLflow as a ready-to-use PyTorch model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fishseg.model.inference import load_inference_model

log = logging.getLogger(__name__)


def requirements() -> list[str]:
    """What loading the exported (pt2) model needs: torch alone, plus numpy for its inputs.

    Given explicitly because MLflow's inference of requirements loads the model again in a
    subprocess (10-20 s on a small CPU) only to find these.
    """
    torch_version = torch.__version__.split("+")[0]  # drop the local build tag (+cu130, +cpu)
    return [f"torch=={torch_version}", f"numpy=={np.__version__}"]


def log_inference_model(model_dir: Path, image_size: tuple[int, int], name: str = "model"):
    """``mlflow.pytorch.log_model`` of the packaged model (normalisation + net + sigmoid).

    The input example and signature describe RGB images in [0, 255] at the training size;
    MLflow's default pt2 format needs both (a batch of two keeps the batch size dynamic).
    The exported graph accepts only that size: readers take it from the signature. The
    preprocessing record goes into the MLmodel file's metadata for anyone who wants it.
    """
    import mlflow
    from mlflow.models import infer_signature

    model, preprocessing = load_inference_model(model_dir)
    height, width = image_size
    example = np.random.default_rng(0).uniform(0, 255, size=(2, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    info = mlflow.pytorch.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        pip_requirements=requirements(),
        metadata={"fishseg_preprocessing": preprocessing, "input": "RGB float32 in [0, 255], (B, 3, H, W)"},
    )
    log.info("logged model %s", info.model_uri)
    return info
