"""Read a dataset out of a zip, a tar or a folder without trusting it.

Each source is a :class:`SourceTree`: the relative POSIX paths of its regular files, their
sizes, and a way to copy chosen files out. Nothing in a source is trusted:

- names: no absolute paths, no ``..``, no NUL bytes (:func:`member_path`);
- kinds: regular files and folders only; symbolic and hard links, devices, FIFOs and
  sparse files are refused, and a folder source never follows a link out of itself;
- sizes: at most ``max_members`` members and ``max_bytes`` bytes unpacked, counted over the
  whole decompressed stream (headers included), and no member expanding more than
  ``max_ratio`` times; an index that lies is caught while streaming;
- damage: a truncated or corrupt archive is one clear error, never a traceback.

The zip and tar readers are this project's own (:mod:`fishseg.sources.zipsource`,
:mod:`fishseg.sources.tarsource`): Python 3.11.7's ``tarfile`` header parsing has a
ReDoS (CVE-2024-6232) and its ``zipfile`` accepts overlapping entries (CVE-2024-0450),
so neither is used to read member data, and ``tarfile`` is not used at all.

Destinations are chosen by the caller (never taken from member names), so even a member
that slipped through could not be written outside the output folder.
"""

from __future__ import annotations

import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fishseg.errors import FishsegError
from fishseg.fsutil import write_error
from fishseg.params import DataParams
from fishseg.paths import EMBEDDED_SOURCES
from fishseg.progress import progress_bar

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

CHUNK = 1 << 20
# Below this many bytes out, a member's expansion ratio is not judged (tiny files compress oddly).
RATIO_FLOOR = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_FIX_NAMES = "re-create the archive from inside the dataset folder, with relative paths only"
_FIX_KINDS = "re-create the archive with regular files only (e.g. zip without --symlinks)"


@dataclass(frozen=True)
class Limits:
    """What one source may hold: members, bytes unpacked, expansion per member."""

    max_bytes: int
    max_members: int
    max_ratio: float = DataParams.model_fields["max_archive_ratio"].default

    @classmethod
    def of(cls, data: DataParams) -> Limits:
        return cls(data.max_archive_bytes, data.max_archive_members, data.max_archive_ratio)


def member_path(archive: Path, name: str) -> str:
    """The member's path, normalised (``a/b.png``); refuse absolute paths, ``..`` and NUL bytes."""
    norm = name.replace("\\", "/")
    if "\x00" in norm:
        raise FishsegError(
            f"unsafe archive {archive}: member {name!r} has a NUL byte in its name; {_FIX_NAMES}"
        )
    if norm.startswith("/") or _DRIVE.match(norm):
        raise FishsegError(f"unsafe archive {archive}: member {name!r} has an absolute path; {_FIX_NAMES}")
    parts = [part for part in norm.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FishsegError(
            f"unsafe archive {archive}: member {name!r} points outside the archive ('..'); {_FIX_NAMES}"
        )
    return "/".join(parts)


def unsafe_kind(archive: Path, name: str, kind: str) -> FishsegError:
    """The error for a member that is not a regular file or folder (``kind``: what it is)."""
    return FishsegError(f"unsafe archive {archive}: member {name!r} is a {kind}; {_FIX_KINDS}")


def too_many(archive: Path, count: int, limit: int) -> FishsegError:
    return FishsegError(
        f"archive {archive} has {count} or more members, more than data.max_archive_members = {limit}: "
        "raise data.max_archive_members if the archive is trusted"
    )


def too_big(archive: Path, size: int | None, limit: int) -> FishsegError:
    """``size``: the declared total; None when streaming found more than that."""
    what = f"unpacks to {size} bytes" if size is not None else "unpacks to more bytes than that"
    return FishsegError(
        f"archive {archive} {what}, more than data.max_archive_bytes = {limit}: "
        "raise data.max_archive_bytes if the archive is trusted"
    )


def too_dense(archive: Path, name: str, out: int, packed: int, limit: float) -> FishsegError:
    return FishsegError(
        f"archive {archive}: member {name!r} expands {out} bytes from {packed} ({out / max(packed, 1):.0f}:1), "
        f"more than data.max_archive_ratio = {limit:g} (a decompression bomb?); "
        "raise data.max_archive_ratio if the archive is trusted"
    )


def damaged(archive: Path, detail: str) -> FishsegError:
    return FishsegError(
        f"damaged archive {archive}: {detail}; re-download it, or re-create it with standard "
        "compression (zip deflate, tar.gz)"
    )


def check_ratio(archive: Path, name: str, out: int, packed: int, limit: float) -> None:
    """Refuse a member that expanded ``out`` bytes from ``packed`` by more than ``limit``."""
    if out > RATIO_FLOOR and out > limit * max(packed, 1):
        raise too_dense(archive, name, out, packed, limit)


def write_chunks(chunks: Iterable[bytes], dest: Path) -> None:
    """Write ``chunks`` to a new file ``dest``; a failed write is one error naming ``dest``."""
    try:
        out = open(dest, "wb")  # noqa: SIM115 - closed below; read and write errors differ
    except OSError as exc:
        raise write_error(dest, exc) from None
    with out:
        for chunk in chunks:
            try:
                out.write(chunk)
            except OSError as exc:
                raise write_error(dest, exc) from None


def read_at_most(src: BinaryIO, limit: int) -> Iterator[bytes]:
    """Chunks of ``src`` up to ``limit`` bytes in all."""
    left = limit
    while left > 0 and (chunk := src.read(min(CHUNK, left))):
        left -= len(chunk)
        yield chunk


class SourceTree(ABC):
    """A dataset source: the regular files it holds and a way to copy them out."""

    kind: str

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self._sizes: dict[str, int] = {}  # rel path -> size (declared, or found by a full pass)

    def files(self) -> list[str]:
        """Relative POSIX paths of the regular files, in a stable order."""
        return sorted(self._sizes)

    def size(self, rel: str) -> int:
        return self._sizes[rel]

    def _add(self, rel: str, size: int, total: int) -> int:
        """Record a file; return the new total, refusing duplicates and totals over the cap."""
        if rel in self._sizes:
            raise FishsegError(f"ambiguous archive {self.path}: member {rel!r} appears twice; re-create it")
        if len(self._sizes) >= self.limits.max_members:
            raise too_many(self.path, len(self._sizes) + 1, self.limits.max_members)
        self._sizes[rel] = size
        total += size
        if total > self.limits.max_bytes:
            raise too_big(self.path, total, self.limits.max_bytes)
        return total

    @abstractmethod
    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        """Copy each file ``plan`` names to its destination (parent folders must exist)."""


class FolderTree(SourceTree):
    """A folder on disk. Hidden entries are skipped; links are followed only within the folder."""

    kind = "folder"

    def __init__(self, path: Path, limits: Limits) -> None:
        super().__init__(path, limits)
        self.root = Path(os.path.realpath(path))
        total = 0
        seen: set[str] = set()
        for top, dirs, names in os.walk(self.root, followlinks=True):
            real = os.path.realpath(top)
            self._inside(Path(top), real)
            if real in seen:  # a link back up the tree
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_top = Path(top).relative_to(self.root)
            for name in sorted(n for n in names if not n.startswith(".")):
                full = Path(top) / name
                try:
                    info = full.stat()
                except OSError:  # a dangling link
                    continue
                if stat.S_ISREG(info.st_mode):  # FIFOs, sockets and devices are not data
                    self._inside(full, os.path.realpath(full))
                    total = self._add((rel_top / name).as_posix(), info.st_size, total)

    def _inside(self, path: Path, real: str) -> None:
        if not Path(real).is_relative_to(self.root):
            raise FishsegError(
                f"data.source folder {self.path}: {path} is a link to {real}, outside the folder; "
                "copy the files into the folder (or point data.source at the folder that holds them)"
            )

    def _open(self, rel: str) -> int:
        """A descriptor of the file, checked again now: still inside the folder, still a regular file."""
        real = os.path.realpath(self.root / rel)
        self._inside(self.root / rel, real)
        # O_NONBLOCK: a FIFO swapped in since the listing must not block the copy.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FishsegError(
                f"data.source folder {self.path}: {rel} is no longer a regular file; run again"
            )
        return fd

    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        for rel, dest in progress_bar(plan.items(), desc="copy", unit="file", enabled=progress):
            try:
                fd = self._open(rel)
            except OSError as exc:
                raise FishsegError(f"cannot read {self.path / rel}: {exc.strerror or exc}") from None
            with os.fdopen(fd, "rb") as src:
                # One byte more than listed at most: a file growing meanwhile cannot outgrow the caps.
                write_chunks(read_at_most(src, self.size(rel) + 1), dest)
            if dest.stat().st_size != self.size(rel):
                raise FishsegError(
                    f"data.source folder {self.path}: {rel} changed while being copied; run again"
                )


def _named_sources() -> str:
    return ", ".join(f"'{name}'" for name in ("synthetic", "kaggle", *EMBEDDED_SOURCES))


def open_tree(path: Path, limits: Limits) -> SourceTree:
    """A zip, a tar or a folder, chosen by what ``path`` is; raise when it is none of them."""
    from fishseg.sources.tarsource import TarTree
    from fishseg.sources.zipsource import ZipTree

    if path.is_dir():
        return FolderTree(path, limits)
    if not path.exists():
        raise FishsegError(
            f"data.source: no such file or folder: {path}; use {_named_sources()}, "
            "or the path of a .zip/.tar(.gz) archive or of a folder"
        )
    if not path.is_file():  # a FIFO or a device would block or never end
        raise FishsegError(
            f"data.source: {path} is not a regular file or folder; point it at an archive or folder"
        )
    name = path.name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return ZipTree(path, limits)
    if name.endswith(TAR_SUFFIXES):
        return TarTree(path, limits)
    raise FishsegError(
        f"data.source: unsupported file {path}: expected a .zip or .tar/.tar.gz/.tgz archive, or a folder"
    )
