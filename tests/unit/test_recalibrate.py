"""Batch-norm recalibration (training/recalibrate.py): exact statistics, a self-describing file."""

import hashlib

import pytest
import torch
from support.bars import CLASSES, write_bars_split
from torch import nn

from emnist.checkpoint import atomic_save, load_checkpoint, make_checkpoint, model_from_checkpoint
from emnist.inference import images_to_tensor
from emnist.models import build_model
from serving import model_card
from training import recalibrate
from training.protocol import load_data


def test_statistics_are_those_of_the_given_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    model[1].running_mean.fill_(7.0)  # stale statistics, as augmented training leaves them
    inputs = torch.rand(64, 1, 28, 28) * 3
    # Batches of equal size: the average of their means is the mean over all images.
    assert recalibrate.recalibrate_batch_norm(model, inputs, batch_size=16) == 1
    features = model[0](inputs).detach()
    torch.testing.assert_close(model[1].running_mean, features.mean(dim=(0, 2, 3)))
    batch_vars = [features[i : i + 16].var(dim=(0, 2, 3)) for i in range(0, 64, 16)]
    torch.testing.assert_close(model[1].running_var, torch.stack(batch_vars).mean(0))
    assert model[1].momentum == 0.1 and not model.training  # left as it was found, in eval mode


def test_a_model_without_batch_norm_is_left_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))
    assert recalibrate.recalibrate_batch_norm(model, torch.rand(8, 1, 28, 28)) == 0


@pytest.fixture
def stale_checkpoint(tmp_path):
    """A CNN checkpoint on the bars split whose batch-norm statistics are wrong."""
    (tmp_path / "bars").mkdir()
    root = write_bars_split(tmp_path / "bars")
    bundle = load_data(split="digits", data_root=root)
    model = build_model("cnn", num_classes=CLASSES, width=8)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(0.01)
    path = tmp_path / "best.pt"
    ckpt = make_checkpoint(
        model=model,
        arch="cnn",
        model_args={"num_classes": CLASSES, "width": 8},
        class_names=bundle.class_names,
        train_config={"split": "digits", "protocol": None, "data_root": str(root)},
        data={},
        metrics={"val_acc": 0.25, "epoch": 3},
        history=[],
    )
    atomic_save(ckpt, path)
    return path, bundle


def test_the_cli_writes_a_new_checkpoint_that_says_what_was_done(stale_checkpoint, tmp_path):
    path, bundle = stale_checkpoint
    before = path.read_bytes()
    out = tmp_path / "recalibrated.pt"
    result = recalibrate.main([str(path), "--out", str(out), "--images", "640"])
    assert path.read_bytes() == before  # the input is kept as it was
    new = load_checkpoint(out)
    info = new["bn_recalibration"]
    assert info["images"] == 640 and info["input_sha256"] == hashlib.sha256(before).hexdigest()
    assert new["metrics"]["val_acc"] == result["after"]["acc"]
    assert new["metrics"]["epoch"] == 3  # the rest of the metrics carry over
    assert info["val_before"]["acc"] == result["before"]["acc"]
    # The first layer's statistics are now those of the clean training images: the average of
    # the two batches' means (512 and 128 images).
    with torch.no_grad():
        conv = model_from_checkpoint(new).features[0]
        f = conv(images_to_tensor(bundle.train_images[:640], torch.device("cpu")))
    expected = (f[:512].mean(dim=(0, 2, 3)) + f[512:].mean(dim=(0, 2, 3))) / 2
    torch.testing.assert_close(new["state_dict"]["features.1.running_mean"], expected)
    card = model_card.card_markdown(model_card.build_card(new, "emnist-cnn", "9.9"))
    assert "Batch-norm statistics recomputed on 640 clean training images" in card


def test_the_cli_refuses_to_overwrite_its_input(stale_checkpoint):
    path, _ = stale_checkpoint
    with pytest.raises(SystemExit, match="must differ"):
        recalibrate.main([str(path), "--out", str(path)])
