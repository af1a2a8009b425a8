"""fishseg.sources.fetch: every accepted layout lands in the canonical one; bad input changes nothing."""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from fishseg.errors import FishsegError
from fishseg.params import DataParams
from fishseg.paths import Paths
from fishseg.sources.fetch import check_layout, detect, fetch
from fishseg.sources.layout import image_dir, mask_dir

from .helpers import (
    assert_untouched,
    fish_dataset,
    generic_dataset,
    image_bytes,
    make_good_raw,
    snapshot,
    write,
    zip_tree,
)

SPECIES = {"Trout": 3, "Hourse Mackerel": 2}


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return Paths(tmp_path).raw_dir


@pytest.fixture
def good_raw(raw: Path) -> tuple[Path, dict]:
    """A previous good work/raw that every failing fetch must leave as it was."""
    return raw, make_good_raw(raw)


def run(source: Path | str, raw: Path, **params) -> dict:
    return fetch(DataParams(source=str(source), **params), raw, progress=False)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_fails(source: Path | str, good_raw: tuple[Path, dict], *needles: str, **params) -> str:
    """fetch raises a FishsegError naming ``needles``; work/raw and its folder are untouched."""
    raw, before = good_raw
    with pytest.raises(FishsegError) as info:
        run(source, raw, **params)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert_untouched(raw, before)
    return message


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("levels", [2, 1, 0])
@pytest.mark.parametrize("packed", ["folder", "zip", "tar.gz"])
def test_archive_layout_any_nesting(tmp_path: Path, raw: Path, levels: int, packed: str) -> None:
    src = fish_dataset(tmp_path / "in", SPECIES, levels=levels)
    if packed == "zip":
        src = zip_tree(src, tmp_path / "fish.zip")
    elif packed == "tar.gz":
        with tarfile.open(tmp_path / "fish.tar.gz", "w:gz") as tf:
            tf.add(tmp_path / "in", arcname=".")
        src = tmp_path / "fish.tar.gz"

    summary = run(src, raw)

    assert summary["pairs"] == {"Hourse Mackerel": 2, "Trout": 3}
    assert summary["layout"] == "fish_dataset"
    assert summary["source"] == packed.split(".")[0]
    assert names(raw) == ["Fish_Dataset"]
    base = (tmp_path / "in").joinpath(*["Fish_Dataset"] * levels)
    for species in SPECIES:
        assert names(image_dir(raw, species)) == names(base / species / species)
        # PNG input is copied byte for byte, not re-encoded.
        for path in image_dir(raw, species).iterdir():
            assert path.read_bytes() == (base / species / species / path.name).read_bytes()
        assert names(mask_dir(raw, species)) == names(image_dir(raw, species))
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]


def test_wrapper_folder_and_junk_inside_zip(tmp_path: Path, raw: Path) -> None:
    src = fish_dataset(tmp_path / "in", {"Shrimp": 2})
    write(tmp_path / "in" / "Fish_Dataset" / "README.txt", b"readme")
    write(tmp_path / "in" / "__MACOSX" / "Fish_Dataset" / "._x.png", b"resource fork")
    zip_path = zip_tree(src, tmp_path / "fish.zip", prefix="a-large-scale-fish-dataset/")

    summary = run(zip_path, raw)

    assert summary["pairs"] == {"Shrimp": 2}
    assert summary["root"] == "a-large-scale-fish-dataset/Fish_Dataset/Fish_Dataset"
    assert "1 other files ignored" in summary["notes"]


def test_na_fish_dataset_is_ignored_with_a_note(tmp_path: Path, raw: Path, caplog) -> None:
    src = fish_dataset(tmp_path / "in", {"Trout": 2})
    for i in range(3):
        write(src / "NA_Fish_Dataset" / "Trout" / f"{i}.png", image_bytes(i))
    caplog.set_level("INFO", logger="fishseg")

    summary = run(zip_tree(src, tmp_path / "fish.zip"), raw)

    assert summary["pairs"] == {"Trout": 2}
    assert "NA_Fish_Dataset ignored (3 images without masks)" in summary["notes"]
    assert "NA_Fish_Dataset ignored" in caplog.text
    assert names(raw / "Fish_Dataset" / "Fish_Dataset") == ["Trout"]


@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_generic_layout_with_species_folders(tmp_path: Path, raw: Path, packed: str) -> None:
    src = generic_dataset(tmp_path / "in", {"pike": 2, "carp": 3})
    if packed == "zip":
        src = zip_tree(src, tmp_path / "mine.zip", prefix="mydata/")

    summary = run(src, raw)

    assert summary["layout"] == "images_masks"
    assert summary["pairs"] == {"carp": 3, "pike": 2}
    assert names(image_dir(raw, "pike")) == ["img_0.png", "img_1.png"]
    assert names(mask_dir(raw, "pike")) == ["img_0.png", "img_1.png"]


def test_generic_flat_jpg_is_converted_to_png(tmp_path: Path, raw: Path) -> None:
    src = generic_dataset(tmp_path / "in", None, count=3, ext=".jpg")

    summary = run(zip_tree(src, tmp_path / "flat.zip"), raw)

    assert summary["pairs"] == {"unknown": 3}
    assert "3 files converted to PNG" in summary["notes"]
    assert names(image_dir(raw, "unknown")) == ["img_0.png", "img_1.png", "img_2.png"]
    for i in range(3):
        out = cv2.imread(str(image_dir(raw, "unknown") / f"img_{i}.png"), cv2.IMREAD_UNCHANGED)
        expected = cv2.imdecode(np.frombuffer(image_bytes(i, ".jpg"), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(out, expected)  # lossless: the decoded JPEG pixels


def test_mixed_types_and_upper_case_suffixes(tmp_path: Path, raw: Path) -> None:
    src = tmp_path / "in"
    for i, ext in enumerate([".BMP", ".TIF", ".jpeg", ".tiff"]):
        write(src / "images" / f"a{i}{ext}", image_bytes(i, ext.lower()))
        write(src / "masks" / f"a{i}.PNG", image_bytes(i, ".png", mask=True))

    summary = run(src, raw)

    assert summary["pairs"] == {"unknown": 4}
    assert names(image_dir(raw, "unknown")) == [f"a{i}.png" for i in range(4)]
    assert names(mask_dir(raw, "unknown")) == [f"a{i}.png" for i in range(4)]
    bmp = cv2.imread(str(image_dir(raw, "unknown") / "a0.png"))
    np.testing.assert_array_equal(bmp, cv2.imdecode(np.frombuffer(image_bytes(0, ".bmp"), np.uint8), 1))


def test_undecodable_non_png_is_kept_for_the_split_stage(tmp_path: Path, raw: Path) -> None:
    src = generic_dataset(tmp_path / "in", None, count=2)
    write(src / "images" / "broken.jpg", b"\xff\xd8 not really a jpeg")
    write(src / "masks" / "broken.png", image_bytes(9, mask=True))

    summary = run(src, raw)

    assert (image_dir(raw, "unknown") / "broken.jpg").read_bytes() == b"\xff\xd8 not really a jpeg"
    assert any("could not be decoded" in note and "broken.jpg" in note for note in summary["notes"])
    assert summary["pairs"] == {"unknown": 3}


def test_orphans_are_copied_not_judged(tmp_path: Path, raw: Path) -> None:
    """Missing masks are the split stage's to report: download keeps every file."""
    src = fish_dataset(tmp_path / "in", {"Trout": 3})
    (src / "Fish_Dataset" / "Fish_Dataset" / "Trout" / "Trout GT" / "00002.png").unlink()
    write(
        src / "Fish_Dataset" / "Fish_Dataset" / "Trout" / "Trout GT" / "99999.png", image_bytes(1, mask=True)
    )

    summary = run(src, raw)

    assert summary["pairs"] == {"Trout": 2}
    assert summary["images"] == 3 and summary["masks"] == 3
    assert "00002.png" in names(image_dir(raw, "Trout"))
    assert "99999.png" in names(mask_dir(raw, "Trout"))


def test_folder_source_skips_hidden_entries_and_link_loops(tmp_path: Path, raw: Path) -> None:
    src = fish_dataset(tmp_path / "in", {"Trout": 2})
    write(src / ".git" / "Trout" / "Trout" / "x.png", image_bytes(1))
    os.symlink(src, src / "Fish_Dataset" / "loop")

    summary = run(src, raw)

    assert summary["pairs"] == {"Trout": 2}


def test_synthetic_source_goes_through_the_same_checks(tmp_path: Path, raw: Path, monkeypatch) -> None:
    calls = []

    def generate(out_dir: Path, **kwargs) -> list:
        calls.append(kwargs)
        fish_dataset(out_dir, {"Trout": kwargs["photos_per_species"] * kwargs["copies_per_photo"]})
        return []

    monkeypatch.setitem(sys.modules, "fishseg.sources.synthetic", types.SimpleNamespace(generate=generate))
    data = DataParams(
        source="synthetic", synthetic={"photos_per_species": 2, "copies_per_photo": 2, "seed": 5}
    )

    summary = fetch(data, raw, progress=False)

    assert summary["source"] == "synthetic"
    assert summary["pairs"] == {"Trout": 4}
    assert calls[0] == {
        "photos_per_species": 2,
        "copies_per_photo": 2,
        "width": 590,
        "height": 445,
        "seed": 5,
        "progress": False,
    }


def test_synthetic_failure_leaves_raw_untouched(good_raw, monkeypatch) -> None:
    def generate(out_dir: Path, **kwargs) -> list:
        write(out_dir / "Fish_Dataset" / "Fish_Dataset" / "Trout" / "Trout" / "0.png", image_bytes(0))
        raise FishsegError("generator broke")

    monkeypatch.setitem(sys.modules, "fishseg.sources.synthetic", types.SimpleNamespace(generate=generate))
    assert_fails("synthetic", good_raw, "generator broke")


def test_new_data_replaces_old_completely(tmp_path: Path, good_raw) -> None:
    raw, _ = good_raw
    src = generic_dataset(tmp_path / "in", {"pike": 2})

    run(src, raw)

    assert names(raw / "Fish_Dataset" / "Fish_Dataset") == ["pike"]
    assert not (raw / "marker.txt").exists()
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]


def test_check_layout_counts_pairs(tmp_path: Path) -> None:
    fish_dataset(tmp_path, {"Trout": 2, "Shrimp": 1})
    write(image_dir(tmp_path, "Shrimp") / "lonely.png", image_bytes(3))
    assert check_layout(tmp_path) == {"Shrimp": 1, "Trout": 2}
    with pytest.raises(FishsegError, match="no Fish_Dataset/Fish_Dataset folder"):
        check_layout(tmp_path / "nothing")


def test_detect_names_the_root() -> None:
    files = ["x/images/a.png", "x/masks/a.png", "notes.txt"]
    found = detect(files, "label")
    assert (found.layout, found.root, found.pairs()) == ("images_masks", "x", {"unknown": 1})


# --------------------------------------------------------------------------- bad input


def test_empty_folder(tmp_path: Path, good_raw) -> None:
    (tmp_path / "in").mkdir()
    assert_fails(tmp_path / "in", good_raw, str(tmp_path / "in"), "no image/mask pairs", "accepted layouts")


def test_images_without_any_masks(tmp_path: Path, good_raw) -> None:
    src = tmp_path / "in"
    for i in range(3):
        write(src / "images" / f"{i}.png", image_bytes(i))
    assert_fails(src, good_raw, "no image/mask pairs", "3 images and 0 masks", "images/ + masks/")


def test_missing_path(tmp_path: Path, good_raw) -> None:
    assert_fails(tmp_path / "nope.zip", good_raw, "no such file or folder", str(tmp_path / "nope.zip"))


def test_unsupported_file_type(tmp_path: Path, good_raw) -> None:
    write(tmp_path / "fish.rar", b"Rar!")
    assert_fails(tmp_path / "fish.rar", good_raw, "unsupported file", ".zip")


def test_two_datasets_in_one_source(tmp_path: Path, good_raw) -> None:
    src = fish_dataset(tmp_path / "in", {"Trout": 2})
    generic_dataset(src / "other", None, count=2)
    assert_fails(
        src, good_raw, "several datasets", "Fish_Dataset/Fish_Dataset (fish_dataset)", "other (images_masks)"
    )


def test_two_files_with_one_stem(tmp_path: Path, good_raw) -> None:
    src = generic_dataset(tmp_path / "in", None, count=2)
    write(src / "images" / "img_0.jpg", image_bytes(0, ".jpg"))
    assert_fails(src, good_raw, "two images named 'img_0'", "images/img_0.jpg", "keep one")


def test_non_zip_named_zip(tmp_path: Path, good_raw) -> None:
    write(tmp_path / "fish.zip", b"<html>Please sign in</html>")
    assert_fails(tmp_path / "fish.zip", good_raw, f"not a zip archive: {tmp_path / 'fish.zip'}")


def test_truncated_zip(tmp_path: Path, good_raw) -> None:
    data = zip_tree(fish_dataset(tmp_path / "in", {"Trout": 2}), tmp_path / "full.zip").read_bytes()
    write(tmp_path / "cut.zip", data[: len(data) // 2])
    assert_fails(tmp_path / "cut.zip", good_raw, "not a zip archive", "re-download")


def hostile_zip(tmp_path: Path, *extra: tuple[zipfile.ZipInfo | str, bytes]) -> Path:
    """A valid dataset zip plus ``extra`` members (so only the check can make it fail)."""
    path = zip_tree(fish_dataset(tmp_path / "in", {"Trout": 2}), tmp_path / "bad.zip")
    with zipfile.ZipFile(path, "a") as zf:
        for info, data in extra:
            zf.writestr(info, data)
    return path


def unix_member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_zip_with_dot_dot_member(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path, ("Fish_Dataset/../../evil.png", image_bytes(1)))
    assert_fails(path, good_raw, "unsafe archive", str(path), "'..'", "relative paths")
    assert not (tmp_path / "evil.png").exists()


def test_zip_with_absolute_member(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path, (zipfile.ZipInfo("/tmp/evil.png"), image_bytes(1)))
    assert_fails(path, good_raw, "unsafe archive", "absolute path", "'/tmp/evil.png'")


def test_zip_with_windows_absolute_member(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path, (zipfile.ZipInfo("C:\\evil.png"), image_bytes(1)))
    assert_fails(path, good_raw, "absolute path")


def test_zip_with_symlink_member(tmp_path: Path, good_raw) -> None:
    link = unix_member("Fish_Dataset/Fish_Dataset/Trout/Trout/00009.png", stat.S_IFLNK | 0o777)
    path = hostile_zip(tmp_path, (link, b"/etc/passwd"))
    assert_fails(path, good_raw, "unsafe archive", "symbolic link", "00009.png")


def test_zip_with_device_member(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path, (unix_member("dev/sda", stat.S_IFCHR | 0o600), b""))
    assert_fails(path, good_raw, "device or special file", "'dev/sda'")


def test_zip_with_encrypted_member(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path, ("secret.png", b"x"))
    # zipfile cannot write encrypted members: set the "encrypted" flag bit (offsets 6 and 8).
    _patch_member(path, "secret.png", "<H", 6, 8, 0x1)
    assert_fails(path, good_raw, "encrypted archive", "password")


def test_over_size_archive(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path)
    total = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    needles = ("more than data.max_archive_bytes = 1000", "raise data.max_archive_bytes")
    assert_fails(path, good_raw, *needles, max_archive_bytes=1000)
    assert total > 1000


def test_too_many_members(tmp_path: Path, good_raw) -> None:
    path = hostile_zip(tmp_path)
    assert_fails(path, good_raw, "more than data.max_archive_members = 5", max_archive_members=5)


def _patch_member(path: Path, member: str, fmt: str, local_at: int, central_at: int, value: int) -> None:
    """Overwrite a field of ``member`` in both its local header and its central directory entry."""
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo(member)
    struct.pack_into(fmt, data, info.header_offset + local_at, value)
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_len].decode() == member:
            struct.pack_into(fmt, data, start + central_at, value)
        start += 4
    path.write_bytes(bytes(data))


def test_zip_that_lies_about_sizes(tmp_path: Path, good_raw) -> None:
    """A bomb-like member declared tiny, with a CRC that matches the declared bytes: only the
    streaming count (more bytes than declared) can catch it."""
    import zlib

    name = "Fish_Dataset/Fish_Dataset/Trout/Trout/00005.png"
    member = zipfile.ZipInfo(name)
    member.compress_type = zipfile.ZIP_DEFLATED
    path = hostile_zip(tmp_path, (member, bytes(200_000)))
    # Uncompressed size: offset 22 in the local header, 24 in the central directory; CRC: 14 and 16.
    _patch_member(path, name, "<I", 22, 24, 100)
    _patch_member(path, name, "<I", 14, 16, zlib.crc32(bytes(100)))
    info = zipfile.ZipFile(path).getinfo(name)
    assert (info.file_size, info.CRC) == (100, zlib.crc32(bytes(100)))
    assert_fails(path, good_raw, "damaged archive", "00005.png", "holds more than its declared 100 bytes")


def test_tar_with_symlink_and_traversal(tmp_path: Path, good_raw) -> None:
    fish_dataset(tmp_path / "in", {"Trout": 2})
    for name, kind, target in [
        ("link.png", tarfile.SYMTYPE, "/etc/passwd"),
        ("../up.png", tarfile.REGTYPE, ""),
    ]:
        path = tmp_path / f"bad{len(target)}.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            tf.add(tmp_path / "in", arcname=".")
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info, io.BytesIO(b""))
        assert_fails(path, good_raw, "unsafe archive", name)


def test_tar_with_device(tmp_path: Path, good_raw) -> None:
    path = tmp_path / "dev.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    assert_fails(path, good_raw, "device or special file")


def test_non_tar_named_tar_gz(tmp_path: Path, good_raw) -> None:
    write(tmp_path / "fish.tar.gz", b"plain text, not gzip")
    assert_fails(tmp_path / "fish.tar.gz", good_raw, f"not a tar archive: {tmp_path / 'fish.tar.gz'}")


def test_snapshot_helper_sees_changes(tmp_path: Path) -> None:
    """The untouched-check would notice a changed byte (guards the guard)."""
    before = make_good_raw(tmp_path / "raw")
    (tmp_path / "raw" / "marker.txt").write_text("changed\n")
    assert snapshot(tmp_path / "raw") != before


def test_embedded_real_photos_by_name(tmp_path: Path):
    """``realfish`` is the folder shipped in the repository, found from the project root."""
    from .helpers import REPO

    raw = Paths(tmp_path).raw_dir
    summary = fetch(DataParams(source="realfish"), raw, root=REPO, progress=False)
    assert summary["source"] == "realfish"
    assert Path(summary["location"]) == REPO / "datasets" / "realfish"
    assert len(summary["pairs"]) == 9 and sum(summary["pairs"].values()) == 252
    assert summary["pairs"]["Hourse Mackerel"] == len(list(image_dir(raw, "Hourse Mackerel").iterdir()))


def test_a_relative_source_is_taken_from_the_project_root(tmp_path: Path, monkeypatch):
    project = tmp_path / "project"
    generic_dataset(project / "photos", SPECIES)
    monkeypatch.chdir(tmp_path)  # not the project: the path still means project/photos
    summary = fetch(DataParams(source="photos"), Paths(project).raw_dir, root=project, progress=False)
    assert summary["pairs"] == SPECIES
    assert Path(summary["location"]) == project / "photos"
