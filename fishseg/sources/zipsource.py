"""Zip archives, checked from their records before a byte is unpacked, then read by our own code.

``zipfile`` only parses the central directory, and only after the end record has said
how many entries it holds and how large it is (so a forged count cannot fill memory).
Then every member's local header is read to check that no two members share bytes and
none reaches into the directory: overlapping entries are how a small zip declares
gigabytes (CVE-2024-0450, not fixed in Python 3.11.7). Member data is inflated here,
in bounded chunks, and must come out at exactly its declared size with its CRC.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from fishseg.errors import FishsegError
from fishseg.sources.archive import (
    CHUNK,
    Limits,
    SourceTree,
    check_ratio,
    damaged,
    member_path,
    read_at_most,
    too_many,
    unsafe_kind,
    write_chunks,
)

_END = b"PK\x05\x06"
_END64_LOCATOR = b"PK\x06\x07"
_END64 = b"PK\x06\x06"
_LOCAL = b"PK\x03\x04"
_LOCAL_SIZE = 30
# A central directory entry is 46 bytes plus name, extra field and comment: ~100 for a
# dataset. More than this per entry is not a dataset's index but padding to fill memory.
_DIRECTORY_BYTES_PER_ENTRY = 1024
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


def _not_a_zip(path: Path) -> FishsegError:
    return FishsegError(
        f"not a zip archive: {path}: the file is damaged, incomplete or of another type; "
        "re-download it, or point data.source at the unpacked folder"
    )


def directory_extent(fh: BinaryIO, path: Path) -> tuple[int, int, int]:
    """(entries, directory offset, directory size) from the end records, zip64 included."""
    size = fh.seek(0, 2)
    tail_start = max(0, size - 22 - 0xFFFF)
    fh.seek(tail_start)
    tail = fh.read()
    at = tail.rfind(_END)
    if at < 0 or len(tail) - at < 22:
        raise _not_a_zip(path)
    _, _, _, _, entries, dir_size, dir_offset, _ = struct.unpack("<4sHHHHIIH", tail[at : at + 22])
    end_at = tail_start + at
    fh.seek(max(0, end_at - 20))
    locator = fh.read(20)
    saturated = entries == 0xFFFF or 0xFFFFFFFF in (dir_size, dir_offset)
    if locator[:4] == _END64_LOCATOR:  # a zip64 end record (some writers add one to every zip)
        end_at = struct.unpack("<Q", locator[8:16])[0]
        fh.seek(end_at)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != _END64:
            raise _not_a_zip(path)
        entries, _, dir_size, dir_offset = struct.unpack("<QQQQ", record[24:56])
    elif saturated:
        raise _not_a_zip(path)
    if dir_offset + dir_size != end_at:
        # Bytes before the first member (a self-extracting stub) or between the records.
        raise damaged(path, "its central directory is not where its end record says")
    return entries, dir_offset, dir_size


class ZipTree(SourceTree):
    """A zip archive (stored or deflate members), checked from its records when opened."""

    kind = "zip"

    def __init__(self, path: Path, limits: Limits) -> None:
        super().__init__(path, limits)
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._starts: dict[str, int] = {}  # rel path -> offset of its data
        with open(path, "rb") as fh:
            entries, dir_offset, dir_size = directory_extent(fh, path)
            if entries > limits.max_members:
                raise too_many(path, entries, limits.max_members)
            if dir_size > _DIRECTORY_BYTES_PER_ENTRY * max(entries, 1):
                raise damaged(path, f"a central directory of {dir_size} bytes for {entries} members")
            try:
                with zipfile.ZipFile(fh) as zf:
                    infos = zf.infolist()
            except (zipfile.BadZipFile, EOFError, ValueError, struct.error, UnicodeDecodeError):
                raise _not_a_zip(path) from None
            if len(infos) > limits.max_members:
                raise too_many(path, len(infos), limits.max_members)
            starts = _data_starts(fh, path, infos, dir_offset)
        total = 0
        for info in infos:
            rel = self._check(info)
            if rel is not None:
                total = self._add(rel, info.file_size, total)
                self._infos[rel] = info
                self._starts[rel] = starts[id(info)]

    def _check(self, info: zipfile.ZipInfo) -> str | None:
        """The member's path if it is a regular file; None for folders; raise for anything unsafe."""
        name = info.orig_filename  # before zipfile cuts it at a NUL byte
        rel = member_path(self.path, name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise unsafe_kind(self.path, name, "symbolic link")
        if stat.S_ISDIR(mode) or info.is_dir() or not rel:
            return None
        if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            raise unsafe_kind(self.path, name, "device or special file")
        if info.flag_bits & 0x1:
            raise FishsegError(
                f"encrypted archive {self.path}: member {name!r} is password-protected; "
                "unpack it yourself and point data.source at the folder"
            )
        if info.compress_type not in _METHODS:
            raise damaged(self.path, f"member {name!r} uses compression method {info.compress_type}")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise damaged(self.path, f"stored member {name!r} declares two different sizes")
        check_ratio(self.path, name, info.file_size, info.compress_size, self.limits.max_ratio)
        return rel

    def _chunks(self, fh: BinaryIO, rel: str) -> Iterator[bytes]:
        """The member's bytes, refused as soon as they exceed the declared size; size and CRC checked."""
        info = self._infos[rel]
        fh.seek(self._starts[rel])
        packed = read_at_most(fh, info.compress_size)
        chunks = packed if info.compress_type == zipfile.ZIP_STORED else _inflate(packed, self.path, rel)
        written = crc = 0
        for chunk in chunks:
            written += len(chunk)
            if written > info.file_size:
                raise damaged(
                    self.path, f"member {rel!r} holds more than its declared {info.file_size} bytes"
                )
            crc = zlib.crc32(chunk, crc)
            yield chunk
        if written != info.file_size or crc != info.CRC:
            raise damaged(self.path, f"member {rel!r} is truncated or corrupt (size or CRC differs)")

    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        # Archive order keeps the reads sequential on disk.
        wanted = sorted(plan, key=lambda rel: self._starts[rel])
        with open(self.path, "rb") as fh:
            for rel in tqdm(wanted, desc="extract", unit="file", disable=not progress):
                write_chunks(self._chunks(fh, rel), plan[rel])


def _data_starts(fh: BinaryIO, path: Path, infos: list[zipfile.ZipInfo], dir_offset: int) -> dict[int, int]:
    """Where each member's data starts (by ``id(info)``); refuse members that overlap."""
    starts: dict[int, int] = {}
    previous_end, previous = 0, None
    for info in sorted(infos, key=lambda i: i.header_offset):
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_SIZE)
        if len(head) < _LOCAL_SIZE or head[:4] != _LOCAL:
            raise damaged(path, f"member {info.orig_filename!r} has no local header where the index says")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if fh.read(name_len).decode(encoding, "replace") != info.orig_filename:
            raise damaged(path, f"member {info.orig_filename!r} has another name in its local header")
        if info.header_offset < previous_end:
            raise damaged(
                path,
                f"members {previous!r} and {info.orig_filename!r} overlap (a zip bomb; Python's own "
                "check for this, CVE-2024-0450, is missing here)",
            )
        start = info.header_offset + _LOCAL_SIZE + name_len + extra_len
        starts[id(info)] = start
        previous_end, previous = start + info.compress_size, info.orig_filename
    if previous_end > dir_offset:
        raise damaged(path, f"member {previous!r} runs into the central directory")
    return starts


def _inflate(packed: Iterable[bytes], path: Path, rel: str) -> Iterator[bytes]:
    """Raw deflate data, inflated at most ``CHUNK`` bytes at a time, however dense the input."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        for data in packed:
            while not inflater.eof:
                out = inflater.decompress(data, CHUNK)
                if out:
                    yield out
                data = inflater.unconsumed_tail
                if not data and len(out) < CHUNK:
                    break
            if inflater.eof:
                break
    except zlib.error as exc:
        raise damaged(path, f"member {rel!r} cannot be inflated ({exc})") from None
    if not inflater.eof:
        raise damaged(path, f"member {rel!r} is truncated")
