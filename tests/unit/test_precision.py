"""Training precision: what auto picks, and that bf16 trains like float32 and says so."""

from __future__ import annotations

import pytest
import torch
from support.bars import write_bars_split

from emnist.checkpoint import load_checkpoint
from training import precision, train


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "amx_bf16", "amx_tile"}, "bf16"),  # Sapphire Rapids
        ({"avx512f", "avx512_bf16"}, "bf16"),  # Zen 4, Cooper Lake
        ({"avx2", "fma"}, "fp32"),  # bf16 would be emulated: slower than float32
        (set(), "fp32"),
    ],
)
def test_auto_picks_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(precision.hardware, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve("auto", torch.device("cpu")) == expected
    assert precision.resolve("fp32", torch.device("cpu")) == "fp32"
    assert precision.resolve("bf16", torch.device("cpu")) == "bf16"


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("fp16", torch.device("cpu"))


@pytest.mark.parametrize("choice", ["fp32", "bf16"])
def test_both_precisions_learn_and_the_checkpoint_records_which(tmp_path, choice):
    (tmp_path / "bars").mkdir()
    root = write_bars_split(tmp_path / "bars")
    argv = ["--arch", "cnn-seed", "--split", "digits", "--data-root", str(root)]
    argv += ["--out", str(tmp_path / "run"), "--batch-size", "64", "--no-progress"]
    train.main([*argv, "--epochs", "3", "--precision", choice])
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["train_config"]["precision"] == choice
    assert ckpt["metrics"]["val_acc"] > 0.9
    # Weights stay float32 whatever the arithmetic.
    assert all(
        v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
