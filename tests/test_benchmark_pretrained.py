"""The pretrained-vs-scratch benchmark runs end to end on tiny data and prints both runs."""

import re
import subprocess
import sys

from .helpers import REPO


def test_a_tiny_pretrained_vs_scratch_run_prints_both_columns(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "pretrained_vs_scratch.py"),
            "--epochs",
            "1",
            "--photos",
            "2",
            "--copies",
            "2",
            "--size",
            "32",
            "32",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"scratch\s+imagenet \(offline\)", result.stdout), result.stdout
    best = re.search(r"^\s*best\s+([0-9.]+)\s+([0-9.]+)\s*$", result.stdout, re.M)
    assert best, result.stdout
    assert all(0.0 < float(v) <= 1.0 for v in best.groups())
    assert not (tmp_path / "mlflow.db").exists()  # the benchmark keeps its store in its scratch folder
