"""Reading the official EMNIST distribution: IDX format, mapping files, every supported layout."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SyntheticArrays

from training.emnist import (
    SPLITS,
    class_indices,
    class_names,
    find_split_files,
    load_arrays,
    load_split,
    read_idx,
    read_mapping,
    write_idx,
)

# --- IDX format -----------------------------------------------------------------------------


def test_reads_a_hand_made_idx_file_from_a_path_and_a_stream(tmp_path: Path):
    # Written byte by byte from the format's definition, independently of write_idx.
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 28, 28)
    pixels = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(header + pixels.tobytes())

    array = read_idx(path)
    assert array.dtype == np.uint8 and array.shape == (2, 28, 28)
    np.testing.assert_array_equal(array.ravel(), pixels)
    np.testing.assert_array_equal(read_idx(io.BytesIO(path.read_bytes())), array)
    assert array.flags.writeable


def test_multi_byte_types_are_big_endian_on_disk(tmp_path: Path):
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">2i", 1, -2))
    np.testing.assert_array_equal(read_idx(path), [1, -2])


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float64])
def test_write_then_read_round_trips(tmp_path: Path, name: str, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, array)


def _valid_idx() -> bytes:
    return bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 28, 28) + bytes(2 * 28 * 28)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (_valid_idx()[:-1], "payload truncated"),
        (_valid_idx() + b"\x00", "longer than its header says"),
        (gzip.compress(_valid_idx())[:-20], "corrupt or truncated gzip"),
        (gzip.compress(_valid_idx()[:-100]), "payload truncated"),
    ],
)
def test_corrupt_files_raise_value_error_naming_the_file(
    tmp_path: Path, content: bytes, message: str
):
    path = tmp_path / "emnist-broken-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as excinfo:
        read_idx(path)
    assert "emnist-broken-idx3-ubyte.gz" in str(excinfo.value)


# --- mapping files and labels ---------------------------------------------------------------


def test_mapping_joins_codes_and_ignores_blank_lines(tmp_path: Path):
    path = tmp_path / "emnist-letters-mapping.txt"
    path.write_text("1 65 97\n2 66 98\n\n26 90 122\n")
    mapping = read_mapping(path)
    assert mapping == {1: "Aa", 2: "Bb", 26: "Zz"}
    assert class_names(mapping) == ["Aa", "Bb", "Zz"]
    # letters starts at 1: official labels map to contiguous indices by label order
    np.testing.assert_array_equal(class_indices(np.array([26, 1, 2]), mapping), [2, 0, 1])


@pytest.mark.parametrize(
    "content", ["1 65\n1 66\n", "1 x\n", "7\n", "", "1 65\n\xe9 1\n", "1 99999999999999999999\n"]
)
def test_malformed_mapping_raises(tmp_path: Path, content: str):
    path = tmp_path / "emnist-bad-mapping.txt"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match=r"emnist-bad-mapping\.txt"):
        read_mapping(path)


def test_class_indices_rejects_labels_missing_from_the_mapping():
    with pytest.raises(ValueError, match=r"\[0\]"):
        class_indices(np.array([1, 0]), {1: "Aa", 2: "Bb"})


def test_load_arrays_checks_the_pair(tmp_path: Path):
    images = write_idx(tmp_path / "i.gz", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="labels for 3 images"):
        load_arrays(images, write_idx(tmp_path / "l.gz", np.zeros(2, np.uint8)), {0: "0"})
    with pytest.raises(ValueError, match="not in the mapping"):
        load_arrays(images, write_idx(tmp_path / "l.gz", np.array([0, 0, 5], np.uint8)), {0: "0"})
    with pytest.raises(ValueError, match=r"uint8 \(N, 28, 28\)"):
        load_arrays(write_idx(tmp_path / "i.gz", np.zeros((3, 28, 27), np.uint8)), images, {})


# --- layouts --------------------------------------------------------------------------------


def _zipped(folder: Path, archive: Path, make) -> SyntheticArrays:
    """Write a distribution shaped like NIST's gzip.zip: every file under a `gzip/` folder."""
    arrays = make(folder)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"gzip/{path.name}")
    shutil.rmtree(folder)
    return arrays


# Each writes a synthetic distribution under `root` in one layout and returns its arrays.
LAYOUTS = {
    "flat": lambda root, make: make(root),
    "flat-plain": lambda root, make: make(root, compress=False),
    "torchvision-raw": lambda root, make: make(root / "EMNIST" / "raw"),
    "nist-gzip-folder": lambda root, make: make(root / "gzip"),
    "nist-zip": lambda root, make: _zipped(root / "x", root / "gzip.zip", make),
    "torchvision-zip": lambda root, make: _zipped(root / "x", root / "EMNIST/raw/gzip.zip", make),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_every_split(tmp_path: Path, synthetic_emnist, layout: str):
    written = LAYOUTS[layout](tmp_path, synthetic_emnist)
    assert len(written) == 2 * len(SPLITS)
    for (split, subset), expected in written.items():
        loaded = load_split(tmp_path, split, subset)
        np.testing.assert_array_equal(loaded.images, expected.images)
        np.testing.assert_array_equal(loaded.labels, expected.labels)
        assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.int64
        assert loaded.mapping == expected.mapping


def test_zip_members_are_read_in_place(tmp_path: Path, synthetic_emnist):
    LAYOUTS["nist-zip"](tmp_path, synthetic_emnist)
    files = find_split_files(tmp_path, "letters")
    assert files.images("test").member == "gzip/emnist-letters-test-images-idx3-ubyte.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gzip.zip"]
    assert load_split(tmp_path, "letters", "test").class_names == ["Aa", "Bb", "Cc"]


def test_missing_files_name_what_and_where(tmp_path: Path, synthetic_emnist):
    synthetic_emnist(tmp_path / "EMNIST" / "raw")
    (tmp_path / "EMNIST" / "raw" / "emnist-digits-mapping.txt").unlink()
    # torchvision's own download deletes the mapping files: give one explicitly.
    with pytest.raises(FileNotFoundError, match=r"emnist-digits-mapping\.txt.*EMNIST/raw"):
        load_split(tmp_path, "digits", "train")
    mapping = tmp_path / "emnist-digits-mapping.txt"
    mapping.write_text("0 48\n1 49\n2 65\n")
    assert len(load_split(tmp_path, "digits", "train", mapping=mapping)) == 5
    with pytest.raises(ValueError, match="unknown split"):
        find_split_files(tmp_path, "bywhatever")


# --- the real files -------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_bymerge_test_set(shared_emnist: Path):
    arrays = load_arrays(
        shared_emnist / "test" / "emnist-bymerge-test-images-idx3-ubyte.gz",
        shared_emnist / "test" / "emnist-bymerge-test-labels-idx1-ubyte.gz",
        read_mapping(shared_emnist / "mappings" / "emnist-bymerge-mapping.txt"),
    )
    assert arrays.images.shape == (116_323, 28, 28) and arrays.images.dtype == np.uint8
    assert len(arrays.class_names) == 47 and len(np.unique(arrays.labels)) == 47
    assert arrays.class_names[:11] == [*"0123456789", "A"] and arrays.class_names[-1] == "t"


@pytest.mark.shared_data
def test_real_partial_slice_is_positions_a_to_b_of_the_official_file(shared_emnist: Path):
    stem = shared_emnist / "partial" / "emnist-balanced-test-PARTIAL-idx18496-18799"
    images = read_idx(f"{stem}-images-idx3-ubyte.gz")
    labels = read_idx(f"{stem}-labels-idx1-ubyte.gz")
    official = read_idx(shared_emnist / "labels" / "emnist-balanced-test-labels-idx1-ubyte.gz")
    assert images.shape == (304, 28, 28) and len(official) == 18_800
    np.testing.assert_array_equal(labels, official[18496:18800])


@pytest.mark.shared_data
def test_real_letters_labels_start_at_one(shared_emnist: Path):
    mapping = read_mapping(shared_emnist / "mappings" / "emnist-letters-mapping.txt")
    labels = read_idx(shared_emnist / "labels" / "emnist-letters-test-labels-idx1-ubyte.gz")
    assert mapping[1] == "Aa" and mapping[26] == "Zz" and len(mapping) == 26
    assert labels.min() == 1 and labels.max() == 26 and len(labels) == 20_800
    assert class_indices(labels, mapping).max() == 25
