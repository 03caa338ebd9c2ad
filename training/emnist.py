"""Read the official EMNIST distribution (Cohen et al. 2017), all six splits, as NIST ships it.

Files keep NIST's names: `emnist-<split>-<train|test>-<images-idx3|labels-idx1>-ubyte[.gz]` and
`emnist-<split>-mapping.txt`. They are found in a flat folder, in torchvision's `EMNIST/raw/`, in
the `gzip/` folder that NIST's archive extracts to, or inside NIST's `gzip.zip`, read in place.

Images come back exactly as stored: uint8 (N, 28, 28), transposed relative to an upright glyph.
Turning them upright is `emnist.preprocessing`'s job, so that training and serving share one
definition of the orientation.

Labels are the official integers; their meaning comes only from the official mapping file (letters
starts at 1, and its mapping gives two characters per label), never from arithmetic on indices.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
SUBSETS = ("train", "test")
IMAGE_SHAPE = (28, 28)

# IDX dtype codes; multi-byte types are big-endian on disk.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# Where each layout keeps the files, relative to the root a user names.
_SEARCH_DIRS = (".", "EMNIST/raw", "gzip", "EMNIST/raw/gzip")
_ARCHIVES = ("gzip.zip", "EMNIST/raw/gzip.zip")  # torchvision keeps the zip in raw/


@dataclass(frozen=True)
class DataFile:
    """One file of the distribution: a file on disk, or a member of NIST's gzip.zip."""

    path: Path
    member: str | None = None

    def read_bytes(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except zipfile.BadZipFile as err:
            raise ValueError(f"{self.path}: not a readable zip archive ({err})") from err

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}!{self.member}"


Source = str | os.PathLike[str] | DataFile | BinaryIO


def read_idx(source: Source) -> np.ndarray:
    """Read a gzip or plain IDX file (path, DataFile or binary file) into a native-endian array.

    gzip is recognised by its magic bytes rather than the name, so decompressed copies work
    whatever they are called. The header is checked in full and the payload must have exactly the
    announced size: a truncated download fails here, naming the file, instead of shifting data.
    """
    data, name = _read_source(source)
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{name}: corrupt or truncated gzip data ({err})") from err
    return _parse_idx(data, name)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzip-compressed when the name ends in `.gz`."""
    array = np.asarray(array)
    code = next((c for c, dt in IDX_DTYPES.items() if dt == array.dtype.newbyteorder(">")), None)
    if code is None or array.ndim == 0:
        raise ValueError(f"IDX cannot store a {array.ndim}-d {array.dtype} array")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload = header + array.astype(IDX_DTYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path


def read_mapping(source: Source) -> dict[int, str]:
    """Parse an official `emnist-<split>-mapping.txt`: `<label> <ASCII code>...` per line.

    Several codes on a line are joined: letters' `1 65 97` is label 1 -> "Aa".
    """
    data, name = _read_source(source)
    mapping: dict[int, str] = {}
    try:
        text_lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: not an ASCII mapping file ({err})") from err
    for line_no, line in enumerate(text_lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, *codes = (int(field) for field in fields)
            text = "".join(chr(code) for code in codes)
        except (ValueError, OverflowError) as err:
            raise ValueError(f"{name}:{line_no}: malformed mapping line {line!r}") from err
        if not codes or label in mapping:
            raise ValueError(f"{name}:{line_no}: missing code or repeated label in {line!r}")
        mapping[label] = text
    if not mapping:
        raise ValueError(f"{name}: empty mapping file")
    return mapping


def class_names(mapping: dict[int, str]) -> list[str]:
    """Label strings in class-index order: class i is the i-th smallest official label."""
    return [mapping[label] for label in sorted(mapping)]


def class_indices(labels: np.ndarray, mapping: dict[int, str]) -> np.ndarray:
    """Official labels -> contiguous int64 class indices 0..C-1, ordered by official label."""
    official = np.array(sorted(mapping), dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.searchsorted(official, labels).clip(max=len(official) - 1)
    unknown = official[indices] != labels
    if unknown.any():
        raise ValueError(f"labels not in the mapping: {sorted(set(labels[unknown].tolist()))}")
    return indices


@dataclass(frozen=True)
class EmnistArrays:
    """Images as stored (uint8, N x 28 x 28, transposed), official int64 labels, their mapping."""

    images: np.ndarray
    labels: np.ndarray
    mapping: dict[int, str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.mapping)

    def class_indices(self) -> np.ndarray:
        return class_indices(self.labels, self.mapping)


def idx_file_name(split: str, subset: str, kind: str) -> str:
    """NIST's name for an IDX file, without `.gz`; kind is "images" or "labels"."""
    _check_choice("split", split, SPLITS)
    _check_choice("subset", subset, SUBSETS)
    _check_choice("kind", kind, ("images", "labels"))
    return f"emnist-{split}-{subset}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def mapping_file_name(split: str) -> str:
    _check_choice("split", split, SPLITS)
    return f"emnist-{split}-mapping.txt"


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split found under a root; missing ones raise when asked for."""

    split: str
    searched: tuple[str, ...]
    found: dict[str, DataFile]

    def mapping(self) -> DataFile:
        return self._require(mapping_file_name(self.split))

    def images(self, subset: str) -> DataFile:
        return self._require(idx_file_name(self.split, subset, "images"))

    def labels(self, subset: str) -> DataFile:
        return self._require(idx_file_name(self.split, subset, "labels"))

    def _require(self, name: str) -> DataFile:
        if name not in self.found:
            where = ", ".join(self.searched)
            raise FileNotFoundError(f"{name}[.gz] not found; looked in {where}")
        return self.found[name]


def find_split_files(root: str | os.PathLike[str], split: str) -> SplitFiles:
    """Locate a split's files in any supported layout; extracted files win over the zip."""
    root = Path(root)
    names = [mapping_file_name(split)] + [
        idx_file_name(split, subset, kind) for subset in SUBSETS for kind in ("images", "labels")
    ]
    archives = _archive_members(root)
    found: dict[str, DataFile] = {}
    for name in names:
        hit = _find_on_disk(root, name) or _find_in_archives(archives, name)
        if hit is not None:
            found[name] = hit
    searched = tuple(str(root / d) for d in _SEARCH_DIRS + _ARCHIVES)
    return SplitFiles(split=split, searched=searched, found=found)


def load_arrays(images: Source, labels: Source, mapping: dict[int, str]) -> EmnistArrays:
    """Read an images/labels IDX pair (any path, e.g. the shared PARTIAL slices) and check it."""
    image_array, label_array = read_idx(images), read_idx(labels)
    if image_array.dtype != np.uint8 or image_array.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{images}: expected uint8 (N, 28, 28), got {image_array.dtype} {image_array.shape}"
        )
    if label_array.ndim != 1 or len(label_array) != len(image_array):
        raise ValueError(f"{labels}: {label_array.shape} labels for {len(image_array)} images")
    class_indices(label_array, mapping)  # raises on a label the mapping does not know
    return EmnistArrays(image_array, label_array.astype(np.int64), mapping)


def load_split(
    root: str | os.PathLike[str], split: str, subset: str, *, mapping: Source | None = None
) -> EmnistArrays:
    """Load one official split's train or test set from `root` (any supported layout).

    `mapping` overrides the mapping file: torchvision's `EMNIST/raw/` keeps only the IDX files.
    """
    files = find_split_files(root, split)
    mapping_dict = read_mapping(mapping if mapping is not None else files.mapping())
    return load_arrays(files.images(subset), files.labels(subset), mapping_dict)


def _read_source(source: Source) -> tuple[bytes, str]:
    if isinstance(source, DataFile):
        return source.read_bytes(), str(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes(), str(source)
    return source.read(), str(getattr(source, "name", "<binary stream>"))


def _parse_idx(data: bytes, name: str) -> np.ndarray:
    if len(data) < 4:
        raise ValueError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack_from(">HBB", data)
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise ValueError(f"{name}: not an IDX file (magic number 0x{data[:4].hex()})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} of {header_size} bytes)")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise ValueError(
            f"{name}: IDX payload {problem}: shape {shape} needs {expected} bytes, "
            f"file holds {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def _find_on_disk(root: Path, name: str) -> DataFile | None:
    for folder in _SEARCH_DIRS:
        for candidate in (name + ".gz", name):
            path = root / folder / candidate
            if path.is_file():
                return DataFile(path)
    return None


def _archive_members(root: Path) -> list[tuple[Path, set[str]]]:
    listed = []
    for archive in _ARCHIVES:
        path = root / archive
        if path.is_file():
            try:
                with zipfile.ZipFile(path) as zf:
                    listed.append((path, set(zf.namelist())))
            except zipfile.BadZipFile as err:
                raise ValueError(f"{path}: not a readable zip archive ({err})") from err
    return listed


def _find_in_archives(archives: list[tuple[Path, set[str]]], name: str) -> DataFile | None:
    for path, members in archives:
        for member in (f"gzip/{name}.gz", f"gzip/{name}"):
            if member in members:
                return DataFile(path, member)
    return None


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
