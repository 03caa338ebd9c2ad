"""The evaluation protocol of ../shared/emnist/README.md, and official splits as data sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.emnist import idx_file_name, load_split, read_idx, read_mapping, write_idx
from training.protocol import (
    DataBundle,
    load_data,
    load_protocol,
    pixel_digests,
    relabel_by_character,
    split_validation,
)

BYMERGE_CLASSES = [*"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"abdefghnqrt"]


def _digests(*arrays: np.ndarray) -> set[bytes]:
    return {d for images in arrays for d in pixel_digests(images)}


def _check_bundle_is_clean(bundle: DataBundle, num_classes: int) -> None:
    """Shapes and dtypes as documented; train, val and test share no image."""
    for images, labels in [
        (bundle.train_images, bundle.train_labels),
        (bundle.val_images, bundle.val_labels),
        (bundle.test_images, bundle.test_labels),
    ]:
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        assert labels.dtype == np.int64 and len(labels) == len(images)
        assert labels.min() >= 0 and labels.max() < num_classes
    train, val = _digests(bundle.train_images), _digests(bundle.val_images)
    assert len(train) == len(bundle.train_images) and len(val) == len(bundle.val_images)
    assert not train & val
    assert not (train | val) & _digests(bundle.test_images)
    json.dumps(bundle.provenance)


# --- pure pieces ----------------------------------------------------------------------------


def test_relabel_by_character_merges_lowercase_into_uppercase():
    byclass = {0: "0", 12: "C", 36: "a", 38: "c"}
    bymerge = {0: "0", 12: "C", 36: "a"}
    labels = np.array([38, 36, 12, 0])
    np.testing.assert_array_equal(relabel_by_character(labels, byclass, bymerge), [12, 36, 12, 0])
    with pytest.raises(ValueError, match=r"\['a'\]"):
        relabel_by_character(labels, byclass, {0: "0", 12: "C"})


def test_validation_split_is_seeded_disjoint_and_sized():
    train, val = split_validation(1000, 0.05, seed=3)
    assert len(val) == 50 and len(train) == 950
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    np.testing.assert_array_equal(split_validation(1000, 0.05, seed=3)[1], val)
    assert not np.array_equal(split_validation(1000, 0.05, seed=4)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(10, 1.0, seed=0)


def test_pixel_digests_tell_equal_images_apart_from_different_ones():
    images = np.zeros((3, 28, 28), np.uint8)
    images[2, 5, 5] = 1
    a, b, c = pixel_digests(images)
    assert a == b != c


def test_load_data_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        load_data()
    with pytest.raises(ValueError, match="exactly one"):
        load_data(protocol="emnist47", split="balanced")
    with pytest.raises(ValueError, match="unknown protocol"):
        load_data(protocol="emnist62")


def test_official_split_removes_train_images_equal_to_test_images(tmp_path: Path, synthetic_emnist):
    written = synthetic_emnist(tmp_path)
    train = written["balanced", "train"]
    leaked = train.images.copy()
    leaked[1] = written["balanced", "test"].images[2]  # the same image in both official sets
    write_idx(tmp_path / (idx_file_name("balanced", "train", "images") + ".gz"), leaked)

    bundle = load_data(split="balanced", data_root=tmp_path, val_fraction=0.25, seed=0)
    assert bundle.name == "balanced" and bundle.class_names == ["0", "1", "A"]
    assert len(bundle.train_images) + len(bundle.val_images) == 4 and len(bundle.val_images) == 1
    assert bundle.provenance["sources"]["balanced_train"]["equal_to_test"] == 1
    np.testing.assert_array_equal(bundle.test_images, written["balanced", "test"].images)
    _check_bundle_is_clean(bundle, num_classes=3)


# --- the shared files -----------------------------------------------------------------------


@pytest.mark.shared_data
def test_emnist47_counts_match_the_protocol(emnist47_bundle: DataBundle):
    bundle = emnist47_bundle
    assert bundle.name == "emnist47" and bundle.class_names == BYMERGE_CLASSES
    assert len(bundle.test_images) == 116_323
    pool = len(bundle.train_images) + len(bundle.val_images)
    assert pool == 106_583
    assert bundle.provenance["sources"]["byclass_test"]["kept"] == 99_845
    assert bundle.provenance["sources"]["byclass_test"]["equal_to_test"] == 16_478
    assert bundle.provenance["sources"]["balanced_train_slice"]["equal_to_test"] == 1_300
    assert len(bundle.val_images) == round(0.05 * pool)
    assert bundle.provenance["val"] == {"fraction": 0.05, "seed": 0}
    _check_bundle_is_clean(bundle, num_classes=47)


@pytest.mark.shared_data
def test_emnist47_class_sizes(emnist47_bundle: DataBundle):
    # The README quotes 517 and 5,605: those are the sizes before duplicates within the pool are
    # dropped (see the next test). Among the 106,583 unique images, 'f' and 'Q' have 496, '1' 5,582.
    sizes = np.bincount(np.concatenate([emnist47_bundle.train_labels, emnist47_bundle.val_labels]))
    names = emnist47_bundle.class_names
    assert len(sizes) == 47
    assert sizes.min() == 496 and {names[i] for i in np.flatnonzero(sizes == 496)} == {"f", "Q"}
    assert sizes.max() == 5_582 and names[sizes.argmax()] == "1"


@pytest.mark.shared_data
def test_readme_class_sizes_are_those_of_the_pool_before_deduplication(shared_emnist: Path):
    """Rebuilds the pool from the files with public pieces only, independently of the protocol."""
    mappings = shared_emnist / "mappings"
    bymerge = read_mapping(mappings / "emnist-bymerge-mapping.txt")
    byclass = load_split(
        shared_emnist / "test", "byclass", "test", mapping=mappings / "emnist-byclass-mapping.txt"
    )
    stem = shared_emnist / "partial" / "emnist-balanced-train-PARTIAL-idx103680-112799"
    images = np.concatenate([byclass.images, read_idx(f"{stem}-images-idx3-ubyte.gz")])
    labels = np.concatenate(
        [
            relabel_by_character(byclass.labels, byclass.mapping, bymerge),
            read_idx(f"{stem}-labels-idx1-ubyte.gz"),  # the balanced mapping is bymerge's
        ]
    )
    bymerge_test = read_idx(shared_emnist / "test" / "emnist-bymerge-test-images-idx3-ubyte.gz")
    test = _digests(bymerge_test)
    digests = pixel_digests(images)
    outside_test = np.array([d not in test for d in digests])
    sizes = np.bincount(labels[outside_test])
    assert outside_test.sum() == 107_665 and sizes.min() == 517 and sizes.max() == 5_605
    assert len({d for d, keep in zip(digests, outside_test, strict=True) if keep}) == 106_583


@pytest.fixture(scope="module")
def digits_bundle(shared_emnist: Path) -> DataBundle:
    return load_protocol("digits", shared_emnist)


@pytest.mark.shared_data
def test_digits_protocol(digits_bundle: DataBundle):
    bundle = digits_bundle
    assert bundle.name == "digits" and bundle.class_names == list("0123456789")
    assert len(bundle.test_images) == 10_000
    sources = bundle.provenance["sources"]
    assert set(sources) == {"emnist47_pool_digits", "digits_train_slice", "mnist_train_slice"}
    assert sources["emnist47_pool_digits"]["equal_to_test"] == 1_260
    assert sources["digits_train_slice"]["equal_to_test"] == 296
    pool = len(bundle.train_images) + len(bundle.val_images)
    assert pool == sum(s["kept"] for s in sources.values())
    assert len(bundle.val_images) == round(0.05 * pool)
    _check_bundle_is_clean(bundle, num_classes=10)


def test_shared_root_comes_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("EMNIST_SHARED_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="EMNIST_SHARED_ROOT"):
        load_protocol("digits")
