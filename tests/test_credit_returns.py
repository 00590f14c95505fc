"""Credit with returns and payment behaviour: features at applied_at, reasons in words, returns-aware terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offerlab.credit.data import application_features
from offerlab.credit.decision import DecisionConfig
from offerlab.credit.terms import TermsPolicy, credit_terms

ROOT = Path(__file__).resolve().parents[1]
T = pd.Timestamp
FAST = {"members": 2, "hidden": [8], "patience": 5, "batch_size": 256, "lr": 0.03}


def hand_tables():
    tx = pd.DataFrame({"customer_id": ["A", "A", "A", "B"],
                       "timestamp": [T("2024-01-01"), T("2024-02-01"), T("2024-04-01"), T("2024-01-10")],
                       "amount": [100.0, 50.0, 80.0, 40.0], "order_id": ["o1", "o2", "o3", "o4"],
                       "category": ["fashion", "books", "home", "books"],
                       "payment_method": ["card", "bnpl", "instalments", "card"]})
    ret = pd.DataFrame({"customer_id": ["A", "A", "A"], "order_id": ["o1", "o1", "o2"],
                        "returned_at": [T("2024-01-06"), T("2024-03-15"), T("2024-02-11")],
                        "amount": [30.0, 20.0, 50.0]})
    rep = pd.DataFrame({"customer_id": ["A"] * 4, "credit_id": ["c9", "c9", "c9", "o2"],
                        "issued_at": [T("2023-09-01")] * 3 + [T("2024-02-01")],
                        "due_date": [T("2023-10-01"), T("2024-01-30"), T("2024-03-30"), T("2024-03-02")],
                        "paid_at": [T("2023-10-20"), T("2024-03-15"), pd.NaT, T("2024-03-10")],
                        "amount_due": [10.0, 10.0, 10.0, 50.0], "amount_paid": [10.0, 10.0, 0.0, 50.0]})
    apps = pd.DataFrame({"application_id": ["a1", "a2", "a3"], "customer_id": ["A", "B", "A"],
                         "applied_at": [T("2024-03-15"), T("2024-03-15"), T("2023-09-15")], "income": [30e3] * 3})
    return apps, tx, ret, rep


def test_features_at_the_application_strictly_before_it() -> None:
    apps, tx, ret, rep = hand_tables()
    X = application_features(apps, tx, returns=ret, repayments=rep)
    a, b, early = X.iloc[0], X.iloc[1], X.iloc[2]
    # the return of o1 and the payment of c9's 01-30 instalment happen on the application day: not yet seen
    assert a["ret_returned_value"] == 80.0 and a["ret_return_rate_value"] == pytest.approx(80 / 150)
    assert a["ret_instalment_share"] == 0.5 and a["ret_pay_share_card"] == 0.5
    assert (a["rep_n_instalments"], a["rep_n_late"], a["rep_late_3m"], a["rep_late_6m"]) == (3, 3, 2, 3)
    assert a["rep_dpd_max"] == 45 and a["rep_overdue_now"] == 1 and a["rep_share_repaid"] == pytest.approx(6 / 7)
    assert b["ret_return_rate_count"] == 0.0 and b["rep_n_credits"] == 0 and np.isnan(b["rep_share_repaid"])
    assert early["rep_n_credits"] == 1 and early["rep_n_instalments"] == 0 and np.isnan(early["ret_return_rate_count"])
    # without the tables: purchase history only, and no column of theirs
    plain = application_features(apps, tx.drop(columns="payment_method"))
    assert not [c for c in plain.columns if c.startswith(("ret_", "rep_"))]


def test_reasons_name_late_instalments_in_words() -> None:
    from offerlab.credit.explain import explain
    from offerlab.credit.model import CreditModel

    rng = np.random.default_rng(0)
    n = 2000
    X = pd.DataFrame({"rep_late_6m": rng.poisson(0.4, n).astype(float), "income": rng.normal(0, 1, n),
                      "ret_return_rate_value": rng.uniform(0, 0.3, n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 1.2 * X["rep_late_6m"])))).astype(int)
    model = CreditModel(FAST, {"max_epochs": 25}, seed=0).fit(X, y)
    assert model.behaviour_features == {"returns": ["ret_return_rate_value"], "repayments": ["rep_late_6m"]}
    applicant = pd.DataFrame({"rep_late_6m": [2.0], "income": [0.0], "ret_return_rate_value": [0.1]})
    r = explain(model, applicant, groups={"repayment_history": ["rep_late_6m"]},
                labels={"repayment_history": "Repayments"})
    assert r["reason_1"].iloc[0] == "Repayments: 2 late instalments in the last 6 months"
    with pytest.raises(ValueError, match="pass the repayments table"):
        model.features(pd.DataFrame({"application_id": ["x"], "customer_id": ["A"], "applied_at": [T("2024-01-01")],
                                     "income": [1.0]}), pd.DataFrame({"customer_id": ["A"],
                                                                      "timestamp": [T("2023-01-01")]}))


def test_returns_aware_insurance_and_late_payer_terms() -> None:
    cfg = DecisionConfig.from_yaml(ROOT / "configs" / "credit" / "terms.yaml")
    policy = cfg.terms
    assert policy.insurance.max_return_rate == 0.5 and policy.late_payments.max_late == 1
    apps = pd.DataFrame({"income": [60e3] * 4, "requested_amount": [500.0] * 4})
    feats = pd.DataFrame({"ret_return_rate_value": [0.7, 0.2, np.nan, 0.7], "rep_late_6m": [0, 2, 1, np.nan]})
    t = credit_terms(np.full(4, 0.02), policy, apps, feats)
    # returns most of what they buy: no purchase insurance, said why; unknown history: offered
    assert t["insurance_offered"].tolist() == [False, True, True, False]
    assert t["insurance_declined_reason"].iloc[0] == "returns more than 50% of what they buy"
    # two late instalments in 6 months: only the shortest term, whatever the PD rule allows
    assert t["term_options"].tolist() == ["3,6,12", "3", "3,6,12", "3,6,12"]
    assert t["terms_reason"].iloc[1] == "more than 1 late instalments in the last 6 months"
    # without the columns the rules are not applied; declined applicants keep no terms
    base = credit_terms(np.array([0.02, 0.9]), policy, apps.iloc[:2])
    assert base["insurance_offered"].tolist() == [True, False] and base["term_options"].tolist() == ["3,6,12", ""]
    loose = TermsPolicy(**{**policy.model_dump(), "late_payments": None,
                           "insurance": {**policy.insurance.model_dump(), "max_return_rate": None}})
    assert credit_terms(np.full(4, 0.02), loose, apps, feats)["insurance_offered"].all()
    with pytest.raises(ValueError, match="max_return_rate"):
        TermsPolicy(insurance={"max_return_rate": 1.5})


def test_payments_comparison_on_a_small_marketplace() -> None:
    from offerlab.credit.bench import payments_comparison
    from offerlab.credit.config import load_config

    cfg = load_config(ROOT / "configs" / "credit" / "synth.yaml", {
        "data": {"customers": 3000, "seed": 1}, "evaluation": {"folds": 2},
        "net": {"members": 2, "hidden": [8], "patience": 2}, "trainer": {"max_epochs": 3}})
    r = payments_comparison(cfg, progress=False)
    w, wo = r["summary"]["with"], r["summary"]["without"]
    assert w["features"] > wo["features"] + 10
    assert w["auc_oracle_observable_payments"] > w["auc_oracle_observable"]
    assert r["runs"]["with"]["oracle"]["oracle"].startswith("true_pd_observable_payments")
    assert r["runs"]["without"]["oracle"]["oracle"].startswith("true_pd_observable =")
    assert r["gain_auc"]["lightgbm"] == pytest.approx(w["lightgbm_auc"] - wo["lightgbm_auc"])
