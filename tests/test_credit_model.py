"""The PD model end to end on German credit: one applicant in, PD / score / grade / reasons / terms out."""

from pathlib import Path

import numpy as np
import pytest

from offerlab.credit import CreditModel, DecisionConfig, application_features
from offerlab.credit.config import load_config
from offerlab.data.loaders import load_german

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "credit"
FAST = {"members": 2, "hidden": [8], "patience": 5, "batch_size": 256, "lr": 0.03}


@pytest.fixture(scope="module")
def german_model():
    apps = load_german()
    X = application_features(apps)
    model = CreditModel(FAST, {"max_epochs": 30}, seed=0).fit(X.iloc[:800], apps["default"].iloc[:800])
    model.decision = load_config(CONFIGS / "german.yaml").decision_config()
    return model, apps


def test_single_applicant_decision(german_model):
    model, apps = german_model
    one = apps.iloc[[900]].drop(columns="default")
    out = model.decide(one)
    assert len(out) == 1
    row = out.iloc[0]
    assert 0 < row["pd"] < 1
    expected_score = 600 + 20 / np.log(2) * (np.log((1 - row["pd"]) / row["pd"]) - np.log(50))
    assert row["score"] == pytest.approx(np.clip(expected_score, 300, 900), abs=0.06)
    assert row["grade"] in list("ABCDEF")
    assert row["decision"] in ("approve", "decline")
    assert {"reason_1", "reason_4", "limit", "annual_rate", "term_options", "insurance_offered", "covers_request"} <= set(out.columns)


def test_held_out_auc_beats_chance_clearly(german_model):
    from offerlab.credit.metrics import auc

    model, apps = german_model
    p = model.predict_pd(application_features(apps.iloc[800:]))
    assert auc(apps["default"].iloc[800:], p) > 0.72


def test_save_load_roundtrip(german_model, tmp_path):
    model, apps = german_model
    X = application_features(apps.iloc[:50])
    again = CreditModel.load(model.save(tmp_path / "m.pkl"))
    np.testing.assert_allclose(again.predict_pd(X), model.predict_pd(X))


def test_bad_input_refused(german_model):
    model, apps = german_model
    with pytest.raises(ValueError, match=r"missing column\(s\) the model was trained on: \['purpose'\]"):
        model.predict_pd(application_features(apps.head(3)).drop(columns="purpose"))
    with pytest.raises(ValueError, match="one class only"):
        CreditModel(FAST).fit(application_features(apps.head(20)), np.zeros(20))
    with pytest.raises(ValueError, match="purchase-history features"):
        m = CreditModel(FAST)
        m.feature_columns, m.encoder = ["beh_frequency"], model.encoder
        m.features(apps.head(2))


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {CONFIGS / 'default.yaml'}\nnet: {{hiden: [4]}}\n")
    with pytest.raises(ValueError, match="hiden"):
        load_config(bad)
    with pytest.raises(ValueError, match="cutoff_pd"):
        DecisionConfig.model_validate({"terms": {"cutoff_pd": 2}})


def test_monitor_psi_on_new_applications(german_model):
    model, apps = german_model
    same = model.monitor(apps.iloc[:800].drop(columns="default"))
    assert same["psi"].max() < 0.01  # the training rows against their own profile
    shifted = apps.iloc[800:].drop(columns="default").copy()
    shifted["credit_amount"] = shifted["credit_amount"] * 3
    rep = model.monitor(shifted).set_index("variable")
    assert rep.loc["credit_amount", "status"] == "significant"
    assert "score" in rep.index


def test_settings_are_chosen_by_inner_validation_only():
    import pandas as pd

    from offerlab.credit.model import NetConfig

    rng = np.random.default_rng(1)
    n = 300
    X = pd.DataFrame({"x": rng.normal(size=n), "noise": rng.normal(size=n), "g": rng.choice(["a", "b"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * X["x"] - 1)))).astype(int).to_numpy()
    net = {**FAST, "hidden": [], "select_from": [{"l2_wide": 0.3, "lr": 0.003}, {"l2_wide": 0.001}]}
    model = CreditModel(net, {"max_epochs": 5}, seed=0).fit(X, y)
    assert [s["l2_wide"] for s in model.selection] == [0.3, 0.001] and [s["lr"] for s in model.selection] == [0.003, 0.03]
    best = int(np.argmax([s["inner_auc"] for s in model.selection]))
    assert model.chosen.l2_wide == model.selection[best]["l2_wide"] and model.n_members == FAST["members"]
    assert all(0.75 < s["inner_auc"] < 1 for s in model.selection)  # held-out ranking of a strong signal
    with pytest.raises(ValueError, match=r"may not override \['members'\]"):
        NetConfig(select_from=[{"members": 3}])
    with pytest.raises(ValueError, match="lr"):
        NetConfig(select_from=[{"lr": -1}])


def test_blend_of_candidates_is_one_more_inner_option():
    import pandas as pd

    from offerlab.credit.calibration import EnsembleRescaled
    from offerlab.credit.model import NetConfig

    rng = np.random.default_rng(2)
    n = 300
    X = pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["a", "b", "c"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * X["x"] - 1)))).astype(int).to_numpy()
    net = {**FAST, "hidden": [], "blend": True, "select_from": [{"l2_wide": 0.1}, {"l2_wide": 0.001}]}
    model = CreditModel(net, {"max_epochs": 5}, seed=0).fit(X, y)
    assert [s.get("blend", False) for s in model.selection] == [False, False, True]
    best = int(np.argmax([s["inner_auc"] for s in model.selection]))
    assert model.n_members == FAST["members"] * (2 if best == 2 else 1)  # the blend pools both candidates' members
    # cross-fitted calibration: every training row calibrates, the map carried over to the members' average
    assert model.calibration_rows == n and isinstance(model.calibrator, EnsembleRescaled)
    assert model.calibrator.stretch >= 1.0
    raw = model.raw_logit(X)
    np.testing.assert_allclose(model.predict_logit(X), model.calibrator.transform_logit(raw))
    with pytest.raises(ValueError, match=r"may not override \['blend'\]"):
        NetConfig(select_from=[{"blend": True}])
