"""An offline page for ``dvc plots show`` and ``dvc plots diff``.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so on a machine
without internet (this project's machines, most training clusters) every chart is blank.
``install`` writes a page whose script tags point at the same bundles, installed from the
npm registry into ``.dvc-plots-assets/`` (git-ignored: registry packages, not committed
copies), and sets ``plots.html_template`` to it in ``.dvc/config.local``: the setting is
this machine's, so it stays out of the committed ``.dvc/config``, and a clone without
set-up gets DVC's own page instead of an error. When the bundles cannot be installed,
``install`` takes its setting out again.

The script paths are absolute ``file://`` URLs: DVC writes its page wherever ``-o`` says,
so no relative path from the page to the bundles holds in general. ``install`` rewrites
the template on every run (it is cheap), so a moved checkout is fixed by ``make setup``.

Standard library only (plus ``fishseg.fsutil`` and ``configobj``, which comes with DVC):
``make setup`` runs this on every call, so it must stay fast and not import the heavy
parts of the package.

    python -m fishseg.report.plots_page install   # what `make setup` runs
    python -m fishseg.report.plots_page check     # exit 1 and a list of problems if not usable
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fishseg.fsutil import atomic_write_bytes, atomic_write_json

log = logging.getLogger("fishseg.report.plots_page")

ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = ROOT / ".dvc-plots-assets"
TEMPLATE_NAME = "plots.html"
CONFIG_LOCAL = ROOT / ".dvc" / "config.local"
MANIFEST_NAME = "installed.json"
NPM_TIMEOUT_S = 300


class PlotsPageError(RuntimeError):
    """The bundles could not be installed or do not match their pins."""


class NpmMissingError(PlotsPageError):
    """No npm on this machine: nothing can be fetched."""


@dataclass(frozen=True)
class Bundle:
    """One prebuilt browser bundle inside an npm package tarball."""

    package: str
    version: str
    member: str  # path inside the tarball
    integrity: str  # the registry's dist.integrity for this exact version

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{self.package}-{self.version}.tgz"

    @property
    def filename(self) -> str:
        return Path(self.member).name


# The majors DVC's own page uses (dvc_render/vega.py: vega 5, vega-lite 5, vega-embed 6;
# its templates are vega-lite v5 specs), latest release of each. Exact versions and
# hashes make this a lock file: a fresh machine gets the same bytes. Order matters:
# vega-embed's UMD build needs the `vega` and `vegaLite` globals of the first two.
BUNDLES: tuple[Bundle, ...] = (
    Bundle(
        "vega",
        "5.33.1",
        "package/build/vega.min.js",
        "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
    ),
    Bundle(
        "vega-lite",
        "5.23.0",
        "package/build/vega-lite.min.js",
        "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
    ),
    Bundle(
        "vega-embed",
        "6.29.0",
        "package/build/vega-embed.min.js",
        "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
    ),
)

# DVC fills `{plot_divs}` and `{refresh_tag}`. `{scripts}` is left out on purpose: DVC
# would put its CDN script tags there. The inline check turns a silent blank page into
# a message when the bundles are gone (a moved or cleaned checkout).
_PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
{script_tags}
    <script>
        if (typeof vegaEmbed === "undefined") {{
            document.addEventListener("DOMContentLoaded", function () {{
                document.body.insertAdjacentHTML("afterbegin",
                    "<p style='color:#b00020;font-weight:bold'>The vega bundles did not load from "
                    + {assets_js} + ": run `make setup` in the project, then rerun `dvc plots show`.</p>");
            }});
        }}
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def sri(data: bytes) -> str:
    """Subresource-integrity string (``sha512-<base64>``), the form npm publishes."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_template(dest: Path, bundles: tuple[Bundle, ...] = BUNDLES) -> str:
    """The page DVC fills, with one ``file://`` script tag per bundle in ``dest``."""
    dest = Path(dest).resolve()
    tags = "\n".join(f'    <script src="{(dest / b.filename).as_uri()}"></script>' for b in bundles)
    return _PAGE.format(script_tags=tags, assets_js=json.dumps(str(dest)))


def _read_manifest(dest: Path) -> dict:
    try:
        return json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def problems(dest: Path = ASSETS_DIR, bundles: tuple[Bundle, ...] = BUNDLES) -> list[str]:
    """What stops the page from rendering offline; empty when everything is in place."""
    dest = Path(dest)
    manifest = _read_manifest(dest)
    found = []
    for b in bundles:
        path = dest / b.filename
        entry = manifest.get(b.package, {})
        if not path.is_file():
            found.append(f"{path} is missing")
        elif entry.get("version") != b.version or entry.get("sha256") != _sha256(path):
            found.append(f"{path} is not {b.spec} as installed")
    template = dest / TEMPLATE_NAME
    if not template.is_file():
        found.append(f"{template} is missing")
    elif template.read_text(encoding="utf-8") != render_template(dest, bundles):
        found.append(f"{template} points elsewhere (moved checkout?)")
    return found


def _write_readable(path: Path, data: bytes) -> None:
    # Atomic writes come out 0600; a browser run by another user must still read these.
    atomic_write_bytes(path, data)
    path.chmod(0o644)


def _npm_pack(bundles: list[Bundle], workdir: Path, npm: str) -> None:
    """Fetch the package tarballs only: the bundles are self-contained, so none of the
    packages' dependencies (about 90 more packages) are needed."""
    cmd = [npm, "pack", "--ignore-scripts", "--pack-destination", str(workdir), *(b.spec for b in bundles)]
    log.info("fetching %s from the npm registry", ", ".join(b.spec for b in bundles))
    try:
        done = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PlotsPageError(f"`{' '.join(cmd)}` took over {NPM_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise PlotsPageError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr.strip()}")


def _extract(bundle: Bundle, tarball: Path) -> bytes:
    data = tarball.read_bytes()
    got = sri(data)
    if got != bundle.integrity:
        raise PlotsPageError(
            f"{bundle.tarball}: integrity {got} does not match the pinned {bundle.integrity}"
        )
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(bundle.member)
        if member is None:
            raise PlotsPageError(f"{bundle.tarball} has no {bundle.member}")
        return member.read()


def install(
    dest: Path = ASSETS_DIR, *, npm: str | None = None, bundles: tuple[Bundle, ...] = BUNDLES
) -> Path:
    """Put the pinned bundles in ``dest`` (fetching only what is missing or different)
    and write the page template there; return the template's path."""
    dest = Path(dest).resolve()
    manifest = _read_manifest(dest)
    wanted = [
        b
        for b in bundles
        if not (dest / b.filename).is_file()
        or manifest.get(b.package, {}).get("version") != b.version
        or manifest.get(b.package, {}).get("sha256") != _sha256(dest / b.filename)
    ]
    if wanted:
        npm = npm or shutil.which("npm")
        if npm is None:
            raise NpmMissingError(
                "npm not found: install Node.js with npm (Debian: apt-get install nodejs npm)"
            )
        with tempfile.TemporaryDirectory(prefix="fishseg-plots-") as tmp:
            _npm_pack(wanted, Path(tmp), npm)
            for b in wanted:
                tarball = Path(tmp) / b.tarball
                if not tarball.is_file():
                    raise PlotsPageError(f"npm pack wrote no {b.tarball}")
                content = _extract(b, tarball)
                _write_readable(dest / b.filename, content)
                manifest[b.package] = {
                    "version": b.version,
                    "file": b.filename,
                    "integrity": b.integrity,
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
        # Drop entries of bundles no longer pinned so `problems` stays exact.
        manifest = {b.package: manifest[b.package] for b in bundles}
        atomic_write_json(dest / MANIFEST_NAME, manifest)
    else:
        log.info("vega bundles already in %s", dest)
    template = dest / TEMPLATE_NAME
    _write_readable(template, render_template(dest, bundles).encode("utf-8"))
    return template


def _template_setting(template: Path, config_file: Path) -> str:
    """The template's path as DVC resolves it: relative to the ``.dvc`` folder when inside the project."""
    try:
        return Path(os.path.relpath(template.resolve(), config_file.parent.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(template.resolve())


def configure(template: Path | None, config_file: Path = CONFIG_LOCAL) -> None:
    """Set ``plots.html_template`` to ``template`` in ``config_file`` (``.dvc/config.local``),
    or with ``None`` remove it; every other setting in the file stays as it was."""
    from configobj import ConfigObj  # comes with dvc; keeps comments and the other sections

    if template is None and not config_file.is_file():
        return
    config = ConfigObj(str(config_file))
    if "plots" not in config:
        config["plots"] = {}
    plots = config["plots"]
    if template is not None:
        plots["html_template"] = _template_setting(template, config_file)
    else:
        plots.pop("html_template", None)
        if not plots:
            del config["plots"]
    config.filename = None  # write() then returns the lines instead of writing in place
    lines = config.write()
    atomic_write_bytes(config_file, ("\n".join(lines) + "\n").encode("utf-8") if lines else b"")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fishseg.report.plots_page",
        description="Install the vega bundles and the page template for an offline `dvc plots show`.",
    )
    parser.add_argument("command", choices=["install", "check"])
    parser.add_argument("--dest", type=Path, default=ASSETS_DIR, help=f"default: {ASSETS_DIR}")
    parser.add_argument(
        "--config", type=Path, default=CONFIG_LOCAL, help=f"DVC config file to set (default: {CONFIG_LOCAL})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.command == "check":
        found = problems(args.dest)
        for p in found:
            log.error("%s", p)
        if not found:
            log.info("offline plot page ready: %s", Path(args.dest).resolve() / TEMPLATE_NAME)
        return 1 if found else 0
    try:
        template = install(args.dest)
    except NpmMissingError as exc:
        # The pipeline and the tests do not need the page: set-up goes on, loudly.
        configure(None, args.config)
        log.warning("%s; `dvc plots show` uses DVC's own page (charts need internet) until then", exc)
        return 0
    except PlotsPageError as exc:
        configure(None, args.config)
        log.error("%s", exc)
        return 1
    configure(template, args.config)
    log.info("offline plot page template: %s (set in %s)", template, args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
