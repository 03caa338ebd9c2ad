"""The three-seed study on a trial budget: runs per seed, resumable, mean and spread reported."""

import json
import statistics

import pytest

from benchmarks import seeds

TRIAL = [
    "--train-arg=--epochs=1",
    "--train-arg=--limit-train=512",
    "--train-arg=--limit-val=256",
    "--train-arg=--model-arg=width=8",
    "--eval-limit",
    "300",
]


def study(tmp_path, *extra):
    return seeds.main(
        ["--only", "emnist-cnn", *TRIAL, "--runs", str(tmp_path / "runs"),
         "--out", str(tmp_path / "docs"), *extra]
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.shared_data
def test_two_seeds_train_apart_and_report_their_mean_and_spread(shared_emnist, tmp_path):
    report = study(tmp_path, "--seeds", "1", "2")
    rows = report["runs"]
    assert [r["seed"] for r in rows] == [1, 2]
    assert all(r["test_images"] == 300 for r in rows)
    first, second = (tmp_path / "runs" / "seeds-2.0" / "emnist-cnn" / f"seed{s}" for s in (1, 2))
    assert (first / "train" / "last.pt").read_bytes() != (second / "train" / "last.pt").read_bytes()
    top1 = [r["test_top1"] for r in rows]
    summary = report["summary"]["per_model"]["emnist-cnn"]["test_top1"]
    assert summary["mean"] == pytest.approx(statistics.fmean(top1))
    assert summary["sd"] == pytest.approx(statistics.stdev(top1))
    assert json.loads((tmp_path / "docs" / "seeds.json").read_text()) == report
    (averaged,) = report["seed_ensembles"]  # the two seeds' mean log-probabilities
    assert averaged["model"] == "emnist-cnn" and averaged["seeds"] == [1, 2]
    assert 0 < averaged["val_top1"] <= 1 and 0 < averaged["drawing_val_top1"] <= 1
    assert "| emnist-cnn | 2 |" in (tmp_path / "docs" / "seeds.md").read_text()

    # Run again: nothing is trained or evaluated twice.
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    assert study(tmp_path, "--seeds", "1", "2") == report
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == stamps

    # Reporting only: a seed not trained yet is named, not trained.
    partial = study(tmp_path, "--seeds", "1", "2", "3", "--report-only")
    assert partial["not_finished"] == ["emnist-cnn seed 3"] and partial["runs"] == rows
    assert not (tmp_path / "runs" / "seeds-2.0" / "emnist-cnn" / "seed3").exists()
    assert "emnist-cnn seed 3." in (tmp_path / "docs" / "seeds.md").read_text()
    assert study(tmp_path, "--seeds", "1", "--report-only")["seed_ensembles"] == []

    # A longer recipe continues the run from its last epoch and makes every figure again.
    longer = study(tmp_path, "--seeds", "1", "--train-arg=--epochs=2")
    assert (first / "train" / "last.pt").stat().st_mtime_ns != stamps[first / "train" / "last.pt"]
    assert (first / "best.pt").stat().st_mtime_ns != stamps[first / "best.pt"]
    assert longer["runs"][0]["seed"] == 1
    history = seeds.load_checkpoint(first / "train" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_reporting_without_any_finished_run_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no finished run"):
        study(tmp_path, "--report-only")
