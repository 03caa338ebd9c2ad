"""What the person is writing (charset) and when an answer is weak (confidence)."""

from __future__ import annotations

import pytest

from emnist import responses
from emnist.charsets import CharsetError, allows, assess, parse_charset, restrict

EMNIST47 = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")


@pytest.mark.parametrize(
    ("charset", "expected"),
    [
        ("any", EMNIST47),
        ("digits", list("0123456789")),
        ("letters", EMNIST47[10:]),
        ("upper", list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
        # Lower case: the 11 classes of their own and the 15 merged ones (one class, both cases).
        ("lower", list("CIJKLMOPSUVWXYZabdefghnqrt")),
    ],
)
def test_each_charset_allows_its_classes_merged_letters_in_both_cases(charset, expected):
    assert [label for label in EMNIST47 if allows(label, charset)] == sorted(
        expected, key=EMNIST47.index
    )


def test_restricting_renormalises_over_the_allowed_classes():
    labels = ["0", "O", "D", "1"]
    restricted = restrict([0.6, 0.3, 0.05, 0.05], labels, "letters")
    assert restricted == pytest.approx([0.0, 0.3 / 0.35, 0.05 / 0.35, 0.0])
    assert sum(restricted) == pytest.approx(1.0)


def test_a_charset_the_model_has_no_class_for_is_an_error():
    with pytest.raises(CharsetError, match="no class"):
        restrict([0.5, 0.5], ["0", "1"], "letters")


@pytest.mark.parametrize("value", ["Letters", " digits ", None, ""])
def test_charset_values_are_read_leniently(value):
    assert parse_charset(value) in ("letters", "digits", "any")


@pytest.mark.parametrize("value", ["greek", "numbers", "1", "any,digits"])
def test_an_unknown_charset_is_refused_with_the_choices(value):
    with pytest.raises(CharsetError, match="any, digits, letters, upper, lower"):
        parse_charset(value)


def ranked(*pairs):
    return [{"label": label, "probability": p} for label, p in pairs]


@pytest.mark.parametrize(
    ("predictions", "reason", "alternatives"),
    [
        (ranked(("7", 0.9), ("1", 0.05)), None, []),
        (ranked(("0", 0.55), ("O", 0.4)), "lookalike", ["O"]),
        (ranked(("1", 0.7), ("I", 0.2)), "lookalike", ["I"]),
        (ranked(("g", 0.6), ("9", 0.3)), "lookalike", ["9"]),
        (ranked(("A", 0.35), ("H", 0.3), ("R", 0.1)), "low", ["H", "R"]),
        (ranked(("0", 0.95), ("O", 0.04)), None, []),  # a look-alike runner-up too weak to matter
    ],
)
def test_weak_answers_are_low_or_lookalike(predictions, reason, alternatives):
    confidence = assess(predictions)
    assert confidence["sure"] is (reason is None)
    assert confidence["reason"] == reason and confidence["alternatives"] == alternatives


def test_an_answer_carries_its_charset_confidence_and_small_hint():
    probabilities = [0.0] * 47
    probabilities[0], probabilities[EMNIST47.index("O")] = 0.6, 0.4
    common = {"model": "m", "version": "1", "topk": 3, "batch_size": 1}
    anything = responses.prediction(probabilities, EMNIST47, **common, extent=0.9)
    assert anything["charset"] == "any" and anything["predictions"][0]["label"] == "0"
    assert anything["confidence"]["reason"] == "lookalike" and anything["hint"] is None
    letters = responses.prediction(probabilities, EMNIST47, **common, charset="letters", extent=0.1)
    assert letters["predictions"][0] == {"label": "O", "probability": 1.0}
    assert letters["confidence"]["sure"] and letters["hint"] == "small"
    assert all(p["label"].isalpha() for p in letters["predictions"])
