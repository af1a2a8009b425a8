"""ONNX export of the packaged model, checked against PyTorch with onnxruntime on the CPU."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fishseg.model.inference import load_inference_model
from fishseg.serve.export import DEFAULT_TOLERANCE, check_parity, export_onnx, main, max_abs_diff


@pytest.fixture(scope="module")
def model_dir(trained):
    """``models/model`` from a tiny real training run (trained batch-norm statistics included)."""
    return trained.paths.model_dir


def test_export_command_matches_pytorch_on_a_batch_of_two(model_dir, tmp_path, caplog):
    out = tmp_path / "model.onnx"
    with caplog.at_level(logging.INFO, logger="fishseg"):
        assert main(["--model", str(model_dir), "--out", str(out)]) == 0
    assert "(2, 3, 32, 32) random images: max abs diff" in caplog.text

    model, pre = load_inference_model(model_dir)
    diff = max_abs_diff(model, out, (2, 3, 32, 32), seed=1)
    print(f"ONNX vs PyTorch, batch of 2 at 32x32: max abs diff {diff:.3g}")
    assert diff < DEFAULT_TOLERANCE

    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["fishseg.preprocessing"]) == pre
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("images", "probabilities")
    assert inp.shape[1:] == [3, 32, 32] and isinstance(inp.shape[0], str)  # dynamic batch only
    images = np.random.default_rng(2).uniform(0, 255, (5, 3, 32, 32)).astype(np.float32)
    (probs,) = session.run(None, {"images": images})
    assert probs.shape == (5, 1, 32, 32)
    with torch.no_grad():  # a batch of five: the batch axis is really dynamic
        np.testing.assert_allclose(probs, model(torch.from_numpy(images)).numpy(), atol=DEFAULT_TOLERANCE)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})


def test_dynamic_size_export_matches_pytorch_at_other_sizes(model_dir, tmp_path):
    out = tmp_path / "dynamic.onnx"
    model, pre = export_onnx(model_dir, out, opset=18, dynamic_size=True)
    assert check_parity(model, out, tuple(pre["image_size"]), dynamic_size=True) < DEFAULT_TOLERANCE
    diff = max_abs_diff(model, out, (1, 3, 96, 64))
    print(f"ONNX (dynamic H/W) vs PyTorch at 96x64: max abs diff {diff:.3g}")
    assert diff < DEFAULT_TOLERANCE


def test_export_usage_errors(tmp_path, caplog):
    assert main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "preprocessing.json: missing" in caplog.text
    assert not (tmp_path / "m.onnx").exists()


def test_failed_parity_keeps_the_previous_file_and_leaves_no_other(model_dir, tmp_path, caplog):
    """A parity failure exits 1: the previous .onnx stays as it was, and no temp file remains."""
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous, checked export")
    assert main(["--model", str(model_dir), "--out", str(out), "--tolerance", "1e-15"]) == 1
    assert out.read_bytes() == b"the previous, checked export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "differs from PyTorch by" in error and f"{out} was not written" in error
