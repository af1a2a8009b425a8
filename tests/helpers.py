"""What the tests share: shrunk real params, tiny datasets on disk, running the stage scripts.

Every test module imports its helpers from here; fixtures built on them are in conftest.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import yaml

from fishseg.params import Params, load_params
from fishseg.paths import SPLITS, Paths

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's tools: python, dvc, mlflow

# --------------------------------------------------------------------------- params


def tiny_overrides() -> dict:
    """The real params, shrunk to run in seconds on a 2-core CPU."""
    return {
        "data": {
            "source": "synthetic",
            "image_size": [32, 32],
            "synthetic": {"photos_per_species": 2, "copies_per_photo": 3, "width": 64, "height": 48},
        },
        "split": {"val": 0.15, "test": 0.15},
        "model": {"encoder": "mobilenet_v2", "encoder_weights": None},
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "num_workers": 0,
            "device": "cpu",
            "warmup_epochs": 0,
            "reproducible": False,
        },
        "plot": {"grid_rows": 2, "dpi": 40},
        "mlflow": {"log_model": False},
    }


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def tiny(**sections: dict) -> Params:
    """The real params file, shrunk (``tiny_overrides``), then ``sections`` merged on top,
    validated: ``tiny(train={"epochs": 3})``."""
    raw = merge(load_params(REPO / "params.yaml").model_dump(), tiny_overrides())
    return Params.model_validate(merge(raw, sections))


def write_params(root: Path, params: Params) -> None:
    """``params`` as the project's params.yaml, for the stage scripts to read."""
    (root / "params.yaml").write_text(yaml.safe_dump(json.loads(params.model_dump_json())))


def blob_pairs(n: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy blue backgrounds with one bright ellipse each: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        bg = np.array([30, 60, 160]) + rng.normal(0, 12, (h, w, 3))
        mask = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
        axes = (int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 10, h // 5)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        fish = np.array([200, 170, 120]) + rng.normal(0, 12, (h, w, 3))
        images[i] = np.clip(np.where(mask[..., None] > 0, fish, bg), 0, 255).astype(np.uint8)
        masks[i] = mask
    return images, masks


def write_prepared(
    root: Path, size: tuple[int, int] = (32, 32), counts: dict | None = None, seed: int = 0
) -> Paths:
    """A project with work/prepared, work/index.csv and work/stats.json, as split+stats write them."""
    import pandas as pd

    from fishseg.dataset.arrays import load_split
    from fishseg.dataset.stats import channel_stats
    from fishseg.fsutil import atomic_write_json

    counts = counts or {"train": 16, "val": 4, "test": 6}
    paths = Paths(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text("stages: {}\n")
    species = ["Trout", "Shrimp"]
    rows = []
    for k, split in enumerate(SPLITS):
        images, masks = blob_pairs(counts[split], size, seed + k)
        out = paths.prepared_split(split)
        out.mkdir(parents=True)
        ids = [f"{species[i % 2]}/{split}{i:03d}" for i in range(counts[split])]
        np.save(out / "images.npy", images)
        np.save(out / "masks.npy", masks)
        (out / "ids.json").write_text(json.dumps(ids))
        for i, id_ in enumerate(ids):
            # Originals at twice the training size: evaluate scores at full resolution.
            big = cv2.resize(masks[i] * 255, (2 * size[1], 2 * size[0]), interpolation=cv2.INTER_NEAREST)
            mask_file = root / "raw" / f"{id_}_mask.png"
            mask_file.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask_file), big)
            rows.append(
                {
                    "id": id_,
                    "species": species[i % 2],
                    "image": f"raw/{id_}.png",
                    "mask": mask_file.relative_to(root).as_posix(),
                    "width": 2 * size[1],
                    "height": 2 * size[0],
                    "fg_frac": float(masks[i].mean()),
                    "group": len(rows),
                    "split": split,
                }
            )
    pd.DataFrame(rows).to_csv(paths.index_csv, index=False)
    atomic_write_json(paths.stats_json, channel_stats(load_split(paths, "train")))
    return paths


REALFISH = REPO / "datasets" / "realfish"


def copy_real_pairs(dest: Path, picked: dict[str, int]) -> Path:
    """The first ``n`` embedded real photos of each species in ``picked``, with their masks, as
    ``dest/images/<Species>/<stem>.jpg`` + ``dest/masks/<Species>/<stem>.png`` (590x445)."""
    for species, n in picked.items():
        for image in sorted((REALFISH / "images" / species).glob("*.jpg"))[:n]:
            mask = REALFISH / "masks" / species / f"{image.stem}.png"
            for src, side in ((image, "images"), (mask, "masks")):
                (dest / side / species).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dest / side / species / src.name)
    return dest


def real_test_project(root: Path, trained: Paths, picked: dict[str, int]) -> Paths:
    """The trained project (model, train split, stats, history) with real photos as its test split.

    The photos go to ``work/raw/images`` + ``work/raw/masks`` and are prepared at the model's
    training size as the split stage prepares them; test ids are their relative names
    (``Sea Bass/00001``).
    """
    import pandas as pd

    from fishseg.dataset.arrays import save_split
    from fishseg.dataset.index import Pair, decode_pairs
    from fishseg.evaluation.pairs import find_pairs
    from fishseg.model.inference import read_preprocessing

    paths = Paths(root)
    history = trained.plots_dir / "train" / "history.csv"
    kept = (trained.model_dir, trained.prepared_split("train"), trained.stats_json, history)
    for rel in (p.relative_to(trained.root) for p in kept):
        copy = shutil.copytree if (trained.root / rel).is_dir() else shutil.copy
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        copy(trained.root / rel, root / rel)
    shutil.copy(trained.root / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text("stages: {}\n")
    found = find_pairs(*(copy_real_pairs(paths.raw_dir, picked) / side for side in ("images", "masks"))).pairs
    problems: list = []
    size = tuple(read_preprocessing(paths.model_dir)["image_size"])
    decoded = list(decode_pairs([Pair(p.species, p.image, p.mask) for p in found], size, problems))
    assert not problems and len(decoded) == len(found)
    test_dir = paths.prepared_split("test")
    test_dir.mkdir(parents=True)
    ids = [p.name for p in found]
    save_split(test_dir, np.stack([d.image for d in decoded]), np.stack([d.mask for d in decoded]), ids)
    index = pd.read_csv(trained.index_csv)
    test_rows = pd.DataFrame(
        {
            "id": ids,
            "species": [p.species for p in found],
            "image": [p.image.relative_to(root).as_posix() for p in found],
            "mask": [p.mask.relative_to(root).as_posix() for p in found],
            "width": [d.width for d in decoded],
            "height": [d.height for d in decoded],
            "fg_frac": [d.fg_frac for d in decoded],
            "group": range(len(index), len(index) + len(found)),
            "split": "test",
        }
    )
    pd.concat([index[index["split"] == "train"], test_rows]).to_csv(paths.index_csv, index=False)
    return paths


def read_metrics(paths: Paths, name: str) -> dict:
    """``metrics/<name>`` as written by a stage."""
    return json.loads((paths.metrics_dir / name).read_text())


def start_stage(root: Path, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python stages/<name>.py --root <root>`` as DVC runs it, output (merged) readable line by line."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "stages" / f"{name}.py"), "--root", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )


# --------------------------------------------------------------------------- projects under git and DVC


def tool_env(**extra: str) -> dict[str, str]:
    """The environment the pipeline's tools run in: this environment's bin first, the project's own store."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_tool(
    cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` (output captured); with ``check``, fail the test with its output."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return run_tool([str(BIN / "dvc"), *args], cwd=cwd, check=check, env=env)


def stages_run(output: str) -> list[str]:
    """The stages ``dvc repro`` / ``dvc exp run`` ran, in order, from their output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def copy_repo(dest: Path) -> None:
    """The repository's files (tracked and new, not ignored) into ``dest``, without outputs of a run."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if rel.startswith(("metrics/", "plots/")) or rel == "dvc.lock" or not src.is_file():
            continue  # start from nothing, as a user changing the data would
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


# --------------------------------------------------------------------------- source files

SHAPE = (12, 16)  # height, width: tiny, so that tests stay fast


@functools.cache
def image_bytes(value: int, ext: str = ".png", mask: bool = False) -> bytes:
    """An encoded 16x12 image (3 channels) or mask (0/255), distinct per ``value``."""
    if mask:
        pixels = np.zeros(SHAPE, np.uint8)
        pixels[2:10, 3 : 3 + value % 10 + 2] = 255
    else:
        rng = np.random.default_rng(value)
        pixels = rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    return buf.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fish_dataset(root: Path, species: dict[str, int], *, levels: int = 2, ext: str = ".png") -> Path:
    """The archive's layout under ``root`` with ``levels`` Fish_Dataset folders (2, 1 or 0)."""
    base = root.joinpath(*["Fish_Dataset"] * levels)
    for s_index, (name, count) in enumerate(species.items()):
        for i in range(count):
            value = 100 * s_index + i
            write(base / name / name / f"{i:05d}{ext}", image_bytes(value, ext))
            write(base / name / f"{name} GT" / f"{i:05d}{ext}", image_bytes(value, ext, mask=True))
    return root


def generic_dataset(root: Path, species: dict[str, int] | None, count: int = 3, *, ext: str = ".png") -> Path:
    """``images/`` + ``masks/``: per species subfolder, or flat when ``species`` is None."""
    groups = species or {"": count}
    for s_index, (name, n) in enumerate(groups.items()):
        for i in range(n):
            value = 100 * s_index + i
            sub = Path(name) if name else Path()
            write(root / "images" / sub / f"img_{i}{ext}", image_bytes(value, ext))
            write(root / "masks" / sub / f"img_{i}.png", image_bytes(value, ".png", mask=True))
    return root


def zip_tree(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip every file under ``folder`` (with directory entries, as common tools write them)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            name = prefix + path.relative_to(folder).as_posix()
            if path.is_dir():
                zf.writestr(name + "/", b"")
            else:
                zf.write(path, name)
    return zip_path


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: file bytes, or None for a directory."""
    return {
        p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


def make_good_raw(raw_dir: Path) -> dict[str, bytes | None]:
    """A previous, good ``work/raw`` (one species, two pairs); returns its snapshot."""
    fish_dataset(raw_dir, {"Trout": 2})
    (raw_dir / "marker.txt").write_text("previous run\n")
    return snapshot(raw_dir)


def assert_untouched(raw_dir: Path, before: dict[str, bytes | None]) -> None:
    """``raw_dir`` is byte-for-byte as before, and nothing else was left beside it."""
    assert snapshot(raw_dir) == before
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == [raw_dir.name]


# --------------------------------------------------------------------------- MLflow server / UI processes

MLFLOW_START_TIMEOUT_S = 90
MLFLOW_STOP_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (the CLI and its uvicorn worker), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=MLFLOW_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=MLFLOW_STOP_TIMEOUT_S)


@contextlib.contextmanager
def mlflow_process(command: str, store: str, log_path: Path, *extra: str) -> Iterator[str]:
    """``mlflow <command>`` (``server`` or ``ui``) on ``store``, bound to 127.0.0.1 on a free
    port; yields its URL once ``/health`` answers. Always stopped at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), command, "--backend-store-uri", store, *extra]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"mlflow {command} exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
                    )
                try:
                    if requests.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.perf_counter() - started > MLFLOW_START_TIMEOUT_S:
                    pytest.fail(f"mlflow {command} not healthy after {MLFLOW_START_TIMEOUT_S} s")
                time.sleep(0.25)
            yield url
        finally:
            stop_process_group(proc)
