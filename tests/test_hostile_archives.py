"""Hostile archives and folders through the download stage: ``python stages/download.py`` in a
scratch project, as ``dvc repro download`` runs it.

Each case: exit 2 with one error line naming the archive (or file) and the fix, no
traceback, the previous ``data/raw`` byte for byte as it was and no temp folder beside it,
and peak memory under ``STAGE_BOUND_MB``. The dataset inside each archive is valid, so
only the hostile part can make it fail.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._hostile import assert_refused, scratch_project, stage, untouched
from tests.helpers import (
    fish_dataset,
    generic_dataset,
    image_bytes,
    make_good_raw,
    snapshot,
    write,
    zip_tree,
)

IMAGE = "Fish_Dataset/Fish_Dataset/Trout/Trout/00000.png"


# --------------------------------------------------------------------------- builders


def dataset_files(tmp: Path) -> list[tuple[str, bytes]]:
    """The members of a small valid dataset: (archive name, bytes)."""
    src = fish_dataset(tmp / "src", {"Trout": 2})
    return [(p.relative_to(src).as_posix(), p.read_bytes()) for p in sorted(src.rglob("*")) if p.is_file()]


def tar_block(name: str, size: int, kind: bytes = b"0", link: str = "") -> bytes:
    """One ustar header, checksum included (written by hand: tarfile refuses to write hostile ones)."""
    header = bytearray(512)
    header[0:100] = name.encode().ljust(100, b"\0")[:100]
    header[100:108] = b"0000644\0"
    header[108:124] = b"0000000\0" * 2
    header[124:136] = f"{size:011o}\0".encode()
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8
    header[156:157] = kind
    header[157:257] = link.encode().ljust(100, b"\0")[:100]
    header[257:265] = b"ustar\x0000"
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header)


def tar_member(name: str, data: bytes, kind: bytes = b"0", link: str = "") -> bytes:
    return tar_block(name, len(data), kind, link) + data + bytes(-len(data) % 512)


def tar_bytes(tmp: Path, *extra: bytes, first: bool = False) -> bytes:
    """A valid dataset as a tar stream with ``extra`` raw members (before or after it), and the end."""
    good = b"".join(tar_member(name, data) for name, data in dataset_files(tmp))
    body = b"".join(extra) + good if first else good + b"".join(extra)
    return body + bytes(1024)


def pax(records: dict[str, str]) -> bytes:
    """A pax extended header member holding ``records``: ``<length> <key>=<value>\\n``, where the
    length counts its own digits."""
    data = b""
    for key, value in records.items():
        item = f" {key}={value}\n".encode()
        length = len(item) + 1
        while len(str(length)) + len(item) != length:
            length = len(str(length)) + len(item)
        data += str(length).encode() + item
    return tar_member("./PaxHeaders/x", data, b"x")


def good_zip(tmp: Path) -> Path:
    return zip_tree(fish_dataset(tmp / "src", {"Trout": 2}), tmp / "bad.zip")


def patch_central(path: Path, member: str, fmt: str, offset: int, value: int) -> None:
    """Overwrite one field of ``member``'s central directory entry."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_len].decode() == member:
            struct.pack_into(fmt, data, start + offset, value)
        start += 4
    path.write_bytes(bytes(data))


# Each builder writes the hostile source into ``tmp`` and returns (data.source, params, needles).
Case = Callable[[Path], tuple[Path, dict, tuple[str, ...]]]


def pax_header_50mb_over_byte_cap(tmp: Path):
    path = tmp / "pax.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(IMAGE)
        info.pax_headers = {"comment": "x" * 50_000_000}
        data = image_bytes(0)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert path.stat().st_size < 200_000
    return (
        path,
        {"max_archive_bytes": 1000},
        ("more than data.max_archive_bytes = 1000", "raise data.max_archive_bytes"),
    )


def pax_header_50mb(tmp: Path):
    path, _, _ = pax_header_50mb_over_byte_cap(tmp)
    return path, {}, ("damaged archive", "-byte pax header", "re-download")


def pax_redos(tmp: Path):
    """CVE-2024-6232: a pax header that sends Python 3.11.7's tarfile regex into quadratic backtracking."""
    payload = b"2 " * 400_000 + b"x=y\n"
    path = tmp / "redos.tar"
    path.write_bytes(tar_bytes(tmp, tar_member("./PaxHeaders/x", payload, b"x"), first=True))
    return path, {}, ("damaged archive", "malformed pax header", "re-download")


def zip_ratio_1029(tmp: Path):
    path = good_zip(tmp)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("Fish_Dataset/big.bin", "w") as out:
        for _ in range(200):
            out.write(bytes(1 << 20))
    assert path.stat().st_size < 300_000
    return path, {}, ("more than data.max_archive_ratio = 200", "bomb", "raise data.max_archive_ratio")


def zip_overlap(tmp: Path):
    """CVE-2024-0450: one member's range covers the next one's (how a small zip claims gigabytes)."""
    path = good_zip(tmp)
    infos = sorted(zipfile.ZipFile(path).infolist(), key=lambda i: i.header_offset)
    first = next(i for i in infos if not i.is_dir())
    later = infos[infos.index(first) + 1]
    span = later.header_offset + 200 - first.header_offset  # into the next member's header and data
    for field in (20, 24):  # compressed and uncompressed size
        patch_central(path, first.filename, "<I", field, span)
    return path, {}, ("damaged archive", "overlap", "CVE-2024-0450")


def zip_larger_than_the_disk(tmp: Path):
    """A member declaring 1 TB: with the size caps raised, the free-disk check still refuses it."""
    path = tmp / "huge.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in dataset_files(tmp):
            zf.writestr(name, data)
        zf.filelist[-1].file_size = 10**12  # goes into the zip64 extra of the central directory
    params = {"max_archive_bytes": 10**15, "max_archive_ratio": 10**15}
    return path, params, ("needs 1000", "GB free", "free some disk space")


def tar_hard_link(tmp: Path):
    path = tmp / "link.tar"
    path.write_bytes(tar_bytes(tmp, tar_member("Fish_Dataset/x.png", b"", b"1", "/etc/shadow")))
    return path, {}, ("unsafe archive", "'Fish_Dataset/x.png' is a hard link", "regular files only")


def tar_fifo(tmp: Path):
    path = tmp / "fifo.tar"
    path.write_bytes(tar_bytes(tmp, tar_member("Fish_Dataset/pipe.png", b"", b"6")))
    return path, {}, ("unsafe archive", "(FIFO)", "regular files only")


def tar_sparse_gnu(tmp: Path):
    path = tmp / "sparse.tar"
    path.write_bytes(tar_bytes(tmp, tar_member("Fish_Dataset/sparse.png", bytes(512), b"S")))
    return path, {}, ("unsafe archive", "sparse file", "regular files only")


def tar_sparse_pax(tmp: Path):
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "Fish_Dataset/s.png"}
    path = tmp / "sparse-pax.tar"
    path.write_bytes(tar_bytes(tmp, pax(records), tar_member("Fish_Dataset/s.png", bytes(512))))
    return path, {}, ("unsafe archive", "sparse file", "regular files only")


def tar_gz_truncated(tmp: Path):
    full = gzip.compress(tar_bytes(tmp))
    path = tmp / "cut.tar.gz"
    path.write_bytes(full[: len(full) * 2 // 3])
    return path, {}, ("damaged archive", str(path), "re-download")


def tar_gz_corrupt(tmp: Path):
    data = bytearray(gzip.compress(tar_bytes(tmp)))
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    path = tmp / "corrupt.tar.gz"
    path.write_bytes(bytes(data))
    return path, {}, ("damaged archive", str(path), "re-download")


def tar_bad_checksum(tmp: Path):
    bad = bytearray(tar_member("Fish_Dataset/notes.txt", b"abc"))
    bad[5] ^= 0xFF  # a byte of its name, after the checksum was computed
    path = tmp / "checksum.tar"
    path.write_bytes(tar_bytes(tmp, bytes(bad)))
    return path, {}, ("damaged archive", "corrupt (checksum)", "re-download")


def tar_nul_in_pax_path(tmp: Path):
    path = tmp / "nul.tar"
    body = pax({"path": "Fish_Dataset/evil.png\x00.sh"}) + tar_member("x", image_bytes(1))
    path.write_bytes(tar_bytes(tmp, body))
    return path, {}, ("unsafe archive", "NUL byte", "relative paths only")


def tar_pax_path_traversal(tmp: Path):
    path = tmp / "up.tar"
    path.write_bytes(tar_bytes(tmp, pax({"path": "../../up.png"}) + tar_member("x", image_bytes(1))))
    return path, {}, ("unsafe archive", "'..'", "relative paths only")


def case_collision(tmp: Path):
    src = fish_dataset(tmp / "src", {"Trout": 2})
    base = src / "Fish_Dataset" / "Fish_Dataset" / "Trout"
    write(base / "Trout" / "Bass.png", image_bytes(5))
    write(base / "Trout" / "bass.png", image_bytes(6))
    return (
        zip_tree(src, tmp / "case.zip"),
        {},
        ("Bass.png", "differ only in case or Unicode normalisation", "keep one"),
    )


def nfc_collision(tmp: Path):
    src = fish_dataset(tmp / "src", {"Trout": 2})
    base = src / "Fish_Dataset" / "Fish_Dataset" / "Trout"
    write(base / "Trout" / "Cafe\u0301.png", image_bytes(5))  # NFD, as macOS stores it
    write(base / "Trout" / "Caf\u00e9.png", image_bytes(6))  # NFC
    return zip_tree(src, tmp / "nfd.zip"), {}, ("differ only in case or Unicode normalisation", "keep one")


def species_case_collision(tmp: Path):
    src = fish_dataset(tmp / "src", {"Trout": 2, "trout": 2})
    return zip_tree(src, tmp / "species.zip"), {}, ("species folders", "'Trout'", "rename one")


def zip_lies_about_size(tmp: Path):
    import zlib

    path = good_zip(tmp)
    name = "Fish_Dataset/Fish_Dataset/Trout/Trout/00009.png"
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, bytes(500_000))
    patch_central(path, name, "<I", 24, 100)  # uncompressed size
    patch_central(path, name, "<I", 16, zlib.crc32(bytes(100)))  # and a CRC that matches it
    return path, {}, ("damaged archive", "holds more than its declared 100 bytes", "re-download")


def zip_forged_entry_count(tmp: Path):
    path = good_zip(tmp)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 60_000, 60_000)
    path.write_bytes(bytes(data))
    return path, {}, ("60000 or more members", "more than data.max_archive_members = 50000")


def zip_padded_directory(tmp: Path):
    """A central directory swollen with extra-field padding: refused before zipfile parses it."""
    path = good_zip(tmp)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("Fish_Dataset/pad.txt")
        info.extra = struct.pack("<HH", 0xCAFE, 60_000) + bytes(60_000)
        zf.writestr(info, b"")
    return path, {}, ("damaged archive", "a central directory of", "re-download")


def zip_symlink(tmp: Path):
    path = good_zip(tmp)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("Fish_Dataset/Fish_Dataset/Trout/Trout/00007.png")
        info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd")
    return path, {}, ("unsafe archive", "symbolic link", "regular files only")


def zip_fifo(tmp: Path):
    path = good_zip(tmp)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("Fish_Dataset/pipe")
        info.create_system, info.external_attr = 3, (stat.S_IFIFO | 0o600) << 16
        zf.writestr(info, b"")
    return path, {}, ("unsafe archive", "device or special file", "regular files only")


def zip_bzip2_member(tmp: Path):
    path = good_zip(tmp)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("Fish_Dataset/notes.txt", b"abc" * 100)
    return path, {}, ("damaged archive", "compression method 12", "zip deflate")


def zip_corrupt_member(tmp: Path):
    path = tmp / "stored.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in dataset_files(tmp):
            zf.writestr(name, data)
    info = zipfile.ZipFile(path).getinfo(IMAGE)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(IMAGE) + 40] ^= 0xFF  # one byte of the image's data
    path.write_bytes(bytes(data))
    return path, {}, ("damaged archive", "size or CRC differs", "re-download")


def zip_with_stub(tmp: Path):
    """Bytes before the first member (a self-extracting stub): offsets no longer mean what they say."""
    data = good_zip(tmp).read_bytes()
    path = tmp / "stub.zip"
    path.write_bytes(b"MZ" + bytes(4094) + data)
    return path, {}, ("damaged archive", "not where its end record says", "re-download")


def source_is_a_fifo(tmp: Path):
    path = tmp / "data.tar"
    os.mkfifo(path)
    return path, {}, ("is not a regular file or folder", "point it at an archive or folder")


def folder_link_to_a_file_outside(tmp: Path):
    src = generic_dataset(tmp / "src", None, count=2)
    write(tmp / "secret.png", image_bytes(9))
    (src / "images" / "img_9.png").symlink_to(tmp / "secret.png")
    return src, {}, ("img_9.png is a link to", "outside the folder", "copy the files into the folder")


def folder_link_to_a_folder_outside(tmp: Path):
    src = generic_dataset(tmp / "src", {"Trout": 2})
    generic_dataset(tmp / "elsewhere", {"Bream": 1})
    (src / "images" / "Bream").symlink_to(tmp / "elsewhere" / "images" / "Bream")
    return src, {}, ("is a link to", "outside the folder", "copy the files into the folder")


def folder_too_many_files(tmp: Path):
    src = generic_dataset(tmp / "src", None, count=4)
    return src, {"max_archive_members": 5}, ("6 or more members", "raise data.max_archive_members")


CASES: list[Case] = [
    pax_header_50mb_over_byte_cap,
    pax_header_50mb,
    pax_redos,
    zip_ratio_1029,
    zip_overlap,
    zip_larger_than_the_disk,
    tar_hard_link,
    tar_fifo,
    tar_sparse_gnu,
    tar_sparse_pax,
    tar_gz_truncated,
    tar_gz_corrupt,
    tar_bad_checksum,
    tar_nul_in_pax_path,
    tar_pax_path_traversal,
    case_collision,
    nfc_collision,
    species_case_collision,
    zip_lies_about_size,
    zip_forged_entry_count,
    zip_padded_directory,
    zip_symlink,
    zip_fifo,
    zip_bzip2_member,
    zip_corrupt_member,
    zip_with_stub,
    source_is_a_fifo,
    folder_link_to_a_file_outside,
    folder_link_to_a_folder_outside,
    folder_too_many_files,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_download_refuses(case: Case, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    source, data_params, needles = case(tmp_path / "in")
    root = scratch_project(tmp_path / "project", data={"source": str(source), **data_params})
    raw = root / "data" / "raw"
    before = make_good_raw(raw)

    outcome = stage("download", root, timeout=120)

    line = assert_refused(outcome, *needles)
    assert str(source) in line  # the archive or folder at fault (the member is among the needles)
    assert untouched(raw, before)


def test_nested_archives_are_not_unpacked_but_counted(tmp_path: Path) -> None:
    """An archive inside the archive is neither opened nor copied: dropped and counted."""
    src = fish_dataset(tmp_path / "in" / "src", {"Trout": 2})
    (tmp_path / "t").mkdir()
    zip_tree(fish_dataset(tmp_path / "inner", {"Trout": 3}), src / "Fish_Dataset" / "inner.zip")
    write(src / "Fish_Dataset" / "more.tar.gz", gzip.compress(tar_bytes(tmp_path / "t")))
    source = zip_tree(src, tmp_path / "nested.zip")
    root = scratch_project(tmp_path / "project", data={"source": str(source)})

    outcome = stage("download", root, timeout=120)

    assert outcome.code == 0, outcome.out
    assert "2 other files ignored" in outcome.out
    raw = root / "data" / "raw"
    assert sorted(p.name for p in raw.rglob("*") if p.is_file()) == [
        "00000.png",
        "00000.png",
        "00001.png",
        "00001.png",
    ]


def test_fifo_in_a_folder_source_is_skipped_without_blocking(tmp_path: Path) -> None:
    src = generic_dataset(tmp_path / "src", None, count=2)
    os.mkfifo(src / "images" / "img_7.png")
    root = scratch_project(tmp_path / "project", data={"source": str(src)})

    outcome = stage("download", root, timeout=60)

    assert outcome.code == 0, outcome.out
    images = root / "data" / "raw" / "Fish_Dataset" / "Fish_Dataset" / "unknown" / "unknown"
    assert sorted(p.name for p in images.iterdir()) == ["img_0.png", "img_1.png"]


def test_the_bounded_cases_really_are_bombs(tmp_path: Path) -> None:
    """Guards the guard: without the caps, the pax and ratio cases would unpack to 50 and 200 MB."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    path, _, _ = pax_header_50mb_over_byte_cap(tmp_path / "a")
    with tarfile.open(path) as tf:  # the stdlib reads the whole pax header into memory
        assert len(tf.getmembers()[0].pax_headers["comment"]) == 50_000_000
    path, _, _ = zip_ratio_1029(tmp_path / "b")
    info = zipfile.ZipFile(path).getinfo("Fish_Dataset/big.bin")
    assert info.file_size / info.compress_size > 1000
    assert snapshot(tmp_path / "a")  # the builders wrote real files
