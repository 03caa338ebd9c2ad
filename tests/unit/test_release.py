"""`make release` end to end on a trial budget: train, evaluate, archive with its card, re-check."""

import json
import zipfile

import pytest
from support.servers import read_member

from release import recipe as release


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_trial_release_archives_a_checked_model_with_its_card(shared_emnist, tmp_path):
    store = tmp_path / "store"
    released = release.main(
        [
            "--version",
            "0.0.1",
            "--only",
            "emnist-cnn",
            "--epochs",
            "1",
            "--train-arg=--limit-train=512",
            "--train-arg=--limit-val=256",
            "--train-arg=--model-arg=width=8",
            "--eval-limit",
            "500",
            "--store",
            str(store),
            "--runs",
            str(tmp_path / "runs"),
        ]
    )
    assert released == [store / "emnist-cnn-0.0.1.mar"]
    with zipfile.ZipFile(released[0]) as z:
        card = json.loads(z.read("model-card.json"))
    run = tmp_path / "runs" / "release-0.0.1" / "emnist-cnn"
    tested = json.loads((run / "eval-test" / "metrics.json").read_text())
    served = json.loads((run / "eval-archive" / "metrics.json").read_text())
    assert card["test"]["top1"] == tested["top1"] and card["test"]["images"] == 500
    assert card["model_args"]["width"] == 8
    # Since 2.0: one run from scratch with typeset glyphs and handwriting fonts, recalibrated.
    config = card["training"]["config"]
    assert config["epochs"] == 1 and config["seed"] == 0 and config["font_glyphs"] == 0.05
    assert config["handwriting_fonts"] == 0.08 and not card["training"].get("fine_tuned_from")
    assert card["training"]["bn_recalibration"]["input"] == str(run / "train" / "best.pt")
    assert "Batch-norm statistics recomputed" in read_member(released[0], "MODEL_CARD.md").decode()
    assert abs(served["top1"] - tested["top1"]) <= release.AGREEMENT  # in float32
    assert served["path"].startswith("archive handler")
    assert (run / "eval-served" / "metrics.json").exists()  # as served: bf16 where native


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_1x_release_still_fine_tunes_a_base(shared_emnist, tmp_path):
    """The 1.x recipe: the base run, then one epoch with glyphs, then clean statistics."""
    store = tmp_path / "store"
    trial = ["--epochs", "1", "--train-arg=--limit-train=512", "--train-arg=--limit-val=256"]
    trial += ["--train-arg=--model-arg=width=8", "--eval-limit", "300"]
    (mar,) = release.main(
        ["--version", "1.9", "--only", "emnist-cnn", *trial, "--store", str(store),
         "--runs", str(tmp_path / "runs")]
    )  # fmt: skip
    card = json.loads(read_member(mar, "model-card.json"))
    run = tmp_path / "runs" / "release-1.9" / "emnist-cnn"
    assert card["training"]["config"]["font_glyphs"] == 0.1  # FINE_TUNE's
    assert card["training"]["fine_tuned_from"]["file"] == str(run / "base" / "best.pt")
    assert card["training"]["bn_recalibration"]["input"] == str(run / "fine-tune" / "best.pt")


@pytest.mark.parametrize(
    ("base", "message"),
    [("emnist-cnn", "NAME=CHECKPOINT"), ("emnist-digits=x.pt", "NAME=CHECKPOINT"),
     ("emnist-cnn=missing.mar", "not found")],
)  # fmt: skip
def test_bad_bases_are_refused_before_anything_runs(tmp_path, base, message):
    with pytest.raises(SystemExit, match=message):
        release.main(
            ["--version", "9.9", "--only", "emnist-cnn", "--base", base, "--store", str(tmp_path),
             "--runs", str(tmp_path / "runs")]
        )  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_a_release_never_overwrites_a_version(tmp_path):
    (tmp_path / "emnist-cnn-1.0.mar").write_bytes(b"released")
    with pytest.raises(SystemExit, match="exists"):
        release.main(
            [
                "--version",
                "1.0",
                "--only",
                "emnist-cnn",
                "--store",
                str(tmp_path),
                "--runs",
                str(tmp_path / "runs"),
            ],
        )
    assert not (tmp_path / "runs").exists(), "refused before training"
