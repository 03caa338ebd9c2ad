"""Download NIST's official EMNIST archive and unpack it into `<root>/EMNIST/raw/`.

    python -m training.download --root data

The archive (`gzip.zip`, ~536 MB) is streamed to a temporary file beside its destination, its MD5
is checked against the value torchvision pins, and its `gzip/` members are extracted into a
temporary folder that is renamed into place only once complete. Any failure removes what was
written, so `raw/` is either absent or complete; a complete `raw/` is detected and left alone.
The IDX files stay gzip-compressed: `training.emnist` reads them as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from training.emnist import SPLITS, SUBSETS, idx_file_name, mapping_file_name

log = logging.getLogger(__name__)

EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
# The MD5 torchvision's `datasets.EMNIST` pins for this archive.
EMNIST_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """The downloaded archive is not the one expected."""


def expected_files() -> list[str]:
    """Every file of the distribution, as `raw/` holds it after extraction."""
    names = [mapping_file_name(split) for split in SPLITS]
    for split in SPLITS:
        for subset in SUBSETS:
            names += [idx_file_name(split, subset, kind) + ".gz" for kind in ("images", "labels")]
    return names


def missing_files(raw: Path) -> list[str]:
    return [name for name in expected_files() if not (raw / name).is_file()]


def download_emnist(
    root: str | os.PathLike[str],
    *,
    url: str = EMNIST_URL,
    md5: str = EMNIST_MD5,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Make `<root>/EMNIST/raw/` hold the complete distribution; return that folder."""
    parent = Path(root) / "EMNIST"
    raw = parent / "raw"
    if raw.is_dir() and not missing_files(raw):
        log.info("%s is complete; nothing to download", raw)
        return raw
    if raw.exists() and any(raw.iterdir()):
        missing = missing_files(raw)
        raise FileExistsError(
            f"{raw} exists but lacks {len(missing)} files (e.g. {missing[0]}); "
            "remove it and run again"
        )
    parent.mkdir(parents=True, exist_ok=True)
    archive = _fetch(url, md5, parent, progress=progress, timeout=timeout)
    try:
        _extract(archive, raw)
    finally:
        archive.unlink(missing_ok=True)
    log.info("extracted %d files into %s", len(expected_files()), raw)
    return raw


def _fetch(url: str, md5: str, folder: Path, *, progress: bool, timeout: float) -> Path:
    """Stream `url` into a temporary file in `folder`, checking its MD5 on the way."""
    handle, name = tempfile.mkstemp(prefix=".gzip.zip.", suffix=".part", dir=folder)
    path = Path(name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="EMNIST gzip.zip", disable=not progress
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5.lower():
            raise ChecksumError(
                f"{url}: MD5 {digest.hexdigest()} does not match the expected {md5}; "
                "the download was discarded"
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _extract(archive: Path, raw: Path) -> None:
    """Unpack the archive's `gzip/` members into a sibling temp folder, then rename it to `raw`."""
    wanted = set(expected_files())
    staging = Path(tempfile.mkdtemp(prefix=".raw.", dir=raw.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                base = member.rsplit("/", 1)[-1]
                # Only the distribution's own files, by base name: no path from the archive is
                # trusted, so a crafted member cannot write outside the staging folder.
                if member.startswith("gzip/") and base in wanted:
                    with zf.open(member) as src, open(staging / base, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
        missing = missing_files(staging)
        if missing:
            raise ValueError(f"{archive.name} lacks {len(missing)} files, e.g. gzip/{missing[0]}")
        os.replace(staging, raw)  # atomic; replaces an empty `raw/` left by someone else
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download the official EMNIST archive into ROOT/EMNIST/raw/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=Path("data"), help="data folder")
    parser.add_argument("--url", default=EMNIST_URL, help="archive URL")
    parser.add_argument("--md5", default=EMNIST_MD5, help="expected MD5 of the archive")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw = download_emnist(args.root, url=args.url, md5=args.md5, progress=not args.no_progress)
    print(f"EMNIST is ready in {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
