"""What the person says they are writing, and how sure an answer is.

No model can tell a drawn O from a 0, or an I from a 1, by its pixels: bymerge keeps those
classes apart and people write them alike. The person can: `charset` restricts an answer to the
classes that fit (`digits`, `letters`, `upper`, `lower`; `any` is everything), and the
probabilities are renormalised over them. bymerge's merged letters (C, I, J, K, L, M, O, P, S,
U, V, W, X, Y, Z: one class for both cases, named by the capital) count as both cases.

`assess` is the rule that says when an answer is weak: a low top-1, or a top two that form a
look-alike pair. It is part of every answer (`confidence`), so clients need no rule of their own.
Torch-free: the web app and the handler both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from emnist.labels import MERGED_CASE

CHARSETS = ("any", "digits", "letters", "upper", "lower")
DEFAULT_CHARSET = "any"
# Below this top-1 probability an answer is weak whatever comes second.
MIN_TOP1 = 0.5
# A runner-up of a look-alike pair at or above this probability makes the answer weak.
LOOKALIKE_RUNNER_UP = 0.1
# Pairs no model can tell apart without context (bymerge class names: l is L's class).
LOOKALIKE_PAIRS = frozenset(
    frozenset(p)
    for p in (
        ("0", "O"),
        ("1", "I"),
        ("1", "L"),
        ("I", "L"),
        ("9", "g"),
        ("9", "q"),
        ("g", "q"),
        ("5", "S"),
        ("2", "Z"),
    )
)


class CharsetError(ValueError):
    """An unknown charset, or one that leaves the model no class at all."""


def parse_charset(value: object) -> str:
    """A charset from a request parameter (None -> the default); CharsetError if unknown."""
    if value is None or value == "":
        return DEFAULT_CHARSET
    text = str(value).strip().lower()
    if text not in CHARSETS:
        raise CharsetError(f"unknown charset {value!r}: one of {', '.join(CHARSETS)}")
    return text


def allows(label: str, charset: str) -> bool:
    """Whether class `label` fits `charset` (a merged letter is both upper and lower case)."""
    if charset == "any":
        return True
    if charset == "digits":
        return label.isdigit()
    if not label.isalpha():
        return False
    if charset == "letters":
        return True
    merged = label in MERGED_CASE
    if charset == "upper":
        return label.isupper()
    return label.islower() or merged  # lower


def restrict(probabilities: Sequence[float], labels: Sequence[str], charset: str) -> list[float]:
    """The probabilities renormalised over the classes `charset` allows (others are 0)."""
    kept = [
        p if allows(label, charset) else 0.0 for p, label in zip(probabilities, labels, strict=True)
    ]
    if not any(allows(label, charset) for label in labels):
        raise CharsetError(f"this model has no class for charset {charset!r}")
    total = sum(kept)
    if total <= 0:  # every allowed class underflowed: spread evenly rather than divide by 0
        allowed = [allows(label, charset) for label in labels]
        return [1.0 / sum(allowed) if a else 0.0 for a in allowed]
    return [p / total for p in kept]


def assess(predictions: Sequence[dict]) -> dict:
    """`confidence` of an answer from its ranked predictions ({"label", "probability"}):
    {"sure": bool, "reason": None | "low" | "lookalike", "alternatives": [labels]}.

    Weak means a top-1 below MIN_TOP1, or a runner-up that is the top-1's look-alike with at
    least LOOKALIKE_RUNNER_UP. The alternatives are the labels worth offering instead."""
    if not predictions:
        return {"sure": False, "reason": None, "alternatives": []}
    top = predictions[0]
    runner_up = predictions[1] if len(predictions) > 1 else None
    if (
        runner_up is not None
        and runner_up["probability"] >= LOOKALIKE_RUNNER_UP
        and frozenset((top["label"], runner_up["label"])) in LOOKALIKE_PAIRS
    ):
        return {"sure": False, "reason": "lookalike", "alternatives": [runner_up["label"]]}
    if top["probability"] < MIN_TOP1:
        alternatives = [p["label"] for p in predictions[1:3]]
        return {"sure": False, "reason": "low", "alternatives": alternatives}
    return {"sure": True, "reason": None, "alternatives": []}
