"""Tar archives (plain, gzip, bzip2, xz), read by this project's own header parser.

Python 3.11.7's ``tarfile`` parses pax headers with regular expressions that backtrack
(CVE-2024-6232) and reads a pax header of any size into memory, so it is not used.
This reader walks the 512-byte headers itself, in one streaming pass:

- every byte of the decompressed stream counts against ``max_bytes``, headers included,
  and is counted *before* it is read (a 50 MB pax header in a 48 KB file is refused
  without reading it);
- pax and GNU long-name headers are at most 1 MiB and parsed linearly, record by
  record (length, keyword, value), and anything malformed is refused;
- regular files and folders only: hard and symbolic links, devices, FIFOs, sparse files
  (GNU type ``S`` or pax ``GNU.sparse.*``) and unknown types are refused by name;
- header checksums are verified; a truncated or corrupt stream is one clear error;
- each member's data may expand at most ``max_ratio`` times the compressed bytes read
  while it streamed.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
    too_big,
    too_many,
    unsafe_kind,
    write_chunks,
)

BLOCK = 512
HEADER_DATA_LIMIT = 1 << 20  # a pax or long-name header holds a path or two, never megabytes
_ZERO = bytes(BLOCK)
_FILE_TYPES = (b"0", b"\0", b"7")  # regular, old regular, contiguous (a regular file everywhere)
_DIR_TYPE = b"5"
_PAX, _PAX_GLOBAL, _LONG_NAME, _LONG_LINK = b"x", b"g", b"L", b"K"
_REFUSED_TYPES = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "device or special file (character device)",
    b"4": "device or special file (block device)",
    b"6": "device or special file (FIFO)",
    b"S": "sparse file",
}
# Keys a global pax header may not set: they would change every member after it.
_GLOBAL_FORBIDDEN = ("path", "linkpath", "size", "GNU.sparse")
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class Member:
    name: str  # as stored
    rel: str  # normalised (member_path)
    is_dir: bool
    size: int


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 for sizes of 8 GiB and more."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[0] & 0x80:
        raise ValueError("negative number")
    text = field.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
    return stored in (unsigned, signed)


def parse_pax(data: bytes) -> dict[str, str]:
    """``<length> <keyword>=<value>\\n`` records, parsed in one linear pass; ValueError if malformed."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0 and not data[pos:].strip(b"\0"):  # NUL padding after the last record
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise ValueError(f"bad record length at byte {pos}")
        end = pos + int(digits)
        if end > len(data) or end - pos < len(digits) + 4 or data[end - 1 : end] != b"\n":
            raise ValueError(f"record at byte {pos} does not end where its length says")
        keyword, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not keyword:
            raise ValueError(f"record at byte {pos} has no keyword=value")
        records[keyword.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


class _Stream:
    """The decompressed stream, every byte counted against the cap before it is read."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path, self.limits, self.total = path, limits, 0
        self.raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        magic = self.raw.read(6)
        self.raw.seek(0)
        self.data: BinaryIO
        if magic.startswith(b"\x1f\x8b"):
            self.data = gzip.GzipFile(fileobj=self.raw, mode="rb")
        elif magic.startswith(b"BZh"):
            self.data = bz2.BZ2File(self.raw)
        elif magic.startswith(b"\xfd7zXZ\x00"):
            self.data = lzma.LZMAFile(self.raw)  # noqa: SIM115 - closed by close()
        else:
            self.data = self.raw

    def close(self) -> None:
        self.data.close()
        self.raw.close()

    def check_room(self, size: int) -> None:
        """Raise if ``size`` more bytes would pass the cap (before reading them)."""
        if self.total + size > self.limits.max_bytes:
            raise too_big(self.path, None, self.limits.max_bytes)

    def read(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes; raise when they would pass the cap, or when the stream ends first."""
        self.check_room(size)
        parts, left = [], size
        try:
            while left and (part := self.data.read(left)):
                parts.append(part)
                left -= len(part)
        except _READ_ERRORS as exc:
            raise damaged(self.path, f"cannot read {what} ({type(exc).__name__}: {exc})") from None
        self.total += size - left
        if left:
            raise damaged(self.path, f"it ends inside {what} (truncated)")
        return b"".join(parts)

    def chunks(self, member: Member) -> Iterator[bytes]:
        """The member's data in chunks (then its padding is skipped), its expansion checked."""
        packed_start, left = self.raw.tell(), member.size
        while left:
            chunk = self.read(min(CHUNK, left), f"member {member.name!r}")
            left -= len(chunk)
            check_ratio(
                self.path,
                member.name,
                member.size - left,
                self.raw.tell() - packed_start,
                self.limits.max_ratio,
            )
            yield chunk
        self.read(-member.size % BLOCK, f"member {member.name!r}")


class _Walker:
    """One pass over the headers: pax and long-name headers folded into the member they precede."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.path = stream.path
        self.pending: dict[str, str] = {}
        self.long_name: str | None = None

    def members(self) -> Iterator[Member]:
        """Each member, in archive order; the caller reads or skips its data before the next."""
        while True:
            block = self._header()
            if block == _ZERO:
                return
            member = self._member(block)
            if member is not None:
                yield member

    def _header(self) -> bytes:
        """The next 512-byte header, its checksum verified (the end marker is all zeros)."""
        offset = self.stream.total
        try:
            block = self.stream.read(BLOCK, f"the header at byte {offset}")
        except FishsegError:
            if offset:
                raise
            block = b""  # not even one header: not a tar (of any compression) at all
        try:
            valid = block == _ZERO or (len(block) == BLOCK and _checksum_ok(block))
        except ValueError:  # a checksum field that is not a number
            valid = False
        if valid:
            return block
        if not offset:
            raise FishsegError(
                f"not a tar archive: {self.path}: the file is damaged, incomplete or of another type; "
                "re-download it, or point data.source at the unpacked folder"
            )
        raise damaged(self.path, f"the header at byte {offset} is corrupt (checksum)")

    def _member(self, block: bytes) -> Member | None:
        """The member this header describes, or None for a pax/long-name header (remembered)."""
        kind = block[156:157]
        if kind in (_PAX, _PAX_GLOBAL, _LONG_NAME, _LONG_LINK):
            self._meta(kind, self._stored_name(block), self._size(block, {}))
            return None
        name = self.pending.get("path") or self.long_name or self._stored_name(block)
        size = self._size(block, self.pending)
        if kind in _REFUSED_TYPES:
            raise unsafe_kind(self.path, name, _REFUSED_TYPES[kind])
        if any(key.startswith("GNU.sparse") for key in self.pending):
            raise unsafe_kind(self.path, name, "sparse file")
        if kind not in (*_FILE_TYPES, _DIR_TYPE):
            raise unsafe_kind(self.path, name, f"member of tar type {kind!r}")
        self.pending, self.long_name = {}, None
        return Member(name, member_path(self.path, name), kind == _DIR_TYPE, 0 if kind == _DIR_TYPE else size)

    def _size(self, block: bytes, pax: dict[str, str]) -> int:
        try:
            return int(pax["size"]) if "size" in pax else _number(block[124:136])
        except ValueError:
            raise damaged(self.path, "a header has an unreadable size") from None

    @staticmethod
    def _stored_name(block: bytes) -> str:
        name = block[0:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        if block[257:265] == b"ustar\x0000" and prefix:  # POSIX ustar: a path split in two
            name = prefix + b"/" + name
        return name.decode("utf-8", "surrogateescape")

    def _meta(self, kind: bytes, name: str, size: int) -> None:
        self.stream.check_room(size)
        if size > HEADER_DATA_LIMIT:
            raise damaged(
                self.path, f"a {size}-byte {'pax' if kind in (_PAX, _PAX_GLOBAL) else 'long-name'} header"
            )
        data = self.stream.read(size + -size % BLOCK, "a pax or long-name header")[:size]
        if kind == _LONG_NAME:
            self.long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if kind not in (_PAX, _PAX_GLOBAL):
            return
        try:
            records = parse_pax(data)
        except ValueError as exc:
            raise damaged(self.path, f"malformed pax header before {name!r}: {exc}") from None
        if kind == _PAX:
            self.pending.update(records)
        elif any(key.startswith(_GLOBAL_FORBIDDEN) for key in records):
            raise damaged(self.path, "a global pax header sets paths or sizes for every member")
        if "size" in records and not (records["size"].isascii() and records["size"].isdigit()):
            raise damaged(self.path, f"a pax header gives size {records['size']!r}")


class TarTree(SourceTree):
    """A tar archive, walked once when opened (members listed and counted) and once to copy."""

    kind = "tar"

    def __init__(self, path: Path, limits: Limits) -> None:
        super().__init__(path, limits)
        count = total = 0

        def scan(member: Member) -> Path | None:
            nonlocal count, total
            count += 1
            if count > limits.max_members:
                raise too_many(path, count, limits.max_members)
            if not member.is_dir and member.rel:
                total = self._add(member.rel, member.size, total)
            return None

        self._walk(scan)

    def _walk(self, sink: Callable[[Member], Path | None]) -> None:
        """Walk the archive; write a member's data where ``sink`` says, skip (but count) the rest."""
        stream = _Stream(self.path, self.limits)
        try:
            for member in _Walker(stream).members():
                dest = sink(member)
                chunks = stream.chunks(member)
                if dest is None:
                    for _ in chunks:
                        pass
                else:
                    write_chunks(chunks, dest)
        finally:
            stream.close()

    def copy_out(self, plan: Mapping[str, Path], *, progress: bool = True) -> None:
        with tqdm(total=len(plan), desc="extract", unit="file", disable=not progress) as bar:

            def sink(member: Member) -> Path | None:
                dest = plan.get(member.rel) if not member.is_dir else None
                if dest is not None:
                    if member.size != self.size(member.rel):
                        raise FishsegError(f"archive {self.path} changed while being read; run again")
                    bar.update(1)
                return dest

            self._walk(sink)
