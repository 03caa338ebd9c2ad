"""The downloader against a real HTTP server on 127.0.0.1 serving an archive the test builds."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import SyntheticArrays

from training.download import ChecksumError, download_emnist, expected_files, main
from training.emnist import load_split


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files and records the paths asked for, without logging to stderr."""

    def do_GET(self) -> None:
        self.server.requested.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Server:
    base_url: str
    requested: list[str]
    served: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requested = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_port}", httpd.requested, served)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _build_archive(folder: Path, archive: Path, make, *, drop: str | None = None):
    """A small stand-in for NIST's gzip.zip: `gzip/<file>` members; returns (arrays, md5)."""
    arrays = make(folder)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            if path.name != drop:
                zf.write(path, f"gzip/{path.name}")
    return arrays, hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture
def archive(server: Server, tmp_path: Path, synthetic_emnist) -> tuple[SyntheticArrays, str]:
    return _build_archive(tmp_path / "files", server.served / "gzip.zip", synthetic_emnist)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_downloads_verifies_and_extracts(server: Server, archive, tmp_path: Path, capsys):
    arrays, md5 = archive
    root = tmp_path / "data"
    argv = ["--root", str(root), "--url", f"{server.base_url}/gzip.zip", "--md5", md5]
    assert main([*argv, "--no-progress"]) == 0
    assert "EMNIST is ready" in capsys.readouterr().out

    # Only the distribution's files, and no temporary file left beside them.
    assert _all_files(root) == sorted(f"EMNIST/raw/{name}" for name in expected_files())
    loaded = load_split(root, "letters", "train")
    np.testing.assert_array_equal(loaded.images, arrays["letters", "train"].images)
    np.testing.assert_array_equal(loaded.labels, arrays["letters", "train"].labels)
    assert loaded.class_names == ["Aa", "Bb", "Cc"]


def test_checksum_mismatch_keeps_nothing(server: Server, archive, tmp_path: Path):
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"does not match the expected 0{32}"):
        download_emnist(root, url=f"{server.base_url}/gzip.zip", md5="0" * 32, progress=False)
    assert server.requested == ["/gzip.zip"]
    assert _all_files(root) == []
    assert not (root / "EMNIST" / "raw").exists()


def test_complete_download_is_skipped(server: Server, archive, tmp_path: Path):
    _, md5 = archive
    root = tmp_path / "data"
    raw = download_emnist(root, url=f"{server.base_url}/gzip.zip", md5=md5, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in raw.iterdir()}

    # A second call must not even ask: the URL now points nowhere.
    again = download_emnist(root, url=f"{server.base_url}/missing.zip", md5=md5, progress=False)
    assert again == raw
    assert server.requested == ["/gzip.zip"]
    assert {p: p.stat().st_mtime_ns for p in raw.iterdir()} == stamps


def test_archive_missing_a_file_is_rejected_and_cleaned_up(
    server: Server, tmp_path: Path, synthetic_emnist
):
    dropped = "emnist-mnist-test-labels-idx1-ubyte.gz"
    _, md5 = _build_archive(
        tmp_path / "files", server.served / "gzip.zip", synthetic_emnist, drop=dropped
    )
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=f"gzip/{dropped}"):
        download_emnist(root, url=f"{server.base_url}/gzip.zip", md5=md5, progress=False)
    assert _all_files(root) == []
    assert list((root / "EMNIST").iterdir()) == []


def test_incomplete_existing_folder_is_left_alone(server: Server, archive, tmp_path: Path):
    _, md5 = archive
    raw = tmp_path / "data" / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "emnist-digits-mapping.txt").write_text("0 48\n")
    with pytest.raises(FileExistsError, match="remove it and run again"):
        download_emnist(tmp_path / "data", url=f"{server.base_url}/gzip.zip", md5=md5)
    assert server.requested == []
    assert _all_files(tmp_path / "data") == ["EMNIST/raw/emnist-digits-mapping.txt"]
