"""Export the packaged model to ONNX and check it against PyTorch.

    python -m fishseg.export --model models/model --out model.onnx [--opset 17] [--dynamic-size]

The graph is the whole :class:`~fishseg.model.inference.InferenceModel`: normalisation, network
and sigmoid. Input ``images``: float32 RGB in [0, 255], shape (batch, 3, H, W); output
``probabilities``: float32 in [0, 1], shape (batch, 1, H, W). The batch size is dynamic.
H and W are fixed at the training size (``preprocessing.json``), as the MLflow model is;
resize images to it as ``python -m fishseg.predict`` does. With ``--dynamic-size`` H and W are
dynamic too (multiples of 32). The preprocessing record is stored in the file's metadata
(``fishseg.preprocessing``).

After writing, the file is run with onnxruntime on the CPU on random images and compared
with PyTorch; the maximum absolute difference of the probabilities is logged, and the
command fails (exit 1) above ``--tolerance``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from fishseg.cli import offline_env, setup_logging
from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_write_bytes
from fishseg.model.inference import InferenceModel, load_inference_model

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "probabilities"
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4


def export_onnx(
    model_dir: Path, out: Path, *, opset: int = DEFAULT_OPSET, dynamic_size: bool = False
) -> tuple[InferenceModel, dict]:
    """Write ``out`` (checked with ``onnx.checker``); return the PyTorch model and its preprocessing."""
    import onnx

    model, pre = load_inference_model(model_dir, "cpu")
    height, width = pre["image_size"]
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of the torch.export one,
            # which needs onnxscript; this one exports the model exactly (see the parity check).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, height, width),),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: axes, OUTPUT: axes},
            )
    except (RuntimeError, ValueError, torch.onnx.errors.OnnxExporterError) as exc:
        raise FishsegError(f"ONNX export (opset {opset}) failed: {exc}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(
        proto,
        {
            "fishseg.preprocessing": json.dumps(pre, sort_keys=True),
            "fishseg.input": "RGB float32 in [0, 255], (batch, 3, H, W)",
            "fishseg.output": "fish probability, (batch, 1, H, W)",
        },
    )
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    log.info("wrote %s (opset %d, %.1f MB)", out, opset, out.stat().st_size / 1e6)
    return model, pre


def max_abs_diff(
    model: torch.nn.Module, onnx_path: Path, shape: tuple[int, int, int, int], seed: int = 0
) -> float:
    """Largest |onnxruntime - PyTorch| on one batch of uniform random images, on the CPU."""
    import onnxruntime as ort

    images = np.random.default_rng(seed).uniform(0, 255, size=shape).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT], {INPUT: images})
    with torch.no_grad():
        torch_out = model.cpu()(torch.from_numpy(images)).numpy()
    if onnx_out.shape != torch_out.shape:
        raise FishsegError(f"{onnx_path}: output shape {onnx_out.shape}, PyTorch gives {torch_out.shape}")
    return float(np.abs(onnx_out - torch_out).max())


def parity_shapes(image_size: tuple[int, int], dynamic_size: bool) -> list[tuple[int, int, int, int]]:
    """A batch of two at the training size; with dynamic H/W also a batch of three at another size."""
    height, width = image_size
    shapes = [(2, 3, height, width)]
    if dynamic_size:
        shapes.append((3, 3, height + 32, width + 64))
    return shapes


def check_parity(
    model: torch.nn.Module, onnx_path: Path, image_size: tuple[int, int], dynamic_size: bool = False
) -> float:
    """The worst difference over :func:`parity_shapes`, each logged."""
    worst = 0.0
    for shape in parity_shapes(image_size, dynamic_size):
        diff = max_abs_diff(model, onnx_path, shape)
        log.info("onnxruntime vs PyTorch on %s random images: max abs diff %.3g", shape, diff)
        worst = max(worst, diff)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fishseg.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, default=Path("models/model"), help="model directory (default: models/model)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})"
    )
    parser.add_argument("--dynamic-size", action="store_true", help="dynamic H and W, not only the batch")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest allowed max abs diff against PyTorch (default: {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        # Configure only a bare process; a host (pytest, a notebook) keeps its own set-up.
        setup_logging(args.verbose)
    offline_env()
    try:
        model, pre = export_onnx(args.model, args.out, opset=args.opset, dynamic_size=args.dynamic_size)
        diff = check_parity(model, args.out, tuple(pre["image_size"]), args.dynamic_size)
    except FishsegError as exc:
        log.error("%s", exc)
        return 2
    if diff > args.tolerance:
        log.error("max abs diff %.3g exceeds --tolerance %.3g: do not use %s", diff, args.tolerance, args.out)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
