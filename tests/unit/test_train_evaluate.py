"""The training and evaluation CLIs end to end: learning, checkpoints, resume, reports.

Most tests train on a small learnable split written in NIST's format into tmp_path, so they
run on a fresh clone without ../shared; one smoke test uses the real emnist47 protocol.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.bars import CLASSES, bar_images, write_bars_split
from support.servers import read_member

from emnist.checkpoint import REQUIRED_KEYS, load_checkpoint, model_from_checkpoint
from emnist.inference import images_to_tensor, predict_logits
from serving import archive, model_card
from training import evaluate, finetune, train
from training.protocol import PROJECT_ROOT


@pytest.fixture(scope="module")
def bars_root(tmp_path_factory) -> Path:
    return write_bars_split(tmp_path_factory.mktemp("bars"))


def run_training(root: Path, out: Path, *extra: str) -> dict:
    argv = [
        "--arch",
        "cnn-seed",
        "--split",
        "digits",
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--no-progress",
        "--seed",
        "0",
        *extra,
    ]
    return train.main(argv)


@pytest.fixture(scope="module")
def trained_run(bars_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_training(bars_root, out, "--epochs", "3")
    return out


def test_training_learns_and_writes_a_self_describing_checkpoint(trained_run, bars_root):
    ckpt = load_checkpoint(trained_run / "best.pt")
    for key in (*REQUIRED_KEYS, "preprocessing_version", "train_config", "data", "metrics"):
        assert key in ckpt, key
    assert ckpt["arch"] == "cnn-seed"
    assert ckpt["class_names"] == ["0", "1", "2", "3"]
    assert ckpt["model_args"]["num_classes"] == CLASSES
    assert ckpt["train_config"]["seed"] == 0
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2, 3]
    assert ckpt["metrics"]["val_acc"] > 0.9, ckpt["history"]
    assert "resume" not in ckpt  # the released form carries no optimizer state


def test_checkpoint_alone_rebuilds_the_model(trained_run):
    ckpt = load_checkpoint(trained_run / "best.pt")
    model = model_from_checkpoint(ckpt)
    x = images_to_tensor(bar_images(np.arange(CLASSES), np.random.default_rng(5)), "cpu")
    predicted = predict_logits(model, x).argmax(1)
    assert predicted.tolist() == list(range(CLASSES))


def test_resume_continues_from_the_last_epoch(bars_root, tmp_path, capsys):
    run_training(bars_root, tmp_path, "--epochs", "1")
    result = run_training(bars_root, tmp_path, "--epochs", "2", "--resume")
    assert "resuming from" in capsys.readouterr().out
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    last = load_checkpoint(tmp_path / "last.pt")
    assert set(last["resume"]) >= {"model", "optimizer", "scheduler", "generator"}


def test_same_seed_gives_the_same_weights(bars_root, tmp_path):
    for name in ("a", "b"):
        run_training(bars_root, tmp_path / name, "--epochs", "1")
    a = load_checkpoint(tmp_path / "a" / "best.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "best.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_evaluate_reports_on_the_test_set(trained_run, bars_root, tmp_path, capsys):
    metrics = evaluate.main(
        [str(trained_run / "best.pt"), "--data-root", str(bars_root), "--out", str(tmp_path)]
    )
    assert "top-1" in capsys.readouterr().out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["images"] == 200 and saved["subset"] == "test"
    assert saved["top1"] > 0.9 and saved["top3"] >= saved["top1"]
    assert set(saved["per_class_accuracy"]) == {"0", "1", "2", "3"}
    confusion = json.loads((tmp_path / "confusion.json").read_text())
    assert np.array(confusion["matrix"]).sum() == 200
    for plot in ("confusion.png", "learning_curves.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics["top1"] == saved["top1"]


def test_evaluate_refuses_a_checkpoint_for_other_classes(trained_run, shared_emnist, tmp_path):
    with pytest.raises(SystemExit, match="classes"):
        evaluate.main(
            [
                str(trained_run / "best.pt"),
                "--protocol",
                "emnist47",
                "--limit",
                "10",
                "--out",
                str(tmp_path),
            ]
        )


@pytest.mark.shared_data
def test_dry_run_on_the_emnist47_protocol(shared_emnist, tmp_path):
    result = train.main(["--dry-run", "--arch", "cnn", "--out", str(tmp_path), "--no-progress"])
    assert len(result["history"]) == 1
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert len(ckpt["class_names"]) == 47
    assert ckpt["data"], "provenance of the training data is recorded"


@pytest.mark.slow
def test_an_archive_carries_its_card_and_evaluates_like_its_checkpoint(
    trained_run, bars_root, tmp_path
):
    """`evaluate X.mar` runs the archive's own handler and agrees with the checkpoint."""
    data = ["--data-root", str(bars_root)]
    from_checkpoint = evaluate.main(
        [str(trained_run / "best.pt"), *data, "--out", str(tmp_path / "ckpt")]
    )
    mar = archive.main(
        [
            str(trained_run / "best.pt"),
            "--name",
            "bars",
            "--version",
            "0.1",
            "--store",
            str(tmp_path / "store"),
            "--test-metrics",
            str(tmp_path / "ckpt" / "metrics.json"),
            "--precision",
            "fp32",  # compared with the checkpoint's float32 figures below
        ]
    )
    card = json.loads(read_member(mar, "model-card.json"))
    assert card["test"]["top1"] == from_checkpoint["top1"]
    assert card["parameters"] == sum(p.numel() for p in load_model(trained_run).parameters())
    assert card["multiply_adds_per_image"] > card["parameters"]  # convolutions reuse weights
    assert card["training"]["config"]["arch"] == "cnn-seed"
    assert b"top-1" in read_member(mar, "MODEL_CARD.md")

    from_archive = evaluate.main([str(mar), *data, "--out", str(tmp_path / "mar")])
    assert from_archive["path"].startswith("archive handler")
    assert from_archive["images"] == from_checkpoint["images"]
    assert from_archive["top1"] == from_checkpoint["top1"]
    assert from_archive["per_class_accuracy"] == from_checkpoint["per_class_accuracy"]
    assert abs(from_archive["loss"] - from_checkpoint["loss"]) < 1e-4


def test_archive_refuses_metrics_of_another_subset(trained_run, bars_root, tmp_path):
    ckpt = str(trained_run / "best.pt")
    evaluate.main([ckpt, "--data-root", str(bars_root), "--subset", "val", "--out", str(tmp_path)])
    metrics = str(tmp_path / "metrics.json")
    store = str(tmp_path / "store")
    with pytest.raises(SystemExit, match="subset"):
        archive.main([ckpt, "--version", "0.1", "--store", store, "--test-metrics", metrics])


def load_model(run: Path) -> torch.nn.Module:
    return model_from_checkpoint(load_checkpoint(run / "best.pt"))


def test_init_from_starts_at_the_base_weights_and_records_the_base(
    trained_run, bars_root, tmp_path
):
    base_path = trained_run / "best.pt"
    # A learning rate of 0 leaves the weights (and their average) where they started; batch
    # norm's running statistics still move, as they do in any training step.
    result = run_training(
        bars_root, tmp_path, "--epochs", "1", "--lr", "0", "--init-from", str(base_path)
    )
    tuned, base = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(base_path)
    for key, value in base["state_dict"].items():
        if "running_" not in key and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(tuned["state_dict"][key], value, msg=key)
    assert tuned["base"]["sha256"] == hashlib.sha256(base_path.read_bytes()).hexdigest()
    assert tuned["base"]["train_config"] == base["train_config"]
    assert tuned["train_config"]["init_from"] == str(base_path)
    assert result["best"]["acc"] == pytest.approx(base["metrics"]["val_acc"])
    card = model_card.card_markdown(model_card.build_card(tuned, "emnist-cnn", "9.9"))
    assert f"Fine-tuned from `{base_path}` (sha256 {tuned['base']['sha256'][:12]})" in card


def test_a_base_inside_the_project_is_named_relative_to_it(tmp_path):
    # Model cards ship to other machines: the release machine's absolute path means nothing there.
    assert finetune.project_relative(PROJECT_ROOT / "runs" / "r" / "best.pt") == "runs/r/best.pt"
    outside = tmp_path / "best.pt"
    assert finetune.project_relative(outside) == str(outside)


def test_init_from_refuses_weights_of_another_model(trained_run, bars_root, tmp_path):
    base = str(trained_run / "best.pt")
    with pytest.raises(SystemExit, match="holds a 'cnn-seed' model, not 'cnn'"):
        run_training(bars_root, tmp_path, "--arch", "cnn", "--epochs", "1", "--init-from", base)


def test_font_glyphs_make_their_share_of_each_epoch(bars_root, tmp_path, capsys):
    result = run_training(bars_root, tmp_path, "--epochs", "1", "--font-glyphs", "0.25")
    out = capsys.readouterr().out
    # Classes 0-3 in 16 faces and 3 weights: 192 renders, enough copies for a quarter.
    match = re.search(r"font glyphs: 192 renders x (\d+) \(25% of each epoch\)", out)
    assert match, out
    emnist = int(re.search(r"([\d,]+) train", out).group(1).replace(",", "")) - 192 * int(
        match.group(1)
    )
    assert int(match.group(1)) == round(0.25 * emnist / (0.75 * 192))
    assert result["history"][0]["val_acc"] > 0.5  # still learns the bars
