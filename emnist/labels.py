"""Label maps: the archive's `index_to_name.json` and the characters of the bymerge classes.

An archive's labels come from one file written at training time from the checkpoint's class
names, never from arithmetic on indices. The character tables below say which characters a
47-class (bymerge) model can be asked about and which class each one belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

LABELS_FILE = "index_to_name.json"
# bymerge: these letters have one class for both cases, named by the capital.
MERGED_CASE = "CIJKLMOPSUVWXYZ"
# The 62 characters of the 47 classes: digits, capitals, the 11 lower-case letters with a class
# of their own, then the lower-case forms of the merged letters.
CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt" + MERGED_CASE.lower()
# Look-alikes no reader can tell apart without context: a drawing of the key also counts as read
# when the answer is one of these (the "look-alikes merged" figure).
LOOKALIKES = {
    "0": "O",
    "O": "0",
    "o": "0",
    "1": "IL",
    "I": "1L",
    "i": "1",
    "l": "1I",
    "2": "Z",
    "Z": "2",
    "z": "2",
    "5": "S",
    "S": "5",
    "s": "5",
    "9": "gq",
    "g": "9q",
    "q": "9g",
}


def label_of(char: str) -> str:
    """The bymerge class of a drawn character: lower-case c, i, j... are their capital's class."""
    return char.upper() if char.upper() in MERGED_CASE else char


def labels_json(class_names: Sequence[str]) -> dict[int, str]:
    """What `index_to_name.json` holds: {index: label}, written from a checkpoint's class names."""
    return dict(enumerate(class_names))


def load_labels(path: str | Path) -> list[str]:
    """`index_to_name.json` ({"0": "0", ..., "46": "t"}) -> labels by class index.

    The file is the only source of labels; it must cover 0..N-1 exactly.
    """
    return parse_labels(json.loads(Path(path).read_text(encoding="utf-8")), str(path))


def parse_labels(raw: object, source: str = LABELS_FILE) -> list[str]:
    """The decoded JSON of an `index_to_name.json` -> labels by class index, checked."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{source}: expected a non-empty JSON object of index -> label")
    try:
        by_index = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: keys must be class indices: {err}") from err
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{source}: indices must be 0..{len(by_index) - 1} without gaps")
    return [by_index[i] for i in range(len(by_index))]
