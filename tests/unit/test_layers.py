"""The import layers (pyproject.toml [tool.importlinter]): kept by the code, broken by an
upward import planted in a copy of it, and the core is all a new archive ships."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(folder / "pyproject.toml")],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """The packages the contracts name and pyproject.toml, copied (code only)."""
    folder = tmp_path_factory.mktemp("layers")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in config["root_packages"]:
        ignore = shutil.ignore_patterns("__pycache__", "*.png", "*.json", "*.yaml", "*.md")
        shutil.copytree(ROOT / package, folder / package, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", folder)
    return folder


def test_the_code_keeps_every_layer_contract(project_copy):
    result = lint_imports(project_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("emnist/labels.py", "import training.protocol"),  # the core imports training
        ("handlers/emnist_handler.py", "import serving.archive"),  # the worker imports packaging
        ("training/train.py", "import release.recipe"),  # training imports orchestration
        ("webapp/api.py", "import torch"),  # the web app pays for torch
    ],
)
def test_a_planted_upward_import_breaks_the_check(project_copy, tmp_path, module, planted):
    planted_copy = tmp_path / "planted"
    shutil.copytree(project_copy, planted_copy)
    with open(planted_copy / module, "a") as source:
        source.write(f"\n{planted}  # planted by the test\n")
    result = lint_imports(planted_copy)
    assert result.returncode != 0, result.stdout
    assert "1 broken" in result.stdout, result.stdout
