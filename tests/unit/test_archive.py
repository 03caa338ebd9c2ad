"""Model archives: contents, naming, refusals, and the post-build check catching a broken one."""

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from support.servers import LABELS, archive_names, read_member, write_checkpoint

from serving import archive

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One archive built (and checked) from a checkpoint that records its own version."""
    tmp = tmp_path_factory.mktemp("archive")
    ckpt = write_checkpoint(tmp / "best.pt", arch="rcnn", version="3.1", resume={"step": 1})
    mar = archive.main([str(ckpt), "--store", str(tmp / "store"), "--batch-size", "4"])
    return mar, ckpt


@pytest.mark.slow
def test_the_core_and_the_handler_are_the_only_project_code_in_an_archive(built):
    mar, _ = built
    code = {n for n in archive_names(mar) if n.endswith(".py")}
    core = {p.relative_to(ROOT).as_posix() for p in (ROOT / "emnist").rglob("*.py")}
    assert code == core | {"emnist_handler.py"}
    assert not any(n.startswith(("training/", "handlers/")) for n in archive_names(mar))


@pytest.mark.slow
def test_archive_is_named_from_arch_and_checkpoint_version(built):
    mar, _ = built
    assert mar.name == "emnist-rcnn-3.1.mar"
    manifest = json.loads(read_member(mar, "MAR-INF/MANIFEST.json"))["model"]
    assert manifest["modelName"] == "emnist-rcnn" and manifest["modelVersion"] == "3.1"
    assert manifest["handler"] == "emnist_handler.py"
    assert "modelFile" not in manifest  # the registry builds the model, nothing is pickled


@pytest.mark.slow
def test_archive_ships_the_repository_code_and_the_label_map(built):
    mar, _ = built
    names = archive_names(mar)
    for module in (
        "emnist/requests.py",
        "emnist/responses.py",
        "emnist/preprocessing.py",
        "emnist/checkpoint.py",
        "emnist/files.py",
        "emnist/models/__init__.py",
        "emnist/models/cnn.py",
        "emnist/models/rcnn.py",
    ):
        assert read_member(mar, module) == (ROOT / module).read_bytes(), module
    assert (
        read_member(mar, "emnist_handler.py") == (ROOT / "handlers/emnist_handler.py").read_bytes()
    )
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith(("tests/", "webapp/")) for n in names)
    labels = json.loads(read_member(mar, "index_to_name.json"))
    assert labels == {str(i): label for i, label in enumerate(LABELS)}
    config = yaml.safe_load(read_member(mar, "model-config.yaml"))
    assert config["batchSize"] == 4 and config["minWorkers"] == config["maxWorkers"] == 2
    assert config["maxBatchDelay"] == 0 and config["handler"]["precision"] == "auto"
    assert {"maxBatchDelay", "responseTimeout"} <= set(config)
    assert config["handler"]["cpu_threads"] == 1


@pytest.mark.slow
def test_archived_checkpoint_is_the_released_form(built):
    mar, _ = built
    ckpt = torch.load(io.BytesIO(read_member(mar, "checkpoint.pt")), weights_only=True)
    assert ckpt["arch"] == "rcnn" and ckpt["class_names"] == list(LABELS)
    assert "resume" not in ckpt  # no optimizer state in a release


@pytest.mark.slow
def test_an_existing_version_is_never_overwritten(built):
    mar, ckpt = built
    before = mar.read_bytes()
    with pytest.raises(SystemExit, match="pick a new --version"):
        archive.main([str(ckpt), "--store", str(mar.parent)])
    assert mar.read_bytes() == before


@pytest.mark.slow
def test_the_check_fails_an_archive_missing_a_module(built, tmp_path):
    mar, ckpt = built
    broken = tmp_path / "broken.mar"
    with zipfile.ZipFile(mar) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if item.filename != "emnist/preprocessing.py":
                dst.writestr(item, src.read(item))
    # The repository's copy is importable in this venv; the check must not fall back on it.
    with pytest.raises(SystemExit, match="does not load or predict"):
        archive.check_archive(broken, torch.load(ckpt, weights_only=True))


def test_a_checkpoint_without_version_needs_one(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.pt")
    with pytest.raises(SystemExit, match="--version"):
        archive.main([str(ckpt), "--store", str(tmp_path)])


def test_a_checkpoint_from_other_preprocessing_is_refused(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.pt", preprocessing_version="0")
    with pytest.raises(SystemExit, match="preprocessing version"):
        archive.main([str(ckpt), "--version", "1.0", "--store", str(tmp_path)])


@pytest.mark.parametrize("bad", ["1.0/../x", "", "-1"])
def test_versions_that_cannot_be_urls_are_refused(tmp_path, bad):
    ckpt = write_checkpoint(tmp_path / "best.pt", version=bad or None)
    with pytest.raises(SystemExit):
        archive.main([str(ckpt), "--store", str(tmp_path), *(["--version", bad] if bad else [])])


def test_default_names():
    assert archive.default_name("cnn") == "emnist-cnn"
    assert archive.default_name("rcnn") == "emnist-rcnn"
    assert archive.default_name("cnn", "emnist47") == "emnist-cnn"
    assert archive.default_name("cnn", "digits") == "emnist-digits"
    assert archive.default_name("rcnn", "digits") == "emnist-digits-rcnn"
