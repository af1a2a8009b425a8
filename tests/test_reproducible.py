"""``train.reproducible``: the same bits whatever CPU the libraries find.

There is one CPU here, so another one is simulated by capping what this one offers to
each library that picks its code by the CPU (oneDNN, ATen, MKL, OpenCV, NumPy: AVX2 only)
and by the thread count. The training runs through the train stage script, as `dvc repro`
starts it, since the pins must be in the environment before torch is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest
import torch

from fishseg.device import CPU_PINS, pin_cpu_runtime
from fishseg.errors import FishsegError
from fishseg.params import TrainParams
from fishseg.training.optim import build_optimizer
from fishseg.training.state import fingerprint

from .helpers import REPO, tiny, write_params, write_prepared

# What an AVX2-only CPU with one core looks like to the libraries (read at import).
AVX2_ONE_CORE = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR",
    "OMP_NUM_THREADS": "1",
}
THIS_CPU_TWO_CORES = {"OMP_NUM_THREADS": "2"}
HAS_AVX2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def test_pinning_the_environment_imports_nothing_and_overrides_user_settings():
    code = (
        "import json, sys; from fishseg.device import pin_cpu_environment; "
        "env = {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE', 'HOME': '/x'}; replaced = pin_cpu_environment(env); "
        "print(json.dumps([replaced, env, sorted(m for m in ('torch', 'cv2', 'numpy') if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    replaced, env, imported = json.loads(out.stdout)
    assert replaced == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert env == {**CPU_PINS, "HOME": "/x"}
    assert imported == []


def test_runtime_refuses_an_environment_pinned_too_late(monkeypatch):
    for key in CPU_PINS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(FishsegError, match="MKL_CBWR.*before torch was imported"):
        pin_cpu_runtime(True)
    assert pin_cpu_runtime(False) == (
        f"native-{torch.backends.cpu.get_cpu_capability().lower()}-{torch.get_num_threads()}t"
    )


def test_the_option_steps_adamw_with_the_fused_kernel_and_the_same_maths():
    # The per-tensor AdamW takes its square root from MKL's vector maths (CPU-dependent
    # last bits); the fused kernel computes the same update with the CPU's exact sqrt.
    def flat(net: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    weights = {}
    for reproducible in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
        start = flat(net).clone()
        optimizer = build_optimizer(net, TrainParams(reproducible=reproducible, lr=1e-2))
        assert bool(optimizer.param_groups[0]["fused"]) is reproducible
        for step in range(5):
            torch.manual_seed(100 + step)
            net(torch.randn(2, 3, 16, 16)).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        weights[reproducible] = flat(net)
        assert not torch.equal(weights[reproducible], start)
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def test_switching_the_option_starts_training_fresh():
    params = tiny()
    pinned = params.model_copy(update={"train": params.train.model_copy(update={"reproducible": True})})
    ids = {"train": ["a"], "val": ["b"]}
    assert fingerprint(params, {}, ids) != fingerprint(pinned, {}, ids)


def _train_stage(tmp_path, name: str, cpu: dict[str, str], reproducible: bool) -> tuple[bytes, str, str]:
    """One training through the stage script on a simulated CPU: weights, history, cpu_numerics."""
    paths = write_prepared(tmp_path / name, size=(64, 64), counts={"train": 12, "val": 4, "test": 2})
    params = tiny(data={"image_size": [64, 64]}, train={"epochs": 1, "reproducible": reproducible})
    write_params(paths.root, params)
    env = {k: v for k, v in os.environ.items() if k not in CPU_PINS and k not in AVX2_ONE_CORE}
    out = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py"), "--root", str(paths.root)],
        env={**env, **cpu},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = json.loads(paths.run_json.read_text())["run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{paths.root / 'mlflow.db'}").get_run(run_id)
    weights = (paths.model_dir / "model.safetensors").read_bytes()
    history = (paths.plots_dir / "train" / "history.csv").read_text()
    return weights, history, run.data.params["cpu_numerics"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_AVX2, reason="train.reproducible needs a CPU with AVX2")
def test_training_is_bit_identical_on_simulated_cpus_only_with_the_option(tmp_path):
    free = [
        _train_stage(tmp_path, f"free-{i}", cpu, False)
        for i, cpu in enumerate((THIS_CPU_TWO_CORES, AVX2_ONE_CORE))
    ]
    pinned = [
        _train_stage(tmp_path, f"pinned-{i}", cpu, True)
        for i, cpu in enumerate((THIS_CPU_TWO_CORES, AVX2_ONE_CORE))
    ]

    # Without the option each CPU trains its own model ...
    assert free[0][0] != free[1][0]
    assert free[1][2] == "native-avx2-1t"
    # ... with it, the weights and every logged number are the same bits.
    assert pinned[0][0] == pinned[1][0]
    assert pinned[0][1] == pinned[1][1]
    assert [p[2] for p in pinned] == ["avx2-pinned", "avx2-pinned"]
