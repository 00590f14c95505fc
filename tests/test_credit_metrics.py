import numpy as np
import pytest

from offerlab.credit.metrics import (
    auc,
    brier,
    calibration_in_the_large,
    credit_metrics,
    ece,
    ks_statistic,
    quantile_bins,
    reliability_table,
)


def test_auc_ks_brier_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8])
    # pairs (defaulter > payer): (0.4>0.1), (0.8>0.1), (0.8>0.6) = 3 of 4
    assert auc(y, p) == pytest.approx(0.75)
    # thresholds: at 0.8 TPR .5 FPR 0; at 0.4 TPR 1 FPR .5 -> max gap 0.5
    assert ks_statistic(y, p) == pytest.approx(0.5)
    assert brier(y, p) == pytest.approx((0.01 + 0.36 + 0.36 + 0.04) / 4)
    m = credit_metrics(y, p)
    assert m["gini"] == pytest.approx(0.5)


def test_ece_quantile_bins_by_hand():
    # 4 predictions, 2 equal-count bins: {0.1, 0.2} with labels {0, 1}; {0.6, 0.8} with labels {1, 1}
    y = np.array([1, 0, 1, 1])
    p = np.array([0.2, 0.1, 0.8, 0.6])
    np.testing.assert_array_equal(quantile_bins(p, 2), [0, 0, 1, 1])
    # bin 0: |0.5 - 0.15| = 0.35; bin 1: |1.0 - 0.7| = 0.3; weighted equally
    assert ece(y, p, n_bins=2) == pytest.approx(0.325)
    t = reliability_table(y, p, 2)
    assert t["count"].tolist() == [2, 2]
    assert calibration_in_the_large(y, p) == pytest.approx(0.75 - 0.425)


def test_ece_is_small_for_true_probabilities_and_large_for_shifted():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.5, 200_000)
    y = (rng.random(len(p)) < p).astype(int)
    assert ece(y, p) < 0.005
    assert ece(y, np.clip(p + 0.05, 0, 1)) == pytest.approx(0.05, abs=0.005)


def test_bad_inputs_refused():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="differ in length"):
        ece(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier(np.array([0, 1]), np.array([0.1, 1.2]))
