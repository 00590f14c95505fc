import numpy as np
import pandas as pd
import pytest

from offerlab.credit.baselines import LightGBMPD, LogisticPD, WoEBinning, WoELogisticPD


def test_woe_by_hand():
    X = pd.DataFrame({"c": ["a"] * 4 + ["b"] * 4})
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    b = WoEBinning(min_share=0.05).fit(X, y)
    # bins: a (3 bad, 1 good), b (1 bad, 3 good), other (0, 0); +0.5 pseudo-counts each
    bad, good = np.array([3.5, 1.5, 0.5]), np.array([1.5, 3.5, 0.5])
    woe = np.log((bad / bad.sum()) / (good / good.sum()))
    np.testing.assert_allclose(b.woe["c"], woe)
    assert b.iv["c"] == pytest.approx(float(np.sum((bad / bad.sum() - good / good.sum()) * woe)))
    np.testing.assert_allclose(b.transform(pd.DataFrame({"c": ["b", "zzz"]}))[:, 0], [woe[1], woe[2]])


def test_peers_rank_a_clear_signal():
    rng = np.random.default_rng(0)
    n = 1500
    X = pd.DataFrame({"x": rng.normal(size=n), "k": rng.choice(["p", "q"], n), "z": rng.normal(size=n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * X["x"] + (X["k"] == "q"))))).astype(int)
    for m in (WoELogisticPD(), LogisticPD(), LightGBMPD(n_estimators=50)):
        p = m.fit(X.iloc[:1000], y[:1000]).predict_pd(X.iloc[1000:])
        from offerlab.credit.metrics import auc

        assert auc(y[1000:], p) > 0.8, m.name
