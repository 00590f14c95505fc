"""Calibration maps recover known distortions; the PD model's probabilities are calibrated out of sample."""

import numpy as np
import pandas as pd
import pytest

from offerlab.credit.calibration import PlattCalibrator, TemperatureCalibrator, make_calibrator, reliability_figure
from offerlab.credit.metrics import calibration_in_the_large, ece
from offerlab.credit.model import CreditModel


def _distorted(n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.5, 1.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    return true_logit, y


def test_platt_recovers_scale_and_shift():
    z, y = _distorted()
    raw = (z - 0.5) / 0.5  # over-confident and shifted: true logit = 0.5 * raw + 0.5
    cal = PlattCalibrator().fit(raw, y)
    assert cal.a == pytest.approx(0.5, abs=0.03) and cal.b == pytest.approx(0.5, abs=0.05)
    assert ece(y, 1 / (1 + np.exp(-raw))) > 0.05
    assert ece(y, cal.transform(raw)) < 0.01


def test_temperature_and_isotonic_fix_overconfidence():
    z, y = _distorted(seed=1)
    raw = 3.0 * z
    t = TemperatureCalibrator().fit(raw, y)
    assert t.temperature == pytest.approx(3.0, rel=0.05)
    iso = make_calibrator("isotonic").fit(raw, y)
    assert ece(y, iso.transform(raw)) < 0.01
    with pytest.raises(ValueError, match="unknown calibration method 'beta'"):
        make_calibrator("beta")


def test_reliability_figure_draws():
    z, y = _distorted(2000)
    fig = reliability_figure(y, 1 / (1 + np.exp(-z)))
    assert len(fig.axes[0].lines) == 2


def test_model_pd_calibrated_out_of_sample():
    # a logistic truth with a skewed amount and a categorical; the ensemble must be calibrated on new rows
    rng = np.random.default_rng(3)
    n = 6000
    X = pd.DataFrame({"amount": rng.lognormal(7, 1, n), "age": rng.integers(18, 80, n).astype(float),
                      "housing": rng.choice(["own", "rent", "free"], n)})
    logit = -1.5 + 0.6 * (np.log(X["amount"]) - 7) + 0.02 * (X["age"] - 45).abs() + 0.5 * (X["housing"] == "rent")
    p = 1 / (1 + np.exp(-logit.to_numpy()))
    y = (rng.random(n) < p).astype(int)
    model = CreditModel({"members": 3, "hidden": [8], "batch_size": 256, "patience": 4, "lr": 0.02},
                        {"max_epochs": 25}, seed=0).fit(X.iloc[:3000], y[:3000])
    pd_new = model.predict_pd(X.iloc[3000:])
    assert abs(calibration_in_the_large(y[3000:], pd_new)) < 0.02
    assert ece(y[3000:], pd_new) < 0.03
    # the calibration map was fitted on held-out logits: the raw ensemble is not the identity map of it
    assert model.calibrator.name == "platt"
