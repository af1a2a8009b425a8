"""Kaggle scale: the data stages and one training epoch at the archive's size, per stage.

The archive holds 9 species x 1,000 image/mask pairs at 590x445. The synthetic generator
makes a data set of that size (``--per-species`` pairs: a quarter as photos, four copies
each), zipped as the archive is (Kaggle's layout), and the stages then run on it as
``dvc repro`` runs them (``python stages/<stage>.py`` in a scratch copy of the project,
``data.source`` the zip, ``train.epochs`` 1) under ``/usr/bin/time -v``: wall time, CPU time
(user + system) and peak resident memory per stage, plus the sizes on disk. Each size in
``--per-species`` runs with the same code, so the table shows how every stage grows.

The download row is the download stage reading the zip (a Kaggle download without the
network: the same extraction, checks and copy); generating the synthetic set is listed
apart, as it is not part of a Kaggle run.

    python benchmarks/kaggle_scale.py [--per-species 100 1000] [--epochs 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import _common
import yaml

STAGES = ("download", "split", "stats", "train")
THREADS = 0  # torch's threads per stage (OMP_NUM_THREADS); 0: its default, one per core
_TIME = {
    "wall": re.compile(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)"),
    "user": re.compile(r"User time \(seconds\): ([\d.]+)"),
    "sys": re.compile(r"System time \(seconds\): ([\d.]+)"),
    "rss": re.compile(r"Maximum resident set size \(kbytes\): (\d+)"),
}


def timed(cmd: list[str], cwd: Path) -> dict[str, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall and CPU seconds, peak RSS in MB."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1")
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    hours, minutes, seconds = _TIME["wall"].search(done.stderr).groups()
    return {
        "wall": int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds),
        "cpu": float(_TIME["user"].search(done.stderr)[1]) + float(_TIME["sys"].search(done.stderr)[1]),
        "rss_mb": int(_TIME["rss"].search(done.stderr)[1]) / 1024,
    }


def megabytes(path: Path) -> float:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def project(root: Path, source: str, per_species: int, epochs: int) -> None:
    """A scratch copy of the project's code and params (no git, no DVC: the stages alone)."""
    for rel in ("stages", "fishseg"):
        shutil.copytree(_common.ROOT / rel, root / rel, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "dvc.yaml").write_text("stages: {}\n")
    params = yaml.safe_load((_common.ROOT / "params.yaml").read_text())
    params["data"]["source"] = source
    params["data"]["synthetic"].update(photos_per_species=per_species // 4, copies_per_photo=4)
    params["train"]["epochs"] = epochs
    params["mlflow"]["log_model"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def zip_raw(raw: Path, archive: Path) -> None:
    """The archive's layout, stored (PNGs do not compress)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(raw.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(raw).as_posix())


def one_size(base: Path, per_species: int, epochs: int) -> dict:
    python = sys.executable
    gen = base / f"gen{per_species}"
    project(gen, "synthetic", per_species, epochs)
    rows = {"generate": timed([python, "stages/download.py"], gen)}
    archive = base / f"fish{per_species}.zip"
    zip_raw(gen / "work" / "raw", archive)
    shutil.rmtree(gen)
    run = base / f"run{per_species}"
    project(run, str(archive), per_species, epochs)
    for stage in STAGES:
        rows[stage] = timed([python, f"stages/{stage}.py"], run)
        print(f"  {per_species} per species, {stage}: {rows[stage]}", flush=True)
    sizes = {
        "archive": megabytes(archive),
        "work/raw": megabytes(run / "work" / "raw"),
        "work/prepared": megabytes(run / "work" / "prepared"),
    }
    shutil.rmtree(run)
    archive.unlink()
    return {"rows": rows, "sizes": sizes}


def print_table(results: dict[int, dict]) -> None:
    sizes = sorted(results)
    head = " | ".join(f"{9 * n:,} pairs: wall / CPU / peak RSS" for n in sizes)
    print(f"| stage | {head} | CPU growth |")
    print("| --- |" + " --- |" * (len(sizes) + 1))
    for stage in ("generate", *STAGES):
        cells = []
        for n in sizes:
            r = results[n]["rows"][stage]
            cells.append(f"{r['wall']:.0f} s / {r['cpu']:.0f} s / {r['rss_mb']:,.0f} MB")
        first, last = results[sizes[0]]["rows"][stage], results[sizes[-1]]["rows"][stage]
        growth = f"x{last['cpu'] / max(first['cpu'], 1e-9):.1f} for x{sizes[-1] / sizes[0]:.0f} pairs"
        print(f"| {stage} | {' | '.join(cells)} | {growth} |")
    for name in ("archive", "work/raw", "work/prepared"):
        cells = " | ".join(f"{results[n]['sizes'][name]:,.0f} MB" for n in sizes)
        print(f"| size of {name} | {cells} | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-species", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for the stages; 1 on a shared machine, where idle threads spinning "
        "for busy cores would count as CPU time (default: torch's own choice)",
    )
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    results = {}
    with tempfile.TemporaryDirectory(prefix="fishseg-scale-") as tmp:
        for n in args.per_species:
            results[n] = one_size(Path(tmp), n, args.epochs)
    print_table(results)


if __name__ == "__main__":
    main()
