"""The feedback store: people's corrections, in SQLite, losing none that was acknowledged.

One table, `corrections`. A row holds the picture as the page sent it, the 28x28 the model read,
the character the person says it is (`label`, a bymerge class), what the model answered
(`predicted`, `model`, `version`, `probabilities`), the `charset` in use, the page's random
`writer` id and the time. Nothing else about the person: no IP address, no user agent.

Durability: WAL journal with `synchronous=FULL`, so a row is on disk when `add` returns (the web
app answers 201 only then); a writer killed mid-transaction leaves no half row (SQLite rolls it
back). Writers take the write lock up front (`BEGIN IMMEDIATE`), so the limits are checked and
the row inserted atomically. Duplicates (the same writer, picture and label) return the first
row's id instead of a second row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# Where the web app writes corrections and training reads them (EMNIST_FEEDBACK_DB overrides);
# under data/, which git ignores: corrections are user data.
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "feedback" / "feedback.sqlite3"
SCHEMA_VERSION = 1
WRITER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
DEFAULT_MAX_PER_WRITER = 2_000
DEFAULT_MAX_ROWS = 200_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    writer TEXT NOT NULL,
    label TEXT NOT NULL,
    predicted TEXT,
    model TEXT,
    version TEXT,
    charset TEXT NOT NULL,
    probabilities TEXT,
    image_png BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    pixels BLOB NOT NULL,
    preprocessing_version TEXT NOT NULL,
    UNIQUE (writer, image_sha256, label)
);
CREATE INDEX IF NOT EXISTS corrections_writer ON corrections (writer);
"""


class StoreFull(Exception):
    """A limit is reached; `status` is 429 (this writer) or 507 (the whole store)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True)
class Correction:
    writer: str
    label: str
    image_png: bytes
    pixels: bytes  # 784 bytes: the uint8 28x28 model input, EMNIST orientation
    preprocessing_version: str
    charset: str = "any"
    predicted: str | None = None
    model: str | None = None
    version: str | None = None
    probabilities: dict[str, float] | None = None


@dataclass(frozen=True)
class Added:
    id: str
    duplicate: bool


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode with full sync, the schema created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.executescript(_SCHEMA)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return connection


@contextlib.contextmanager
def opened(path: str | Path) -> Iterator[sqlite3.Connection]:
    connection = connect(path)
    try:
        yield connection
    finally:
        connection.close()


def add(
    connection: sqlite3.Connection,
    correction: Correction,
    *,
    max_per_writer: int = DEFAULT_MAX_PER_WRITER,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Added:
    """Store one correction durably; a duplicate returns the stored row's id."""
    if not WRITER_PATTERN.match(correction.writer):
        raise ValueError("writer must be 8-64 letters, digits, - or _ (the page's random id)")
    digest = hashlib.sha256(correction.image_png).hexdigest()
    connection.execute("BEGIN IMMEDIATE")
    try:
        row = connection.execute(
            "SELECT id FROM corrections WHERE writer = ? AND image_sha256 = ? AND label = ?",
            (correction.writer, digest, correction.label),
        ).fetchone()
        if row is not None:
            connection.execute("ROLLBACK")
            return Added(row[0], duplicate=True)
        mine = connection.execute(
            "SELECT COUNT(*) FROM corrections WHERE writer = ?", (correction.writer,)
        ).fetchone()[0]
        if mine >= max_per_writer:
            raise StoreFull(f"this writer has sent {mine} corrections, the most kept", 429)
        total = connection.execute("SELECT COUNT(*) FROM corrections").fetchone()[0]
        if total >= max_rows:
            raise StoreFull(f"the feedback store is full ({total} corrections)", 507)
        identifier = uuid.uuid4().hex
        connection.execute(
            "INSERT INTO corrections (id, created_at, writer, label, predicted, model, version,"
            " charset, probabilities, image_png, image_sha256, pixels, preprocessing_version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                identifier,
                datetime.now(UTC).isoformat(timespec="milliseconds"),
                correction.writer,
                correction.label,
                correction.predicted,
                correction.model,
                correction.version,
                correction.charset,
                None if correction.probabilities is None else json.dumps(correction.probabilities),
                correction.image_png,
                digest,
                correction.pixels,
                correction.preprocessing_version,
            ),
        )
        connection.execute("COMMIT")  # on disk (synchronous=FULL) before anyone is told
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return Added(identifier, duplicate=False)


def rows(connection: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every correction, oldest first."""
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute("SELECT * FROM corrections ORDER BY created_at, id").fetchall()
    finally:
        connection.row_factory = None


def snapshot(connection: sqlite3.Connection, target: Path) -> str:
    """A consistent copy of the database at `target` (SQLite's backup); returns its SHA-256."""
    with contextlib.closing(sqlite3.connect(target)) as copy:
        connection.backup(copy)
    return hashlib.sha256(target.read_bytes()).hexdigest()
