"""Welch's t test and the exact permutation test of the seed study, against textbook values."""

import math
import statistics

import pytest

from benchmarks import seeds, significance


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (1.0, 1, 0.5),  # Cauchy: P(|T| > 1) = 1/2 exactly
        (12.706, 1, 0.05),  # the t table's two-sided 5% points
        (4.303, 2, 0.05),
        (2.776, 4, 0.05),
        (2.571, 5, 0.05),
        (3.707, 6, 0.01),
        (1.95996, 1e7, 0.05),  # the normal limit
        (0.0, 3, 1.0),
    ],
)
def test_t_two_sided_p_matches_the_tables(t, df, p):
    assert significance.t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert significance.t_two_sided_p(-t, df) == significance.t_two_sided_p(t, df)


def test_t_two_sided_p_closed_form_for_two_degrees_of_freedom():
    # With df = 2 the tail has a closed form: p = 1 - t / sqrt(2 + t^2).
    for t in (0.3, 1.7, 5.0):
        assert significance.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t))


def test_welch_degrees_of_freedom_and_standard_error():
    a, b = [90.8, 90.9, 90.7], [90.5, 90.3, 90.6, 90.4]
    w = significance.welch(a, b)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 4
    assert w["se"] == pytest.approx(math.sqrt(va + vb))
    assert w["df"] == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 3))
    assert w["t"] == pytest.approx((statistics.fmean(a) - statistics.fmean(b)) / w["se"])
    assert 0 < w["p"] < 0.05
    assert significance.welch(a, a)["p"] == pytest.approx(1.0)
    assert significance.welch([1.0, 1.0], [2.0, 2.0])["p"] == 0.0


def test_permutation_p_counts_every_split():
    separated = significance.permutation_p([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert separated == {"p": 0.1, "splits": 20, "smallest_possible_p": 0.1}
    assert significance.permutation_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["p"] == 1.0
    # 3 against 2: 10 splits, one of them as extreme as the observed one.
    assert significance.permutation_p([7.0, 8.0, 9.0], [1.0, 2.0])["p"] == pytest.approx(0.1)
    # Interleaved groups: most splits are at least as far apart.
    assert significance.permutation_p([1.0, 4.0, 5.0], [2.0, 3.0, 6.0])["p"] > 0.5


def row(model, seed, top1):
    return {"model": model, "seed": seed, "val_top1": top1, "test_top1": top1,
            "test_top3": 0.99, "drawing_val_top1": 0.6}  # fmt: skip


def test_the_seed_report_states_the_difference_and_its_significance():
    cnn, rcnn = [0.9084, 0.9078, 0.9090], [0.9055, 0.9031, 0.9046]
    rows = [row("emnist-cnn", s, v) for s, v in enumerate(cnn)]
    rows += [row("emnist-rcnn", s, v) for s, v in enumerate(rcnn)]
    summary = seeds.summarise(rows)
    assert summary["cnn_minus_rcnn_test_top1"] == pytest.approx(
        statistics.fmean(cnn) - statistics.fmean(rcnn)
    )
    assert summary["welch"] == significance.welch(cnn, rcnn)
    assert summary["permutation"]["p"] == 0.1  # every CNN run above every RCNN run
    for r in rows:
        r.update(selected_epoch=1, train_seconds=60.0, test_images=10)
    text = seeds.markdown(rows, summary, "2.0", [], [])
    assert f"p = {summary['welch']['p']:.3f}" in text and "all 20 splits" in text

    one_rcnn = seeds.summarise(rows[:4])  # one RCNN seed: a difference, no test
    assert "welch" not in one_rcnn and "cnn_minus_rcnn_test_top1" in one_rcnn
