"""Headless Chromium for the tests that look at a page as a person would.

`make setup` installs Debian's chromium where apt-get is usable (root). These tests skip
only where it could not: without chromium and without a usable apt-get. Where apt-get is
usable and chromium is still missing, set-up was skipped, and they fail saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Without the background-networking flags Chromium opens connections of its own (updates,
# sync, field trials), which a closed network refuses and which have nothing to do with the page.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def apt_usable() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def chromium_or_skip() -> str:
    """The chromium binary; skip where set-up could not install it, fail where it should have."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if apt_usable():
        pytest.fail("chromium is not installed although apt-get is usable here: run `make setup`")
    pytest.skip("chromium not installed and apt-get not usable (needs root): `apt-get install chromium`")


def no_network_prefix() -> list[str]:
    """``unshare -n`` where a network namespace can be made (root): the page gets no network at all."""
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    ):
        return ["unshare", "-n"]
    return []


def chromium(
    url: str, profile: Path, *extra: str, offline: bool = False, budget_ms: int = 10000, timeout: int = 120
) -> str:
    """Open ``url`` in a fresh profile, let it run ``budget_ms`` of virtual time; return stdout."""
    cmd = [
        *(no_network_prefix() if offline else []),
        chromium_or_skip(),
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}"
    return done.stdout
