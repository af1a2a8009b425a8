"""Read a dataset out of a zip, a tar or a folder without trusting it.

Each source is a :class:`SourceTree`: the relative POSIX paths of its regular files and
a way to copy chosen files out. Archives are checked from their index before a byte is
extracted: no absolute paths, no ``..``, no links, no devices or other special files,
no encrypted members, at most ``max_members`` members and ``max_bytes`` uncompressed
bytes in all. While copying, bytes are counted again, because an index can lie.

Destinations are chosen by the caller (never taken from member names), so even a
member that slipped through could not be written outside the output folder.
"""

from __future__ import annotations

import errno
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from fishseg.errors import FishsegError
from fishseg.progress import progress_bar

log = logging.getLogger(__name__)

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# Errors a damaged or exotic archive raises while it is being read.
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
)


def member_path(archive: Path, name: str) -> str:
    """The member's path, normalised (``a/b.png``); refuse absolute paths and ``..``."""
    norm = name.replace("\\", "/")
    fix = "re-create the archive from inside the dataset folder, with relative paths only"
    if norm.startswith("/") or _DRIVE.match(norm):
        raise FishsegError(f"unsafe archive {archive}: member {name!r} has an absolute path; {fix}")
    parts = [part for part in norm.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FishsegError(
            f"unsafe archive {archive}: member {name!r} points outside the archive ('..'); {fix}"
        )
    if "\x00" in norm:
        raise FishsegError(f"unsafe archive {archive}: member {name!r} has a NUL byte in its name; {fix}")
    return "/".join(parts)


def _check_mode(archive: Path, name: str, mode: int) -> bool:
    """True for a directory; raise for links and special files (devices, FIFOs, sockets)."""
    fix = "re-create the archive with regular files only (e.g. zip without --symlinks)"
    if stat.S_ISLNK(mode):
        raise FishsegError(f"unsafe archive {archive}: member {name!r} is a symbolic link; {fix}")
    if stat.S_ISDIR(mode):
        return True
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        raise FishsegError(f"unsafe archive {archive}: member {name!r} is a device or special file; {fix}")
    return False


def _too_many(archive: Path, count: int, limit: int) -> FishsegError:
    return FishsegError(
        f"archive {archive} has {count} or more members, more than data.max_archive_members = {limit}: "
        "raise data.max_archive_members if the archive is trusted"
    )


def _too_big(archive: Path, size: int | None, limit: int) -> FishsegError:
    """``size``: the declared total; None when streaming found more than the index declared."""
    what = f"unpacks to {size} bytes" if size is not None else "unpacks to more bytes than its index declares"
    return FishsegError(
        f"archive {archive} {what}, more than data.max_archive_bytes = {limit}: "
        "raise data.max_archive_bytes if the archive is trusted"
    )


def _write_error(dest: Path, exc: OSError) -> FishsegError:
    hint = (
        "free some disk space"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else "check the folder's permissions"
    )
    return FishsegError(f"cannot write {dest}: {exc.strerror or exc}; {hint} and run again")


class SourceTree(ABC):
    """A dataset source: the regular files it holds and a way to copy them out."""

    kind: str

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def files(self) -> list[str]:
        """Relative POSIX paths of the regular files, in a stable order."""

    @abstractmethod
    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        """Copy each file ``plan`` names to its destination (parent folders must exist)."""


class _Capped:
    """Copy streams while counting bytes against a total cap and each member's declared size."""

    def __init__(self, archive: Path, max_bytes: int) -> None:
        self.archive = archive
        self.max_bytes = max_bytes
        self.total = 0

    def copy(self, src: BinaryIO, dest: Path, name: str, declared: int) -> None:
        written = 0
        try:
            out = open(dest, "wb")  # noqa: SIM115 - closed below; read and write errors differ
        except OSError as exc:
            raise _write_error(dest, exc) from None
        with out:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except (*_READ_ERRORS, OSError) as exc:
                    raise FishsegError(
                        f"damaged archive {self.archive}: cannot read member {name!r} "
                        f"({type(exc).__name__}: {exc}); re-download it, or re-create it with standard "
                        "compression (deflate/gzip)"
                    ) from None
                if not chunk:
                    break
                written += len(chunk)
                self.total += len(chunk)
                if written > declared:
                    raise FishsegError(
                        f"damaged archive {self.archive}: member {name!r} holds more than its declared "
                        f"{declared} bytes; re-download or re-create the archive"
                    )
                if self.total > self.max_bytes:
                    raise _too_big(self.archive, None, self.max_bytes)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _write_error(dest, exc) from None


class ZipTree(SourceTree):
    """A zip archive, checked from its central directory when opened."""

    kind = "zip"

    def __init__(self, path: Path, *, max_bytes: int, max_members: int) -> None:
        super().__init__(path)
        self.max_bytes = max_bytes
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, EOFError):
            raise FishsegError(
                f"not a zip archive: {path}: the file is damaged, incomplete or of another type; "
                "re-download it, or point data.source at the unpacked folder"
            ) from None
        if len(infos) > max_members:
            raise _too_many(path, len(infos), max_members)
        self._members: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            rel = member_path(path, info.filename)
            if _check_mode(path, info.filename, info.external_attr >> 16) or info.is_dir() or not rel:
                continue
            if info.flag_bits & 0x1:
                raise FishsegError(
                    f"encrypted archive {path}: member {info.filename!r} is password-protected; "
                    "unpack it yourself and point data.source at the folder"
                )
            if rel in self._members:
                raise FishsegError(
                    f"ambiguous archive {path}: member {rel!r} appears twice; re-create the archive"
                )
            self._members[rel] = info
            declared += info.file_size
        if declared > max_bytes:
            raise _too_big(path, declared, max_bytes)

    def files(self) -> list[str]:
        return sorted(self._members)

    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        capped = _Capped(self.path, self.max_bytes)
        # Archive order keeps the reads sequential on disk.
        wanted = sorted(plan, key=lambda rel: self._members[rel].header_offset)
        try:
            with zipfile.ZipFile(self.path) as zf:
                for rel in progress_bar(wanted, desc="extract", unit="file", enabled=progress):
                    info = self._members[rel]
                    try:
                        with zf.open(info) as src:
                            capped.copy(src, plan[rel], info.filename, info.file_size)
                    except _READ_ERRORS as exc:
                        raise FishsegError(
                            f"damaged archive {self.path}: cannot read member {info.filename!r} "
                            f"({type(exc).__name__}: {exc}); re-download it or re-create it"
                        ) from None
        except zipfile.BadZipFile:
            raise FishsegError(f"not a zip archive: {self.path}: it changed while being read") from None


class TarTree(SourceTree):
    """A tar archive (plain, gzip, bzip2 or xz), checked member by member when opened."""

    kind = "tar"

    def __init__(self, path: Path, *, max_bytes: int, max_members: int) -> None:
        super().__init__(path)
        self.max_bytes = max_bytes
        self._members: dict[str, int] = {}  # rel path -> declared size
        count = declared = 0
        for member, rel in self._iterate():
            count += 1
            if count > max_members:
                raise _too_many(path, count, max_members)
            if member.issym() or member.islnk():
                raise FishsegError(
                    f"unsafe archive {path}: member {member.name!r} is a link; "
                    "re-create the archive with regular files only"
                )
            if member.isdir() or not rel:
                continue
            if not member.isfile():
                raise FishsegError(
                    f"unsafe archive {path}: member {member.name!r} is a device or special file; "
                    "re-create the archive with regular files only"
                )
            if rel in self._members:
                raise FishsegError(
                    f"ambiguous archive {path}: member {rel!r} appears twice; re-create the archive"
                )
            self._members[rel] = member.size
            declared += member.size
            if declared > max_bytes:
                raise _too_big(path, declared, max_bytes)

    def _iterate(self) -> Iterator[tuple[tarfile.TarInfo, str]]:
        """Members in archive order, streamed (a compressed tar is read front to back)."""
        try:
            with tarfile.open(self.path, mode="r:*") as tf:
                for member in tf:
                    yield member, member_path(self.path, member.name)
        except OSError as exc:
            if exc.errno is not None:  # the file itself cannot be read (permissions, I/O)
                raise FishsegError(f"cannot read {self.path}: {exc.strerror}") from None
            raise self._not_tar(exc) from None
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise self._not_tar(exc) from None

    def _not_tar(self, exc: Exception) -> FishsegError:
        return FishsegError(
            f"not a tar archive: {self.path}: the file is damaged, incomplete or of another type "
            f"({type(exc).__name__}); re-download it, or point data.source at the unpacked folder"
        )

    def files(self) -> list[str]:
        return sorted(self._members)

    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        capped = _Capped(self.path, self.max_bytes)
        with (
            progress_bar(total=len(plan), desc="extract", unit="file", enabled=progress) as bar,
            tarfile.open(self.path, mode="r:*") as tf,
        ):
            for member in tf:
                rel = member_path(self.path, member.name)
                if rel not in plan or not member.isfile():
                    continue
                src = tf.extractfile(member)
                if src is None:  # not a regular file after all
                    continue
                with src:
                    capped.copy(src, plan[rel], member.name, self._members[rel])
                bar.update(1)


class FolderTree(SourceTree):
    """A folder on disk. Hidden entries are skipped; linked folders are followed once."""

    kind = "folder"

    def files(self) -> list[str]:
        found: list[str] = []
        seen: set[str] = set()
        for top, dirs, names in os.walk(self.path, followlinks=True):
            real = os.path.realpath(top)
            if real in seen:  # a link back up the tree
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_top = Path(top).relative_to(self.path)
            for name in sorted(names):
                if name.startswith("."):
                    continue
                full = Path(top) / name
                try:
                    if not stat.S_ISREG(full.stat().st_mode):
                        continue
                except OSError:  # a dangling link
                    continue
                found.append((rel_top / name).as_posix())
        return found

    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        for rel, dest in progress_bar(plan.items(), desc="copy", unit="file", enabled=progress):
            try:
                shutil.copyfile(self.path / rel, dest)
            except OSError as exc:
                if exc.filename is not None and Path(exc.filename) == self.path / rel:
                    raise FishsegError(f"cannot read {self.path / rel}: {exc.strerror or exc}") from None
                raise _write_error(dest, exc) from None


def open_tree(path: Path, *, max_bytes: int, max_members: int) -> SourceTree:
    """A zip, a tar or a folder, chosen by what ``path`` is; raise when it is none of them."""
    if path.is_dir():
        return FolderTree(path)
    if not path.exists():
        raise FishsegError(
            f"data.source: no such file or folder: {path}; use 'synthetic', 'kaggle', "
            "or the path of a .zip/.tar(.gz) archive or of a folder"
        )
    name = path.name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return ZipTree(path, max_bytes=max_bytes, max_members=max_members)
    if name.endswith(TAR_SUFFIXES):
        return TarTree(path, max_bytes=max_bytes, max_members=max_members)
    raise FishsegError(
        f"data.source: unsupported file {path}: expected a .zip or .tar/.tar.gz/.tgz archive, or a folder"
    )
