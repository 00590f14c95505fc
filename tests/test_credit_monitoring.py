import numpy as np
import pandas as pd
import pytest

from offerlab.credit.monitoring import psi_categorical, psi_from_shares, psi_numeric, psi_report, psi_status


def test_psi_from_shares_by_hand():
    # (0.3-0.5) ln(0.3/0.5) + (0.7-0.5) ln(0.7/0.5) = 0.2 ln(5/3) + 0.2 ln(1.4)
    expected = 0.2 * np.log(5 / 3) + 0.2 * np.log(1.4)
    assert expected == pytest.approx(0.16946, abs=1e-5)
    assert psi_from_shares([0.5, 0.5], [0.3, 0.7]) == pytest.approx(expected)
    assert psi_status(expected) == "moderate"
    assert psi_status(0.05) == "stable" and psi_status(0.3) == "significant"


def test_psi_numeric_bins_at_training_quantiles():
    train = np.arange(1, 11, dtype=float)  # deciles put one value in each bin
    new = np.array([1.0] * 5 + [10.0] * 5)  # half in the first bin, half in the last
    # train shares 0.1 each; new: 0.5, 0, ..., 0, 0.5 (empty shares floored at 1e-4)
    e = np.full(10, 0.1)
    a = np.array([0.5] + [1e-4] * 8 + [0.5])
    hand = float(np.sum((a - e) * np.log(a / e)))
    assert psi_numeric(train, new) == pytest.approx(hand, rel=1e-9)
    assert psi_numeric(train, train) == pytest.approx(0.0)


def test_psi_categorical_and_report():
    a = pd.Series(["x"] * 50 + ["y"] * 50)
    b = pd.Series(["x"] * 30 + ["y"] * 70)
    assert psi_categorical(a, b) == pytest.approx(0.2 * np.log(5 / 3) + 0.2 * np.log(1.4))
    rep = psi_report(pd.DataFrame({"c": a, "n": np.arange(100.0)}), pd.DataFrame({"c": b, "n": np.arange(100.0)}),
                     train_score=np.arange(100.0), new_score=np.arange(100.0) + 50)
    assert rep["variable"].iloc[0] == "score" and rep["status"].iloc[0] == "significant"
    assert rep.set_index("variable").loc["n", "psi"] == pytest.approx(0.0)
    assert rep.set_index("variable").loc["c", "status"] == "moderate"


def test_profile_matches_psi_report_without_keeping_rows():
    from offerlab.credit.monitoring import PopulationProfile

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=2000), "k": rng.choice(["a", "b", "c"], 2000)})
    new = pd.DataFrame({"x": rng.normal(0.5, 1.2, 800), "k": rng.choice(["a", "b", "d"], 800)})
    s_tr, s_new = rng.normal(600, 30, 2000), rng.normal(590, 30, 800)
    prof = PopulationProfile().fit(train, s_tr)
    got = prof.psi(new, s_new).set_index("variable")["psi"]
    want = psi_report(train, new, train_score=s_tr, new_score=s_new).set_index("variable")["psi"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index())
    assert got["x"] > 0.1  # a half-sd shift with wider spread is at least a moderate shift
