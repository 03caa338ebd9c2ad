"""Handwriting-font renders: labels, caps-only fonts, determinism, provenance, held-out fonts."""

from __future__ import annotations

import numpy as np
import pytest

from emnist.labels import CHARACTERS, label_of
from training import handwriting_fonts as hw

EMNIST47 = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
pytestmark = pytest.mark.skipif(
    bool(hw.missing(tuple(f.name for f in hw.FAMILIES))), reason=f"fonts missing: {hw.INSTALL}"
)


def test_every_character_of_the_47_classes_is_rendered():
    assert sorted(c for c, _ in hw.characters_for(EMNIST47)) == sorted(CHARACTERS)
    assert all(label == label_of(c) for c, label in hw.characters_for(EMNIST47))


def test_a_capitals_only_face_gives_no_lower_case_label():
    assert not hw.family("humor-sans").lower_case
    _, labels = hw.handwriting_set(EMNIST47, ("humor-sans",), per_character=1)
    assert not {EMNIST47[i] for i in labels} & set("abdefghnqrt")
    _, labels = hw.handwriting_set(EMNIST47, ("breip",), per_character=1)
    counts = np.bincount(labels, minlength=47)
    assert counts[EMNIST47.index("a")] == 1 and counts[EMNIST47.index("O")] == 2  # O and o


def test_renders_are_deterministic_for_a_seed_and_differ_across_seeds():
    a, _ = hw.handwriting_set(EMNIST47, ("breip",), per_character=2, seed=0)
    b, _ = hw.handwriting_set(EMNIST47, ("breip",), per_character=2, seed=0)
    c, _ = hw.handwriting_set(EMNIST47, ("breip",), per_character=2, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape[1:] == (28, 28)


def test_held_out_families_are_never_training_families():
    assert set(hw.HELD_OUT).isdisjoint(hw.TRAINING)
    assert {f.name for f in hw.FAMILIES} == set(hw.HELD_OUT) | set(hw.TRAINING)


def test_provenance_names_every_file_with_its_package_and_hash():
    records = hw.provenance(hw.TRAINING)
    assert len(records) == sum(len(hw.family(n).files) for n in hw.TRAINING)
    assert all(len(r["sha256"]) == 64 and r["package"].startswith("fonts-") for r in records)


def test_a_missing_font_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(hw, "FONT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="make fonts"):
        hw.handwriting_set(EMNIST47, ("breip",))


def test_drawing_validation_scores_checkpoints_and_archives_alike(tmp_path):
    """The held-out renders through a checkpoint in-process and through its archive's handler
    (in float32) give the same answers; `main` reports top-1 for each."""
    from support.servers import write_checkpoint

    from serving import archive
    from training import drawing_validation

    ckpt = write_checkpoint(tmp_path / "best.pt", class_names=EMNIST47)
    mar = archive.main([str(ckpt), "--version", "0.1", "--store", str(tmp_path), "--no-check"])
    images, labels = hw.handwriting_set(EMNIST47, hw.HELD_OUT, per_character=1, seed=1)
    in_process, names = drawing_validation.predicted(ckpt, images)
    served, served_names = drawing_validation.predicted(mar, images, precision="fp32")
    assert names == served_names == EMNIST47 and np.array_equal(in_process, served)
    scores = drawing_validation.main([str(ckpt), "--per-character", "1"])
    assert scores == {str(ckpt): float((in_process == labels).mean())}
