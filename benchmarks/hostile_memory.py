"""Peak memory of the commands on decompression bombs, beside the same commands on harmless
input and beside what reading the bomb without the guards takes; and the time Python
3.11.7's tarfile spends on a pax header built for CVE-2024-6232, beside this project's parser.

Every figure is one process's peak resident memory (``ru_maxrss`` from ``os.wait4``),
started from a small launcher so that nothing of this script's own memory is counted.

    python benchmarks/hostile_memory.py [--side 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import _common
from tests._fishdata import fish_dataset, image_bytes, write, zip_tree

from fishseg.model.factory import build_model
from fishseg.model.io import save_model
from fishseg.params import ModelParams
from fishseg.sources.tarsource import parse_pax
from tests._hostile import bomb_png, run_command, scratch_project, stage
from tests.test_hostile_archives import pax_header_50mb_over_byte_cap, tar_member, zip_ratio_1029

PYTHON_SNIPPETS = {
    "decode": "import cv2, numpy as np, sys; cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR)",
    "tarfile": "import tarfile, sys; tarfile.open(sys.argv[1]).getmembers()",
    "zipfile": "import zipfile, sys; z = zipfile.ZipFile(sys.argv[1]); [z.read(n) for n in z.namelist()]",
}


def peak(argv: list[str], cwd: Path, **kwargs) -> tuple[int, float]:
    outcome = run_command(argv, cwd, env={"PYTHONPATH": str(_common.ROOT)}, timeout=900, **kwargs)
    return outcome.code, outcome.peak_mb


def snippet(name: str, path: Path, cwd: Path) -> float:
    return peak(["python", "-c", PYTHON_SNIPPETS[name], str(path)], cwd)[1]


def model_folder(root: Path) -> Path:
    """An untrained models/model (the memory of predict does not depend on the weights)."""
    import json

    folder = root / "model"
    folder.mkdir()
    save_model(build_model(ModelParams()), folder)
    pre = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "image_size": [96, 128]}
    (folder / "preprocessing.json").write_text(json.dumps(pre))
    return folder


def image_rows(tmp: Path, bomb: Path) -> list[tuple]:
    rows = []
    # split: a raw folder of 20 pairs, then the same with one image replaced by the bomb
    root = scratch_project(tmp / "split", data={"image_size": [32, 32]})
    fish_dataset(root / "data" / "raw", {"Trout": 10, "Shrimp": 10})
    good = stage("split", root)
    shutil.copy(bomb, root / "data/raw/Fish_Dataset/Fish_Dataset/Trout/Trout/00001.png")
    bad = stage("split", root)
    rows.append(("split", good.code, good.peak_mb, bad.code, bad.peak_mb, snippet("decode", bomb, tmp)))
    # predict: one small photo, then the bomb
    model = model_folder(tmp)
    photo = write(tmp / "photo.png", image_bytes(1))
    runs = []
    for name, image in (("small", photo), ("bomb", bomb)):
        argv = [
            "python",
            "-m",
            "fishseg.predict",
            str(image),
            "--model",
            str(model),
            "--out",
            str(tmp / name),
        ]
        runs.append(peak([*argv, "--no-progress"], tmp))
    rows.append(("predict", *runs[0], *runs[1], None))
    return rows


def archive_rows(tmp: Path) -> list[tuple]:
    rows = []
    good = zip_tree(fish_dataset(tmp / "good", {"Trout": 2}), tmp / "good.zip")
    for name, build, reader in (
        ("download, 50 MB pax header", pax_header_50mb_over_byte_cap, "tarfile"),
        ("download, 1029:1 zip member", zip_ratio_1029, "zipfile"),
    ):
        folder = tmp / name.split(",")[1].strip().replace(" ", "_").replace(":", "")
        folder.mkdir()
        source, params, _ = build(folder)
        runs = []
        for src, extra in ((good, {}), (source, params)):
            root = scratch_project(folder / f"project{len(runs)}", data={"source": str(src), **extra})
            outcome = stage("download", root)
            runs.append((outcome.code, outcome.peak_mb))
        rows.append((name, *runs[0], *runs[1], snippet(reader, source, tmp)))
    return rows


def redos_rows() -> list[tuple[int, float, float]]:
    rows = []
    for records in (5_000, 10_000, 20_000, 40_000):
        payload = b"2 " * records + b"x=y\n"
        data = tar_member("./PaxHeaders/x", payload, b"x") + tar_member("a.png", b"abc") + bytes(1024)
        started = time.process_time()
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                tf.getmembers()
        except tarfile.TarError:
            pass
        stdlib = time.process_time() - started
        started = time.perf_counter()
        with contextlib.suppress(ValueError):
            parse_pax(payload)
        rows.append((len(payload), stdlib, time.perf_counter() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--side", type=int, default=20_000, help="side of the PNG bomb in pixels (default 20000)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bomb = bomb_png(tmp / "bomb.png", args.side)
        print(f"PNG bomb: {args.side}x{args.side}, {bomb.stat().st_size / 1e3:.0f} KB on disk")
        print(f"{'command':32} {'harmless':>17} {'bomb':>17} {'unguarded read':>15}")
        for name, code0, mb0, code1, mb1, ref in image_rows(tmp, bomb) + archive_rows(tmp):
            ref_text = f"{ref:.0f} MB" if ref is not None else "-"
            print(f"{name:32} {mb0:5.0f} MB (exit {code0}) {mb1:5.0f} MB (exit {code1}) {ref_text:>15}")
    print("\npax header of '2 2 2 ... x=y' (CVE-2024-6232): CPU seconds to read it")
    print(f"{'bytes':>8} {'tarfile 3.11.7':>15} {'fishseg':>10}")
    for size, stdlib, ours in redos_rows():
        print(f"{size:8d} {stdlib:14.3f}s {ours * 1e3:8.3f}ms")
    print("exit status: 0 ran, 1 some inputs skipped (named), 2 refused")


if __name__ == "__main__":
    main()
