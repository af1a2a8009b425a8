"""fishseg.sources.archive: member checks and capped streaming, below the level of fetch()."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from fishseg.errors import FishsegError
from fishseg.sources.archive import FolderTree, Limits, member_path, open_tree, write_chunks
from fishseg.sources.tarsource import TarTree, parse_pax
from fishseg.sources.zipsource import ZipTree

from .helpers import write

ARCHIVE = Path("a.zip")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.png", "a/b.png"),
        ("./a//b.png", "a/b.png"),
        ("a/", "a"),
        ("a\\b.png", "a/b.png"),
        ("x..y.png", "x..y.png"),
    ],
)
def test_member_path_normalises(name: str, expected: str) -> None:
    assert member_path(ARCHIVE, name) == expected


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("../a.png", "'..'"),
        ("a/../../b.png", "'..'"),
        ("a\\..\\..\\b.png", "'..'"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\a.png", "absolute path"),
        ("C:/Windows/a.png", "absolute path"),
        ("c:evil.png", "absolute path"),
    ],
)
def test_member_path_refuses_escapes(name: str, needle: str) -> None:
    with pytest.raises(FishsegError, match="unsafe archive a.zip") as info:
        member_path(ARCHIVE, name)
    assert needle in str(info.value)


def test_member_path_refuses_nul_bytes() -> None:
    with pytest.raises(FishsegError, match="NUL byte"):
        member_path(ARCHIVE, "a.png\x00.txt")


def test_tar_stream_counts_every_byte_against_the_cap(tmp_path: Path) -> None:
    """Headers and padding count: three 100-byte members are 3 x (512 + 512) bytes of stream."""
    import tarfile

    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"{i}.png")
            info.size = 100
            tf.addfile(info, io.BytesIO(bytes(100)))
    assert len(TarTree(path, Limits(max_bytes=3 * 1024 + 512, max_members=10)).files()) == 3
    with pytest.raises(FishsegError, match="more bytes than that, more than data.max_archive_bytes = 3000"):
        TarTree(path, Limits(max_bytes=3000, max_members=10))


def test_pax_records_parse_linearly_and_strictly() -> None:
    assert parse_pax(b"18 path=a/b/c.png\n11 size=42\n") == {"path": "a/b/c.png", "size": "42"}
    for bad in (b"2 2 2 2 2 x=1\n", b"99 path=x\n", b"x path=y\n", b"11 novalue\n"):
        with pytest.raises(ValueError):
            parse_pax(bad)


def test_write_chunks_reports_unwritable_destination(tmp_path: Path) -> None:
    with pytest.raises(FishsegError, match="cannot write .*missing"):
        write_chunks([b"abc"], tmp_path / "missing" / "out")


def test_zip_tree_lists_files_only_and_copies_chosen_ones(tmp_path: Path) -> None:
    path = tmp_path / "t.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("d/", b"")
        zf.writestr("d/a.png", b"A")
        zf.writestr("./d/b.png", b"B")
    tree = open_tree(path, Limits(max_bytes=100, max_members=10))
    assert isinstance(tree, ZipTree) and tree.files() == ["d/a.png", "d/b.png"]
    tree.copy_out({"d/b.png": tmp_path / "b"}, progress=False)
    assert (tmp_path / "b").read_bytes() == b"B"


def test_zip_with_duplicate_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.png", b"1")
        zf.writestr("a.png", b"2")
    with pytest.raises(FishsegError, match="'a.png' appears twice"):
        ZipTree(path, Limits(max_bytes=100, max_members=10))


def test_tar_tree_copies_in_archive_order(tmp_path: Path) -> None:
    import tarfile

    src = tmp_path / "src"
    write(src / "x" / "1.png", b"one")
    write(src / "x" / "2.png", b"two")
    path = tmp_path / "t.tar.xz"
    with tarfile.open(path, "w:xz") as tf:
        tf.add(src, arcname="top")
    tree = open_tree(path, Limits(max_bytes=10_240, max_members=10))
    assert isinstance(tree, TarTree) and tree.files() == ["top/x/1.png", "top/x/2.png"]
    tree.copy_out({"top/x/2.png": tmp_path / "2", "top/x/1.png": tmp_path / "1"}, progress=False)
    assert (tmp_path / "1").read_bytes() == b"one" and (tmp_path / "2").read_bytes() == b"two"
    with pytest.raises(FishsegError, match="max_archive_members = 2"):
        TarTree(path, Limits(max_bytes=10_240, max_members=2))


def test_folder_tree_skips_dangling_links(tmp_path: Path) -> None:
    write(tmp_path / "a.png", b"a")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert FolderTree(tmp_path, Limits(max_bytes=100, max_members=10)).files() == ["a.png"]
