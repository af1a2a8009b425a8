"""The offline `dvc plots` page: installer, template, config, and real `dvc plots show/diff`."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from configobj import ConfigObj

from fishseg.report import plots_page
from fishseg.report.plots_page import BUNDLES, Bundle, NpmMissingError, PlotsPageError, install, problems, sri

from ._browser import chromium

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SPEC = re.compile(r"var spec = (\{.*?\});\s*vegaEmbed\(", re.DOTALL)


# -- template and config --------------------------------------------------------------


def test_committed_config_leaves_the_template_to_each_machine():
    # A clone without set-up must get DVC's own page, not an error about a missing template.
    cfg = ConfigObj(str(REPO / ".dvc" / "config"))
    assert "html_template" not in cfg.get("plots", {})


def test_configure_sets_and_removes_the_template_keeping_other_settings(tmp_path):
    config = tmp_path / "project" / ".dvc" / "config.local"
    config.parent.mkdir(parents=True)
    config.write_text("# my settings\n['remote \"storage\"']\n    url = /mnt/shared/fish\n")
    template = tmp_path / "project" / ".dvc-plots-assets" / "plots.html"

    plots_page.configure(template, config)
    cfg = ConfigObj(str(config))
    # Relative to the .dvc folder, as DVC resolves it: a moved checkout keeps pointing at its own.
    assert cfg["plots"]["html_template"] == "../.dvc-plots-assets/plots.html"
    assert cfg['remote "storage"']["url"] == "/mnt/shared/fish"
    assert config.read_text().startswith("# my settings")

    plots_page.configure(None, config)
    cfg = ConfigObj(str(config))
    assert "plots" not in cfg and cfg['remote "storage"']["url"] == "/mnt/shared/fish"
    plots_page.configure(None, tmp_path / "absent" / "config.local")  # nothing to remove: no file made
    assert not (tmp_path / "absent").exists()


def test_template_has_dvc_placeholders_and_local_scripts_only(tmp_path):
    dest = tmp_path / "with space"
    page = plots_page.render_template(dest)
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    # DVC would put its CDN script tags at {scripts}.
    assert "{scripts}" not in page
    srcs = SCRIPT_SRC.findall(page)
    assert srcs == [(dest / b.filename).resolve().as_uri() for b in BUNDLES]
    assert all(" " not in s for s in srcs)
    # vega-embed's UMD build needs the globals of vega and vega-lite, loaded before it.
    assert [b.package for b in BUNDLES] == ["vega", "vega-lite", "vega-embed"]


# -- installer, against a stand-in npm --------------------------------------------------


def _fake_packages(tmp_path: Path) -> tuple[tuple[Bundle, ...], Path]:
    """Package tarballs with small bundles, pins that match them, and a folder holding them."""
    store = tmp_path / "registry"
    store.mkdir()
    bundles = []
    for pkg in ("vega", "vega-lite", "vega-embed"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            body = f"window.fake_{pkg.replace('-', '_')} = 1;\n".encode()
            info = tarfile.TarInfo(f"package/build/{pkg}.min.js")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        data = buf.getvalue()
        (store / f"{pkg}-1.0.0.tgz").write_bytes(data)
        bundles.append(Bundle(pkg, "1.0.0", f"package/build/{pkg}.min.js", sri(data)))
    return tuple(bundles), store


def _fake_npm(tmp_path: Path, store: Path, log: Path) -> str:
    """An `npm pack --pack-destination DIR spec...` that copies tarballs from ``store``."""
    script = tmp_path / "npm"
    script.write_text(
        f"""#!{sys.executable}
import shutil, sys
args = sys.argv[1:]
open({str(log)!r}, "a").write(" ".join(args) + "\\n")
dest = args[args.index("--pack-destination") + 1]
for spec in [a for a in args if "@" in a]:
    name, version = spec.rsplit("@", 1)
    shutil.copy({str(store)!r} + f"/{{name}}-{{version}}.tgz", dest)
"""
    )
    script.chmod(0o755)
    return str(script)


def test_install_fetches_once_verifies_and_writes_template(tmp_path):
    bundles, store = _fake_packages(tmp_path)
    calls = tmp_path / "calls.log"
    npm = _fake_npm(tmp_path, store, calls)
    dest = tmp_path / "assets"

    template = install(dest, npm=npm, bundles=bundles)
    assert template == (dest / "plots.html").resolve()
    assert problems(dest, bundles) == []
    for b in bundles:
        assert (dest / b.filename).read_text().startswith("window.fake_")
    assert len(calls.read_text().splitlines()) == 1

    # Everything in place: no registry call, only the template is rewritten.
    (dest / "plots.html").unlink()
    install(dest, npm=npm, bundles=bundles)
    assert len(calls.read_text().splitlines()) == 1
    assert problems(dest, bundles) == []

    # A changed bundle is noticed and fetched again, alone.
    (dest / "vega.min.js").write_text("tampered")
    assert problems(dest, bundles) == [f"{dest / 'vega.min.js'} is not vega@1.0.0 as installed"]
    install(dest, npm=npm, bundles=bundles)
    assert calls.read_text().splitlines()[-1].endswith("vega@1.0.0")
    assert problems(dest, bundles) == []


def test_install_refuses_a_tarball_that_does_not_match_its_pin(tmp_path):
    bundles, store = _fake_packages(tmp_path)
    npm = _fake_npm(tmp_path, store, tmp_path / "calls.log")
    wrong = (Bundle(bundles[0].package, "1.0.0", bundles[0].member, sri(b"other")),)
    with pytest.raises(PlotsPageError, match="integrity"):
        install(tmp_path / "assets", npm=npm, bundles=wrong)
    assert not (tmp_path / "assets" / "vega.min.js").exists()


def test_install_without_npm_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NpmMissingError, match="npm not found"):
        install(tmp_path / "assets")
    # From `make setup` it is a warning, not a failed set-up: the pipeline does not need the page.
    # A template set before (bundles since removed) is unset: DVC's own page, not an error.
    config = tmp_path / "config.local"
    plots_page.configure(tmp_path / "assets" / "plots.html", config)
    args = ["--dest", str(tmp_path / "assets"), "--config", str(config)]
    assert plots_page.main(["install", *args]) == 0
    assert "npm not found" in caplog.text and "DVC's own page" in caplog.text
    assert "plots" not in ConfigObj(str(config))
    assert plots_page.main(["check", *args]) == 1


# -- the real thing: `dvc plots show` and `dvc plots diff` on a scratch repo --------------


def _assets_or_skip() -> None:
    found = problems(plots_page.ASSETS_DIR)
    if found:
        pytest.skip("vega bundles not installed (run `make setup` with npm): " + "; ".join(found))


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _write_outputs(root: Path, shift: float) -> None:
    """Plot data in the formats the train and evaluate stages write."""
    (root / "plots/train").mkdir(parents=True, exist_ok=True)
    (root / "plots/eval").mkdir(parents=True, exist_ok=True)
    (root / "plots/png").mkdir(parents=True, exist_ok=True)
    lines = ["epoch,lr,train_loss,train_iou,train_dice,val_loss,val_iou,val_dice"]
    for e in range(1, 6):
        t = e / 5
        lines.append(
            f"{e},0.001,{0.9 - 0.6 * t:.3f},{0.3 + 0.5 * t - shift:.3f},{0.4 + 0.45 * t:.3f},"
            f"{0.95 - 0.5 * t:.3f},{0.25 + 0.5 * t - shift:.3f},{0.35 + 0.45 * t:.3f}"
        )
    (root / "plots/train/history.csv").write_text("\n".join(lines) + "\n")
    (root / "plots/eval/per_species.csv").write_text(
        f"species,n_images,iou,dice\nShrimp,3,{0.55 - shift:.3f},0.71\nTrout,3,0.86,0.92\n"
    )
    (root / "plots/data").mkdir(parents=True, exist_ok=True)
    (root / "plots/data/species.csv").write_text(
        "species,pairs,groups,train,val,test\nShrimp,12,3,8,2,2\nTrout,16,4,12,2,2\n"
    )
    (root / "plots/eval/per_image.csv").write_text(
        "id,species,iou,dice,precision,recall\na,Shrimp,0.5,0.66,0.6,0.7\nb,Trout,0.9,0.94,0.9,0.95\n"
    )
    confusion = (
        ["actual,predicted"] + ["fish,fish"] * 18 + ["fish,background"] * 2 + ["background,background"] * 80
    )
    (root / "plots/eval/confusion.csv").write_text("\n".join(confusion) + "\n")
    # A flat grey image: its colours cannot be mistaken for a drawn chart in the slow test.
    from PIL import Image

    Image.new("RGB", (40, 30), (128, 128, 128)).save(root / "plots/png/samples.png")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A git + DVC repo with this project's dvc.yaml and .dvc/config and hand-made plot data."""
    _assets_or_skip()
    root = tmp_path / "project"
    root.mkdir()
    _run(["git", "init", "-q"], root)
    _run([str(BIN / "dvc"), "init", "-q"], root)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    # Reuse the installed bundles: install() finds them valid and only writes the template,
    # then the template is set for this checkout, as `make setup` does.
    assets = root / plots_page.ASSETS_DIR.name
    assets.mkdir()
    for name in [b.filename for b in BUNDLES] + [plots_page.MANIFEST_NAME]:
        shutil.copy(plots_page.ASSETS_DIR / name, assets / name)
    plots_page.configure(install(assets, npm="/nonexistent/npm"), root / ".dvc" / "config.local")
    (root / ".gitignore").write_text(f"/{assets.name}/\n/dvc_plots/\n")
    _write_outputs(root, shift=0.1)
    _run(["git", "add", "-A"], root)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "first run"], root)
    return root


def _check_page(page: Path) -> list[dict]:
    html = page.read_text(encoding="utf-8")
    srcs = SCRIPT_SRC.findall(html)
    assert len(srcs) == 3, srcs
    for src in srcs:
        url = urlparse(src)
        assert url.scheme == "file", f"not a local script: {src}"
        assert Path(unquote(url.path)).is_file(), f"missing: {src}"
    assert not re.search(r"src\s*=\s*[\"']https?://", html, re.IGNORECASE)
    for img in re.findall(r"<img src=\"([^\"]+)\"", html):
        assert (page.parent / img).is_file(), img
    return [json.loads(s) for s in SPEC.findall(html)]


def _by_title(specs: list[dict]) -> dict[str, dict]:
    return {s["title"]["text"]: s for s in specs}


def test_dvc_plots_show_page_loads_local_scripts(scratch):
    out = scratch / "elsewhere" / "page"  # `-o` anywhere: the script paths are absolute
    _run([str(BIN / "dvc"), "plots", "show", "-o", str(out)], scratch)
    specs = _by_title(_check_page(out / "index.html"))

    for title, fields in {
        "Loss": {"train_loss", "val_loss"},
        "IoU": {"train_iou", "val_iou"},
        "Dice": {"train_dice", "val_dice"},
    }.items():
        spec = specs[title]
        assert {row["field"] for row in spec["data"]["values"]} == fields
    # bar_horizontal: bar length on x (quantitative), one bar per species on y
    bars = specs["Per-species test IoU"]["encoding"]
    assert (bars["x"]["field"], bars["x"]["type"]) == ("iou", "quantitative")
    assert (bars["y"]["field"], bars["y"]["type"]) == ("species", "nominal")
    confusion = specs["Pixel confusion (row-normalised)"]
    assert {(r["actual"], r["predicted"]) for r in confusion["data"]["values"]} == {
        ("fish", "fish"),
        ("fish", "background"),
        ("background", "background"),
    }
    species = specs["Pairs per species"]
    assert {(r["species"], int(r["pairs"])) for r in species["data"]["values"]} == {
        ("Shrimp", 12),
        ("Trout", 16),
    }
    assert "samples.png" in (out / "index.html").read_text(encoding="utf-8")


def test_a_clone_without_setup_gets_dvcs_own_page(scratch, tmp_path):
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(scratch), str(clone)], tmp_path)
    assert not (clone / ".dvc" / "config.local").exists()  # machine settings are not cloned
    _run([str(BIN / "dvc"), "plots", "show"], clone)
    html = (clone / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    srcs = SCRIPT_SRC.findall(html)
    assert len(srcs) == 3 and all(src.startswith("https://") for src in srcs), srcs  # DVC's CDN page
    assert {s["title"]["text"] for s in [json.loads(x) for x in SPEC.findall(html)]} >= {"IoU", "Loss"}


def _page_without_bundles(scratch: Path) -> Path:
    """The page of a checkout whose bundles are gone (cleaned, or the checkout moved)."""
    assets = scratch / plots_page.ASSETS_DIR.name
    for b in BUNDLES:
        (assets / b.filename).unlink()
    _run([str(BIN / "dvc"), "plots", "show"], scratch)
    return scratch / "dvc_plots" / "index.html"


def test_page_without_its_bundles_says_to_run_make_setup(scratch):
    html = _page_without_bundles(scratch).read_text(encoding="utf-8")
    assert "run `make setup` in the project" in html
    assert not re.search(r"src\s*=\s*[\"']https?://", html, re.IGNORECASE)  # no silent CDN fallback


def test_dvc_plots_diff_page_shows_both_revisions(scratch):
    _write_outputs(scratch, shift=0.0)
    _run([str(BIN / "dvc"), "plots", "diff", "HEAD"], scratch)
    specs = _by_title(_check_page(scratch / "dvc_plots" / "index.html"))
    assert {row["rev"] for row in specs["IoU"]["data"]["values"]} == {"HEAD", "workspace"}


# -- what a person sees: headless Chromium (installed by `make setup` where apt-get is usable) --


@pytest.mark.slow
def test_page_draws_charts_in_headless_chromium_offline(scratch, tmp_path):
    from PIL import Image

    _run([str(BIN / "dvc"), "plots", "show"], scratch)
    shot = tmp_path / "plots.png"
    page = (scratch / "dvc_plots" / "index.html").as_uri()
    chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000", offline=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)

    # DVC's first series colour (#945dd6): only a drawn vega chart has it.
    purple = int((np.abs(pixels - (0x94, 0x5D, 0xD6)).sum(axis=-1) < 60).sum())
    assert purple > 2000, f"only {purple} chart-coloured pixels: charts not drawn"


@pytest.mark.slow
def test_page_without_bundles_shows_the_make_setup_message_in_chromium(scratch, tmp_path):
    page = _page_without_bundles(scratch).as_uri()
    dom = chromium(page, tmp_path / "profile", "--dump-dom", offline=True)
    assert "The vega bundles did not load from" in dom and "run `make setup` in the project" in dom
