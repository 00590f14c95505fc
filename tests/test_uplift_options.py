"""Opt-in parts of the uplift net: the R-loss and the piecewise-linear encoding (by hand), and a fit that early-stops
on the validation Qini and round-trips through save/load with its bin edges."""

import numpy as np
import pytest
import torch

from offerlab.uplift.model import MultiTreatmentNet, UpliftModel, r_loss
from test_uplift_model import TINY_NET, TINY_TRAINER, known_effect_campaign


def test_r_loss_by_hand():
    """q = 1/2; p = (.5,.5), (.5,.75), (.25,.5); m = (p0 + p1) / 2; residuals (y - m) - (t - q) tau are .5, .5, -.5;
    loss = sum resid^2 / sum (t - q)^2 = .75 / .75."""
    logits = torch.tensor([[0.0, 0.0], [0.0, np.log(3.0)], [np.log(1 / 3), 0.0]])
    t, y = torch.tensor([1, 0, 1]), torch.tensor([1.0, 1.0, 0.0])
    assert float(r_loss(logits, t, y, torch.full((3, 2), 0.5))) == pytest.approx(1.0, rel=1e-6)


def test_piecewise_linear_encoding_by_hand():
    net = MultiTreatmentNet(2, 2, {"hidden": [4], "numeric_bins": 2}, revenue_head=False, n_numeric=1)
    net.bin_edges.copy_(torch.tensor([[0.0, 1.0, 3.0]]))
    x = torch.tensor([[0.5, 7.0], [2.0, 7.0], [-1.0, 7.0], [5.0, 7.0]])
    enc = net.piecewise_linear(x)
    assert enc[:, :2].equal(x)  # the raw inputs stay
    assert enc[:, 2:].tolist() == [[0.5, 0.0], [1.0, 0.5], [0.0, 0.0], [1.0, 1.0]]


def test_quantile_edges_from_training_rows():
    net = MultiTreatmentNet(2, 2, {"hidden": [4], "numeric_bins": 4}, revenue_head=False, n_numeric=1)
    net.set_bin_edges(np.c_[np.arange(101.0), np.zeros(101)])
    assert net.bin_edges.tolist() == [[0.0, 25.0, 50.0, 75.0, 100.0]]


def test_val_qini_early_stop_with_bins_learns_and_round_trips(tmp_path):
    data, _ = known_effect_campaign(5000, seed=4)
    cfg = {**TINY_NET, "numeric_bins": 6, "early_stop": "val_qini", "uplift_loss_weight": 1.0, "uplift_loss": "r_loss"}
    model = UpliftModel(cfg, TINY_TRAINER, seed=0).fit(data)
    assert model.history[0]["monitor"] == "val_neg_qini"
    assert model.history[0]["best_val_loss"] < -0.05  # minus the validation Qini: it found signal
    test, effect = known_effect_campaign(3000, seed=5)
    up = model.uplift(test.features)
    assert np.corrcoef(up["a"], effect[:, 1])[0, 1] > 0.7
    model.save(tmp_path / "m.pt")
    again = UpliftModel.load(tmp_path / "m.pt")
    assert np.allclose(again.uplift(test.features).to_numpy(), up.to_numpy())
    assert again.nets[0].bin_edges.shape == (2, 7)  # two numeric columns (x1, x2), 6 bins
