"""Shared fixtures: the real EMNIST files (skipped when absent) and tiny synthetic copies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from support.fake_torchserve import FakeTorchServe

from training.emnist import (
    SPLITS,
    SUBSETS,
    EmnistArrays,
    idx_file_name,
    mapping_file_name,
    write_idx,
)
from training.protocol import DataBundle, default_shared_root, load_protocol

# Letters labels start at 1 and carry two characters, as in the official mapping file.
SYNTHETIC_MAPPINGS = {
    split: ({1: "Aa", 2: "Bb", 3: "Cc"} if split == "letters" else {0: "0", 1: "1", 2: "A"})
    for split in SPLITS
}
SYNTHETIC_SIZES = {"train": 5, "test": 3}


@pytest.fixture(scope="session")
def shared_emnist() -> Path:
    """The real EMNIST files: `$EMNIST_SHARED_ROOT`, else `<repo>/../shared/emnist`."""
    root = default_shared_root()
    if not (root / "test").is_dir():
        pytest.skip(f"real EMNIST files not found at {root}: set EMNIST_SHARED_ROOT")
    return root


@pytest.fixture(scope="session")
def emnist47_bundle(shared_emnist: Path) -> DataBundle:
    """The emnist47 protocol (about 2 s to build), shared by every test that needs it."""
    return load_protocol("emnist47", shared_emnist)


SyntheticArrays = dict[tuple[str, str], EmnistArrays]


def write_synthetic_emnist(folder: Path, *, compress: bool = True) -> SyntheticArrays:
    """Write a tiny complete distribution (all splits, NIST's file names) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays: SyntheticArrays = {}
    for split, mapping in SYNTHETIC_MAPPINGS.items():
        lines = [" ".join(map(str, [label, *map(ord, text)])) for label, text in mapping.items()]
        (folder / mapping_file_name(split)).write_text("\n".join(lines) + "\n")
        for subset in SUBSETS:
            n = SYNTHETIC_SIZES[subset]
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = rng.choice(sorted(mapping), size=n).astype(np.uint8)
            suffix = ".gz" if compress else ""
            write_idx(folder / (idx_file_name(split, subset, "images") + suffix), images)
            write_idx(folder / (idx_file_name(split, subset, "labels") + suffix), labels)
            arrays[split, subset] = EmnistArrays(images, labels.astype(np.int64), mapping)
    return arrays


@pytest.fixture
def synthetic_emnist() -> Callable[..., SyntheticArrays]:
    """`synthetic_emnist(folder, compress=True)` writes a tiny distribution, returns its arrays."""
    return write_synthetic_emnist


@pytest.fixture(scope="module")
def fake_torchserve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTorchServe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
