"""Reason codes from the real model on data where one feature dominates the risk."""

import numpy as np
import pandas as pd
import pytest

from offerlab.credit.explain import explain, group_statements, reason_groups, top_reasons
from offerlab.credit.model import CreditModel

FAST = {"members": 2, "hidden": [8], "patience": 5, "batch_size": 256, "lr": 0.03}


@pytest.fixture(scope="module")
def dominant_model():
    rng = np.random.default_rng(0)
    n = 2000
    X = pd.DataFrame({
        "debt_ratio": rng.uniform(0, 1, n),
        "noise_a": rng.normal(0, 1, n),
        "noise_b": rng.normal(0, 1, n),
        "region": rng.choice(["north", "south", "east"], n),
        "late_payments": rng.choice(["none", "some"], n, p=[0.8, 0.2]),
    })  # fmt: skip
    logit = -2.0 + 5.0 * (X["debt_ratio"] - 0.5) + 1.0 * (X["late_payments"] == "some")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    model = CreditModel(FAST, {"max_epochs": 40}, seed=0).fit(X, y)
    return model, X


def test_dominant_feature_is_the_first_reason(dominant_model):
    model, X = dominant_model
    applicant = X.head(1).copy()
    applicant[["debt_ratio", "noise_a", "noise_b", "region", "late_payments"]] = [0.98, 0.0, 0.0, "north", "some"]
    r = explain(model, applicant, labels={"debt_ratio": "Debt ratio"})
    assert r["reason_1"].iloc[0] == "Debt ratio: high"
    assert r["reason_2"].iloc[0] == "Late payments: some"
    assert r["reason_1_effect"].iloc[0] > 1.0 > r["reason_2_effect"].iloc[0] > 0.3
    # the noise features carry (almost) nothing
    assert "Noise" not in " ".join(r[[f"reason_{k}" for k in range(1, 5)]].iloc[0])


def test_a_safe_applicant_gets_no_adverse_reason_for_the_dominant_feature(dominant_model):
    model, X = dominant_model
    safe = X.head(1).copy()
    safe[["debt_ratio", "late_payments"]] = [0.02, "none"]
    r = explain(model, safe)
    assert not r["reason_1"].iloc[0].startswith("Debt ratio")


def test_attributions_are_exact_occlusion_of_the_calibrated_logit(dominant_model):
    model, X = dominant_model
    row = X.head(3)
    from offerlab.credit.explain import occlusion_attributions

    attr = occlusion_attributions(model, row, {"debt_ratio": ["debt_ratio"]})
    occluded = row.copy()
    occluded["debt_ratio"] = model.encoder.reference["debt_ratio"]
    np.testing.assert_allclose(attr["debt_ratio"], model.predict_logit(row) - model.predict_logit(occluded))


def test_top_reasons_at_most_four_and_only_positive():
    attr = pd.DataFrame([[0.5, -0.2, 0.01, 0.3, 0.2, 0.1]], columns=list("abcdef"))
    st = pd.DataFrame([[f"{c} stmt" for c in "abcdef"]], columns=list("abcdef"))
    r = top_reasons(attr, st, k=10)
    assert [r[f"reason_{k}"].iloc[0] for k in range(1, 5)] == ["a stmt", "d stmt", "e stmt", "f stmt"]
    assert "reason_5" not in r.columns
    r2 = top_reasons(attr[["b", "c"]], st[["b", "c"]])
    assert r2["reason_1"].iloc[0] == "" and r2["reason_1_effect"].iloc[0] == 0.0


def test_groups_and_statements():
    g = reason_groups(["a", "b", "beh_count_30d"], {"activity": ["beh_count_30d", "missing_col"]})
    assert g == {"activity": ["beh_count_30d"], "a": ["a"], "b": ["b"]}
    X = pd.DataFrame({"a": [1.0, 5.0, np.nan], "b": ["x", "y", None]})
    s = group_statements(X, {"a": ["a"], "b": ["b"]}, {"a": 3.0}, {"b": "Bee"})
    assert s["a"].tolist() == ["A: low", "A: high", "A: unknown"]
    assert s["b"].tolist() == ["Bee: x", "Bee: y", "Bee: missing"]
