"""Disk used by two queued experiments: DVC's default ``cache.type`` against links.

``dvc exp run --queue`` runs each experiment in a temp copy of the repo under
``.dvc/tmp/exps``, into which DVC checks the baseline's outputs out of the cache. With
DVC's default ``cache.type`` (``reflink,copy``) on a filesystem without reflinks that is
a copy of ``work/`` (raw data, prepared arrays) and ``models/`` per experiment; with the
project's ``reflink,hardlink,symlink,copy`` it is links.

The script makes a scratch copy of this project (git + DVC, the default synthetic data,
``--epochs`` of training) and runs the baseline once (or reuses ``--project``). Then, for
each setting, it commits the setting to ``.dvc/config``, queues two experiments (two
values of ``--param``; the default, a plot setting, reruns only the plot stage, so the
checkout is what is measured) and runs them two at a time. Every 0.2 s it adds up the
bytes under ``.dvc/tmp/exps`` that nothing else holds: regular files with a single link
(a hardlink into the cache is shared) and symlinks' own size. The peak is reported per
folder of the temp copies: ``work/``, ``models/`` (both checked out; ``models/`` also
holds what a training experiment writes), and the rest (the git checkout, the same in
both settings).

    python benchmarks/queued_exp_disk.py [--epochs 1] [--param plot.dpi --values 90 110]
                                         [--project DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common
import yaml

BIN = Path(sys.executable).parent
SETTINGS = {
    "DVC default (reflink,copy)": None,
    "reflink,hardlink,symlink,copy": "reflink,hardlink,symlink,copy",
}
GIT = ["git", "-c", "user.email=bench@fishseg.invalid", "-c", "user.name=bench"]


def set_cache_type(root: Path, value: str | None) -> None:
    """``cache.type`` in the project's .dvc/config (``None``: DVC's default), workspace relinked."""
    if value is None:
        sh(["dvc", "config", "--unset", "cache.type"], root, check=False)
    else:
        sh(["dvc", "config", "cache.type", value], root)
    sh(["dvc", "checkout", "--relink"], root)


def sh(cmd: list[str], cwd: Path, check: bool = True) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode and check:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


FOLDERS = ("work", "models")


def unshared_bytes(root: Path) -> dict[str, int]:
    """Bytes under ``root`` held by nothing else, by top folder of each temp copy (``work``, ``models``, other)."""
    found = dict.fromkeys((*FOLDERS, "other"), 0)
    for folder, _dirs, files in os.walk(root):
        parts = Path(folder).relative_to(root).parts
        where = parts[1] if len(parts) > 1 and parts[1] in FOLDERS else "other"
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # the experiment finished while we looked
                continue
            if os.path.islink(path):
                found[where] += st.st_size
            elif st.st_nlink == 1:
                found[where] += st.st_blocks * 512
    return found


class Sampler(threading.Thread):
    """Peak of :func:`unshared_bytes` over time."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.done = root, threading.Event()
        self.peak = dict.fromkeys((*FOLDERS, "other"), 0)

    def run(self) -> None:
        while not self.done.is_set():
            if self.root.is_dir():
                now = unshared_bytes(self.root)
                if sum(now.values()) > sum(self.peak.values()):
                    self.peak = now
            time.sleep(0.2)


def megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def scratch_project(root: Path, epochs: int) -> None:
    listed = sh(["git", "ls-files", "-z"], _common.ROOT).split("\0")
    for rel in filter(None, listed):
        if rel.startswith(("metrics/", "plots/")) or rel == "dvc.lock":
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_common.ROOT / rel, root / rel)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    params["mlflow"]["log_model"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], root)
    sh(["dvc", "config", "--unset", "cache.type"], root, check=False)  # DVC's default first
    sh(["dvc", "repro"], root)
    sh(["git", "add", "-A"], root)
    sh([*GIT, "commit", "-qm", "baseline"], root)


def queued_pair(root: Path, label: str, param: str, values: list[str]) -> dict:
    sampler = Sampler(root / ".dvc" / "tmp" / "exps")
    for value in values:
        name = f"{label}-{param.split('.')[-1]}{value}".replace("_", "-")
        sh(["dvc", "exp", "run", "--queue", "-S", f"{param}={value}", "-n", name], root)
    started = time.perf_counter()
    sampler.start()
    sh(["dvc", "queue", "start", "-j", "2"], root)
    while "Queued" in (status := sh(["dvc", "queue", "status"], root)) or "Running" in status:
        time.sleep(2)
    sampler.done.set()
    sampler.join()
    failed = status.count("Failed")
    return {"peak": sampler.peak, "seconds": time.perf_counter() - started, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--param", default="plot.dpi", help="the param the two experiments set")
    parser.add_argument("--values", nargs=2, default=["90", "110"])
    parser.add_argument("--project", type=Path, help="reuse this scratch project (baseline committed)")
    parser.add_argument("--keep", type=Path, help="keep the scratch project here (for `dvc exp show`)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fishseg-queue-"))
    root = args.project or base / "project"
    if args.project is None:
        root.mkdir()
        scratch_project(root, args.epochs)
    baseline = {d: megabytes(root / d) for d in FOLDERS}
    results = {}
    for (label, setting), short in zip(SETTINGS.items(), ("copy", "links"), strict=True):
        set_cache_type(root, setting)
        sh(["git", "add", ".dvc/config"], root)
        sh([*GIT, "commit", "-qm", f"cache: {label}", "--allow-empty"], root)
        results[label] = queued_pair(root, short, args.param, args.values)
    sizes = ", ".join(f"{d}/ {mb:.0f} MB" for d, mb in baseline.items())
    print(f"baseline outputs: {sizes}; two experiments ({args.param} = {' / '.join(args.values)}), -j 2")
    print(f"{'cache.type':<32} {'work/':>8} {'models/':>8} {'other':>8} {'time':>6}")
    for label, r in results.items():
        mb = {k: v / 2**20 for k, v in r["peak"].items()}
        note = f"  ({r['failed']} failed)" if r["failed"] else ""
        row = " ".join(f"{mb[k]:>5.0f} MB" for k in (*FOLDERS, "other"))
        print(f"{label:<32} {row} {r['seconds']:>5.0f}s{note}")
    if args.keep and args.project is None:
        shutil.move(str(root), str(args.keep))
        print(f"scratch project kept in {args.keep}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
