"""Named data sources for training and evaluation: the shared protocols and official splits.

`emnist47` and `digits` follow the evaluation protocol of `../shared/emnist/README.md`; official
splits (`balanced`, `byclass`, ...) use a complete NIST distribution wherever one is available.
Every source comes back as a `DataBundle` whose `provenance` says exactly what went into it.

EMNIST's splits were drawn independently from the same source, so identical images appear across
splits: every image whose pixels equal an evaluation image is removed from the training data, and
exact duplicates within a training pool are kept once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.emnist import (
    SPLITS,
    SUBSETS,
    EmnistArrays,
    class_indices,
    class_names,
    find_split_files,
    load_arrays,
    read_mapping,
)

log = logging.getLogger(__name__)

PROTOCOLS = ("emnist47", "digits")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_ROOT_ENV = "EMNIST_SHARED_ROOT"


@dataclass
class DataBundle:
    """Train/val/test arrays (uint8 images as stored, int64 class indices) and their origin."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    name: str
    provenance: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class _Part:
    """A labelled chunk of a training pool; labels are official labels of the target mapping."""

    source: str
    images: np.ndarray
    labels: np.ndarray


def default_shared_root() -> Path:
    """`$EMNIST_SHARED_ROOT`, else `<project>/../shared/emnist`."""
    env = os.environ.get(SHARED_ROOT_ENV)
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "emnist"


def pixel_digests(images: np.ndarray) -> list[bytes]:
    """A 128-bit BLAKE2b digest of each image's pixels: equal digests mean equal images.

    A collision between different images has probability ~2^-128, and hashing runs at several
    hundred thousand images per second.
    """
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    size = flat.shape[1]
    buffer = memoryview(flat).cast("B")
    return [
        hashlib.blake2b(buffer[i * size : (i + 1) * size], digest_size=16).digest()
        for i in range(len(flat))
    ]


def relabel_by_character(
    labels: np.ndarray, source: dict[int, str], target: dict[int, str]
) -> np.ndarray:
    """Official labels of one mapping -> official labels of another, through the character.

    A lowercase letter that the target merges into its uppercase class (bymerge's c, o, s, ...)
    goes to the uppercase label. Raises for a character the target cannot represent.
    """
    by_char = {text: label for label, text in target.items()}
    table: dict[int, int] = {}
    for label, text in source.items():
        hit = by_char.get(text, by_char.get(text.upper()))
        if hit is not None:
            table[label] = hit
    labels = np.asarray(labels, dtype=np.int64)
    missing = sorted(
        {source.get(lab, str(lab)) for lab in np.unique(labels).tolist() if lab not in table}
    )
    if missing:
        raise ValueError(f"characters with no class in the target mapping: {missing}")
    lookup = np.zeros(max(source) + 1, dtype=np.int64)
    lookup[list(table)] = list(table.values())
    return lookup[labels]


def split_validation(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index arrays, each sorted; val holds round(n * val_fraction) items."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_protocol(
    name: str,
    shared_root: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> DataBundle:
    """Build the `emnist47` or `digits` protocol from the shared files (see module docstring)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    root = Path(shared_root) if shared_root is not None else default_shared_root()
    if not root.is_dir():
        raise FileNotFoundError(f"shared EMNIST folder {root} not found: set {SHARED_ROOT_ENV}")
    shared = _SharedFiles(root)
    if name == "emnist47":
        test, parts = _emnist47_sources(shared)
    else:
        test, parts = _digits_sources(shared)
    return _assemble(name, test, parts, val_fraction, seed, shared.provenance())


def load_official(
    split: str, root: str | os.PathLike[str], val_fraction: float = 0.05, seed: int = 0
) -> DataBundle:
    """An official split: val carved from its train set, test is its complete test set."""
    files = find_split_files(root, split)
    mapping = read_mapping(files.mapping())
    test = load_arrays(files.images("test"), files.labels("test"), mapping)
    train = load_arrays(files.images("train"), files.labels("train"), mapping)
    used = [files.mapping()] + [get(s) for s in SUBSETS for get in (files.images, files.labels)]
    provenance = {"root": str(Path(root)), "files": [{"file": str(f)} for f in used]}
    part = _Part(f"{split}_train", train.images, train.labels)
    return _assemble(split, test, [part], val_fraction, seed, provenance, deduplicate=False)


def load_data(
    *,
    protocol: str | None = None,
    split: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
) -> DataBundle:
    """What the CLIs call: exactly one of `protocol` (shared files) or `split` (official files).

    `data_root` is the shared folder for a protocol and the distribution root for a split
    (default `<project>/data`, where `python -m training.download` puts it).
    """
    if (protocol is None) == (split is None):
        raise ValueError("give exactly one of protocol or split")
    if protocol is not None:
        return load_protocol(protocol, data_root, val_fraction, seed)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = data_root if data_root is not None else PROJECT_ROOT / "data"
    return load_official(split, root, val_fraction, seed)


class _SharedFiles:
    """Reads the shared folder's layout and remembers every file it touched, for provenance."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: list[Path] = []

    def mapping(self, split: str) -> dict[int, str]:
        return read_mapping(self._use(self.root / "mappings" / f"emnist-{split}-mapping.txt"))

    def test_set(self, split: str, mapping: dict[int, str]) -> EmnistArrays:
        return self._pair(self.root / "test" / f"emnist-{split}-test", mapping)

    def train_slices(self, split: str, mapping: dict[int, str]) -> EmnistArrays:
        """Every `partial/emnist-<split>-train-PARTIAL-idxA-B-*` slice, in file order."""
        pattern = f"emnist-{split}-train-PARTIAL-idx*-images-idx3-ubyte.gz"
        stems = sorted(
            p.name.removesuffix("-images-idx3-ubyte.gz")
            for p in (self.root / "partial").glob(pattern)
        )
        if not stems:
            raise FileNotFoundError(f"no {pattern} in {self.root / 'partial'}")
        slices = [self._pair(self.root / "partial" / stem, mapping) for stem in stems]
        images = np.concatenate([s.images for s in slices])
        return EmnistArrays(images, np.concatenate([s.labels for s in slices]), mapping)

    def provenance(self) -> dict:
        files = [
            {
                "file": str(p.relative_to(self.root)),
                "bytes": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for p in dict.fromkeys(self.used)
        ]
        return {"root": str(self.root), "files": files}

    def _pair(self, stem: Path, mapping: dict[int, str]) -> EmnistArrays:
        images = self._use(Path(f"{stem}-images-idx3-ubyte.gz"))
        return load_arrays(images, self._use(Path(f"{stem}-labels-idx1-ubyte.gz")), mapping)

    def _use(self, path: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (shared EMNIST folder {self.root})")
        self.used.append(path)
        return path


def _emnist47_sources(shared: _SharedFiles) -> tuple[EmnistArrays, list[_Part]]:
    """bymerge test; pool = byclass test relabelled by character + the balanced train slice."""
    bymerge = shared.mapping("bymerge")
    byclass_test = shared.test_set("byclass", shared.mapping("byclass"))
    balanced = shared.train_slices("balanced", shared.mapping("balanced"))
    parts = [
        _Part(
            "byclass_test",
            byclass_test.images,
            relabel_by_character(byclass_test.labels, byclass_test.mapping, bymerge),
        ),
        _Part(
            "balanced_train_slice",
            balanced.images,
            relabel_by_character(balanced.labels, balanced.mapping, bymerge),
        ),
    ]
    return shared.test_set("bymerge", bymerge), parts


def _digits_sources(shared: _SharedFiles) -> tuple[EmnistArrays, list[_Part]]:
    """mnist test; training = the emnist47 pool's digits + digits and mnist train slices."""
    mnist = shared.mapping("mnist")
    test47, parts47 = _emnist47_sources(shared)
    pool47 = _clean_pool(parts47, test47.images)[0]
    bymerge = test47.mapping
    digit_labels = [lab for lab, text in bymerge.items() if text.isdigit()]
    is_digit = np.isin(pool47.labels, digit_labels)
    digit_slice = shared.train_slices("digits", shared.mapping("digits"))
    mnist_slice = shared.train_slices("mnist", mnist)
    parts = [
        _Part(
            "emnist47_pool_digits",
            pool47.images[is_digit],
            relabel_by_character(pool47.labels[is_digit], bymerge, mnist),
        ),
        _Part(
            "digits_train_slice",
            digit_slice.images,
            relabel_by_character(digit_slice.labels, digit_slice.mapping, mnist),
        ),
        _Part("mnist_train_slice", mnist_slice.images, mnist_slice.labels),
    ]
    return shared.test_set("mnist", mnist), parts


def _clean_pool(
    parts: list[_Part], test_images: np.ndarray, *, deduplicate: bool = True
) -> tuple[_Part, dict[str, dict[str, int]]]:
    """Concatenate `parts`, dropping images equal to a test image and (optionally) repeats."""
    test_digests = set(pixel_digests(test_images))
    seen: set[bytes] = set()
    keep: list[np.ndarray] = []
    counts: dict[str, dict[str, int]] = {}
    for part in parts:
        mask = np.zeros(len(part.images), dtype=bool)
        in_test = repeats = 0
        for i, digest in enumerate(pixel_digests(part.images)):
            if digest in test_digests:
                in_test += 1
            elif deduplicate and digest in seen:
                repeats += 1
            else:
                mask[i] = True
                seen.add(digest)
        keep.append(mask)
        counts[part.source] = {
            "read": len(mask),
            "equal_to_test": in_test,
            "duplicates": repeats,
            "kept": int(mask.sum()),
        }
        log.info("%s: %s", part.source, counts[part.source])
    images = np.concatenate([p.images[m] for p, m in zip(parts, keep, strict=True)])
    labels = np.concatenate([p.labels[m] for p, m in zip(parts, keep, strict=True)])
    return _Part("pool", images, labels), counts


def _assemble(
    name: str,
    test: EmnistArrays,
    parts: list[_Part],
    val_fraction: float,
    seed: int,
    provenance: dict,
    *,
    deduplicate: bool = True,
) -> DataBundle:
    pool, counts = _clean_pool(parts, test.images, deduplicate=deduplicate)
    train_idx, val_idx = split_validation(len(pool.images), val_fraction, seed)
    pool_classes = class_indices(pool.labels, test.mapping)
    provenance = {
        **provenance,
        "name": name,
        "sources": counts,
        "counts": {
            "pool": len(pool.images),
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(test),
        },
        "val": {"fraction": val_fraction, "seed": seed},
        "rules": "removed every training image whose pixels equal a test image"
        + ("; kept one copy of images repeated within the pool" if deduplicate else ""),
    }
    log.info("%s: %s", name, provenance["counts"])
    return DataBundle(
        train_images=pool.images[train_idx],
        train_labels=pool_classes[train_idx],
        val_images=pool.images[val_idx],
        val_labels=pool_classes[val_idx],
        test_images=test.images,
        test_labels=test.class_indices(),
        class_names=class_names(test.mapping),
        name=name,
        provenance=provenance,
    )
