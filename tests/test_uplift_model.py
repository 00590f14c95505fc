"""The uplift network: recovers a known synthetic effect, round-trips through save/load, refuses bad config."""

import numpy as np
import pandas as pd
import pytest

from offerlab.uplift.data import CampaignData
from offerlab.uplift.metrics import qini_coefficient
from offerlab.uplift.model import UpliftModel

TINY_NET = {"hidden": [32], "head_hidden": 8, "ensemble": 1, "batch_size": 512, "lr": 0.01, "patience": 3,
            "dropout": 0.0}
TINY_TRAINER = {"max_epochs": 15}


def known_effect_campaign(n: int = 12000, seed: int = 0) -> tuple[CampaignData, np.ndarray]:
    """Level a: +0.25 conversion when x1 > 0, none otherwise; level b: +0.10 for everyone."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    seg = rng.choice(["u", "v"], n)
    t = rng.integers(0, 3, n)
    base = 0.15 + 0.05 * (seg == "u")
    effect = np.c_[np.zeros(n), 0.25 * (x1 > 0), np.full(n, 0.10)]
    y = (rng.random(n) < base + effect[np.arange(n), t]).astype(float)
    revenue = y * rng.gamma(4.0, 5.0, n)
    data = CampaignData(
        customer_id=np.array([f"c{i}" for i in range(n)], dtype=object),
        features=pd.DataFrame({"x1": x1, "x2": x2, "seg": seg}), treatment=t, conversion=y, revenue=revenue,
        levels=["none", "a", "b"], propensity=np.full((n, 3), 1 / 3), discounts={"none": 0, "a": 0.1, "b": 0.05},
    )
    return data, effect


@pytest.fixture(scope="module")
def fitted():
    data, effect = known_effect_campaign()
    model = UpliftModel(TINY_NET, TINY_TRAINER, seed=0).fit(data)
    return model, data, effect


def test_recovers_known_effect(fitted):
    model, data, effect = fitted
    test, test_effect = known_effect_campaign(4000, seed=1)
    up = model.uplift(test.features)
    pos = test.features["x1"].to_numpy() > 0.3
    neg = test.features["x1"].to_numpy() < -0.3
    assert up["a"][pos].mean() == pytest.approx(0.25, abs=0.06)
    assert up["a"][neg].mean() == pytest.approx(0.0, abs=0.06)
    assert up["b"].mean() == pytest.approx(0.10, abs=0.04)
    # the estimated uplift ranks the true effect: strongly correlated for the heterogeneous level
    assert np.corrcoef(up["a"], test_effect[:, 1])[0, 1] > 0.7
    rows = test.treatment != 2
    q = qini_coefficient(up["a"].to_numpy()[rows], test.conversion[rows], (test.treatment[rows] == 1))
    assert q > 0.1


def test_revenue_head_and_policy_recommendation(fitted):
    model, data, _ = fitted
    pred = model.predict_levels(data.features.head(200))
    assert pred["revenue"].shape == (200, 3) and (pred["revenue"] >= 0).all()
    from offerlab.uplift.policy import PolicyConfig

    rec = model.recommend(data.features.head(200), PolicyConfig(margin=0.5, contact_cost=0.05),
                          customer_id=data.customer_id[:200], budget=50.0)
    assert list(rec.columns[:3]) == ["customer_id", "level", "treat"]
    assert rec["expected_spend"].sum() <= 50.0 + 1e-9
    assert set(rec["level"]) <= {"none", "a", "b"}


def test_save_load_round_trip(fitted, tmp_path):
    model, data, _ = fitted
    model.save(tmp_path / "m.pt")
    again = UpliftModel.load(tmp_path / "m.pt")
    a = model.predict_levels(data.features.head(50))
    b = again.predict_levels(data.features.head(50))
    np.testing.assert_allclose(a["revenue"], b["revenue"], rtol=1e-6)


def test_estimates_propensity_when_unknown():
    data, _ = known_effect_campaign(3000)
    data.propensity = None
    model = UpliftModel({**TINY_NET, "propensity_weight": 1.0}, {"max_epochs": 5}, seed=0).fit(data)
    e = model.predict_propensity(data.features.head(100))
    assert e.shape == (100, 3)
    np.testing.assert_allclose(e.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(e - 1 / 3).max() < 0.1


def test_refuses_bad_config_key():
    from offerlab.uplift.config import load_config

    with pytest.raises(ValueError, match="net.hiden"):
        load_config(None, {"net": {"hiden": [3]}})
    with pytest.raises(ValueError, match="known"):
        data, _ = known_effect_campaign(500)
        data.propensity = None
        UpliftModel({**TINY_NET, "propensity": "known"}, TINY_TRAINER).fit(data)


def test_transformed_outcome_loss_by_hand():
    """Two levels, propensities 1/2 each: Z = 2y for treated, -2y for control rows; loss = mean (tau - Z)^2."""
    import torch

    from offerlab.uplift.model import transformed_outcome_loss

    logits = torch.tensor([[0.0, 0.0], [0.0, np.log(3.0)], [np.log(1 / 3), 0.0]])  # p: (.5,.5) (.5,.75) (.25,.5)
    t, y = torch.tensor([1, 0, 1]), torch.tensor([1.0, 1.0, 0.0])
    loss = transformed_outcome_loss(logits, t, y, torch.full((3, 2), 0.5))
    by_hand = ((0.0 - 2.0) ** 2 + (0.25 + 2.0) ** 2 + (0.25 - 0.0) ** 2) / 3
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_direct_uplift_loss_still_recovers_the_effect():
    data, effect = known_effect_campaign(5000, seed=2)
    model = UpliftModel({**TINY_NET, "uplift_loss_weight": 1.0}, TINY_TRAINER, seed=0).fit(data)
    test, test_effect = known_effect_campaign(3000, seed=3)
    assert np.corrcoef(model.uplift(test.features)["a"], test_effect[:, 1])[0, 1] > 0.7
