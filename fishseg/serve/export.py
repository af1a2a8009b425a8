"""Export the packaged model to ONNX and check it against PyTorch.

    python -m fishseg.export --model models/model --out model.onnx [--opset 17] [--dynamic-size]

The graph is the whole :class:`~fishseg.model.inference.InferenceModel`: normalisation, network
and sigmoid. Input ``images``: float32 RGB in [0, 255], shape (batch, 3, H, W); output
``probabilities``: float32 in [0, 1], shape (batch, 1, H, W). The batch size is dynamic.
H and W are fixed at the training size (``preprocessing.json``), as the MLflow model is;
resize images to it as ``python -m fishseg.predict`` does. With ``--dynamic-size`` H and W are
dynamic too (multiples of 32). The preprocessing record is stored in the file's metadata
(``fishseg.preprocessing``).

The graph is written to a temp file beside ``--out`` and run with onnxruntime on the CPU
on random images; the maximum absolute difference from PyTorch is logged. Only when it is
finite and within ``--tolerance`` does the file replace ``--out``: a failed export leaves
any previous ``.onnx`` as it was and no file behind. Exit status: 0 written, 1 parity
failed (a NaN difference fails too), 2 usage errors (bad model, unwritable --out).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from fishseg.cli import run_tool
from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_write_bytes, write_error
from fishseg.model.inference import InferenceModel, load_inference_model

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "probabilities"
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4


class ParityError(FishsegError):
    """The exported graph does not compute what the PyTorch model computes."""

    exit_code = 1


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
    try:
        atomic_write_bytes(out, proto.SerializeToString())
    except OSError as exc:
        raise write_error(out, exc, "choose another --out or free some disk space") from None
    log.info("exported the graph (opset %d, %.1f MB)", opset, out.stat().st_size / 1e6)
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
    """The worst difference over :func:`parity_shapes`, each logged (NaN if any is NaN)."""
    worst = 0.0
    for shape in parity_shapes(image_size, dynamic_size):
        diff = max_abs_diff(model, onnx_path, shape)
        log.info("onnxruntime vs PyTorch on %s random images: max abs diff %.3g", shape, diff)
        worst = diff if math.isnan(diff) else max(worst, diff)
    return worst


def export_checked(args: argparse.Namespace) -> None:
    """Export to a temp file beside ``--out``; move it there only when parity holds."""
    out = Path(args.out)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    except OSError as exc:
        raise write_error(out, exc, "choose an existing, writable folder for --out") from None
    os.close(fd)
    tmp = Path(name)
    try:
        model, pre = export_onnx(args.model, tmp, opset=args.opset, dynamic_size=args.dynamic_size)
        diff = check_parity(model, tmp, tuple(pre["image_size"]), args.dynamic_size)
        # `not diff <= tolerance` also catches NaN, for which every comparison is False.
        if not diff <= args.tolerance:
            raise ParityError(
                f"{args.model}: the ONNX graph differs from PyTorch by {diff:.3g} (--tolerance {args.tolerance:g}); "
                f"{out} was not written: check the opset (--opset) or the model's weights"
            )
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("exported %s: max abs diff %.3g within --tolerance %g", out, diff, args.tolerance)


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
    return run_tool(args, export_checked)


if __name__ == "__main__":
    raise SystemExit(main())
