"""Benchmarks that back README figures run end to end and print what the README quotes."""

import os
import re
import subprocess
import sys

from .helpers import REPO


def _run(script: str, *args: str, cwd) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_cpu_layout_times_both_memory_formats_side_by_side(tmp_path):
    out = _run(
        "cpu_layout.py",
        "--source",
        "synthetic",
        "--size",
        "32",
        "32",
        "--steps",
        "1",
        "--rounds",
        "2",
        cwd=tmp_path,
    )
    nhwc = re.search(r"channels_last true  \(NHWC\): ([0-9.]+) s/step, first epoch loss ([0-9.]+)", out)
    nchw = re.search(r"channels_last false \(NCHW\): ([0-9.]+) s/step, first epoch loss ([0-9.]+)", out)
    assert nhwc and nchw, out
    assert float(nhwc[1]) > 0 and float(nchw[1]) > 0
    # Same weights, same batches: the two layouts differ by rounding only.
    assert abs(float(nhwc[2]) - float(nchw[2])) < 1e-3 * float(nchw[2])
    assert re.search(r"NHWC is [0-9.]+x as fast", out), out


def test_sitting_pairs_scores_every_pair_and_the_default_cut_joins_no_distinct_pair(tmp_path):
    out = _run("sitting_pairs.py", "--size", "96", "128", "--cuts", "1", "6", cwd=tmp_path)
    assert "252 photos at 96x128, 3481 pairs within species" in out
    for label in ("near-identical", "one sitting only", "distinct"):
        assert re.search(rf"combined +{label} \( *\d+ pairs\)", out), out
    strict = re.search(r"T=1 +: +(\d+) groups, largest +(\d+); .* (\d+) distinct pairs joined", out)
    loose = re.search(r"T=6 +: +(\d+) groups, largest +(\d+); .* (\d+) distinct pairs joined", out)
    assert strict and loose, out
    assert int(strict[3]) == 0
    # Looser cuts join more: fewer groups, and distinct photos with them.
    assert int(loose[1]) < int(strict[1]) and int(loose[3]) > int(strict[3])
    assert re.search(r"T=6 +: drops \[", out), out
