"""Uplift metrics: hand-computed values on a tiny example, and causalml's values on the same inputs."""

import numpy as np
import pandas as pd
import pytest

from offerlab.uplift.metrics import auuc, per_treatment_metrics, qini_area, qini_coefficient, uplift_at_k

# rows: (treated, outcome) = (1, 1), (0, 0), (1, 0), (0, 1)
T = np.array([1, 0, 1, 0])
Y = np.array([1, 0, 0, 1])


def test_qini_coefficient_hand_computed():
    # best ranking (treated responder first, control responder last): curve (0,0),(1,1),(2,1),(3,1),(4,0);
    # it is also the perfect ranking, so the coefficient is 1
    assert qini_coefficient(np.array([4, 3, 2, 1]), Y, T) == pytest.approx(1.0)
    # reversed: Q = 0, 0, -1, -0.5, 0 -> trapezoid area -1.5; perfect area 3 (chord area 0) -> -0.5
    assert qini_coefficient(np.array([1, 2, 3, 4]), Y, T) == pytest.approx(-0.5)


def test_qini_area_auuc_uplift_at_k_hand_computed():
    rev = np.array([1, 2, 3, 4])
    # Q(k) = [0, 0, -1, -0.5, 0]: mean -0.3 (Q(n) = 0, so only the unnormalised area is defined)
    assert qini_area(rev, Y, T, normalize=False) == pytest.approx(-0.3)
    # lift(k) = [0, (undefined -> -0.5), -1, -0.5, 0], gain = k lift = [0, -0.5, -2, -1.5, 0]: mean -0.8
    assert auuc(rev, Y, T, normalize=False) == pytest.approx(-0.8)
    # top half = control responder, treated non-responder: 0 - 1
    assert uplift_at_k(rev, Y, T, 0.5) == pytest.approx(-1.0)


def test_qini_ties_do_not_depend_on_row_order():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 4, 300).astype(float)
    t = rng.integers(0, 2, 300)
    y = (rng.random(300) < 0.2 + 0.2 * t * (score > 1)).astype(float)
    perm = rng.permutation(300)
    assert qini_coefficient(score, y, t) == pytest.approx(qini_coefficient(score[perm], y[perm], t[perm]))


def test_qini_coefficient_random_near_zero_and_oracle_positive():
    rng = np.random.default_rng(2)
    n = 20000
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.1 + 0.1 * t * (x > 0)).astype(float)
    assert abs(qini_coefficient(rng.normal(size=n), y, t)) < 0.05
    assert qini_coefficient(x, y, t) > 0.1


@pytest.mark.parametrize("n", [50, 2000])
def test_matches_causalml_on_the_same_inputs(n):
    from causalml.metrics import auuc_score, qini_score

    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    w = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.2 + 0.15 * w * (x > 0)).astype(int)
    score = x + 0.7 * rng.normal(size=n)
    df = pd.DataFrame({"y": y, "w": w, "model": score})
    for normalize in (True, False):
        assert qini_area(score, y, w, normalize) == pytest.approx(qini_score(df, normalize=normalize)["model"], rel=1e-9)
        assert auuc(score, y, w, normalize) == pytest.approx(auuc_score(df, normalize=normalize)["model"], rel=1e-9)


def test_per_treatment_metrics_use_each_level_and_control_only():
    from causalml.metrics import qini_score

    rng = np.random.default_rng(3)
    n = 3000
    treatment = rng.choice(["ctl", "a", "b"], n)
    y = (rng.random(n) < 0.2 + 0.1 * (treatment == "a")).astype(float)
    up = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    m = per_treatment_metrics(up, treatment, y, "ctl")
    rows = treatment != "b"
    ref = qini_score(pd.DataFrame({"y": y[rows], "w": (treatment[rows] == "a").astype(int), "s": up["a"][rows]}))
    assert m["qini_area"]["a"] == pytest.approx(ref["s"], rel=1e-9)
    assert set(m) == {"qini", "qini_area", "auuc", "uplift_at_30"}


def test_uplift_at_k_refuses_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        uplift_at_k(np.arange(4), Y, T, 1.5)
