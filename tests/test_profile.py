import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from offerlab.data import synth
from offerlab.data.profile import log_profile, profile_tables, write_report
from offerlab.uplift.data import from_synth


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny fits: OpenMP threads cost more than they save, most of all on a shared machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def market():
    s = synth.generate(3000, seed=0)
    return s, from_synth(s)


def hand_transactions() -> pd.DataFrame:
    """11 customers from 2024-01-01 (day 0); gaps in distinct days: 5 x (3, 7, 10), 3 x 30, 2 x 1 = 20 gaps."""
    day0 = pd.Timestamp("2024-01-01")
    rows = []
    for i in range(5):  # days 0, 3, 10, 20: in calibration and in the holdout
        rows += [(f"r{i}", day0 + pd.Timedelta(days=d, hours=9)) for d in (0, 3, 10, 20)]
    for i in range(3):  # days 0, 30 with a second purchase on day 30: one purchase day, after the holdout
        rows += [(f"s{i}", day0 + pd.Timedelta(days=d, hours=h)) for d, h in ((0, 8), (30, 8), (30, 20))]
    for i in range(2):  # two purchases on day 15 only: a one-day customer first seen in the holdout
        rows += [(f"o{i}", day0 + pd.Timedelta(days=15, hours=h)) for h in (10, 11)]
    rows += [("t0", day0 + pd.Timedelta(days=5, hours=23)), ("t0", day0 + pd.Timedelta(days=6, hours=1)),
             ("t0", day0 + pd.Timedelta(days=7, hours=12))]
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp"])
    tx["amount"] = np.arange(len(tx), dtype=float) + 1.0
    return tx


def test_purchase_figures_hand_computed():
    p = profile_tables(hand_transactions(), calibration_end="2024-01-10", holdout_end="2024-01-26")
    t = p["transactions"]
    assert t["rows"] == 36 and t["customers"] == 11
    assert t["date_range"] == {"column": "timestamp", "first": "2024-01-01", "last": "2024-01-31", "days": 31}
    pur = t["purchases"]
    assert pur["repeat_buyers"] == 9 and pur["repeat_buyer_share"] == pytest.approx(9 / 11)
    assert pur["transactions_per_customer"]["mean"] == pytest.approx(36 / 11)
    assert pur["purchase_days_per_customer"]["median"] == 3.0
    gaps = pur["inter_purchase_days"]
    assert gaps["n"] == 20  # same-day purchases merge: no zero gaps
    assert gaps["p50"] == 7.0 and gaps["mean"] == pytest.approx(192 / 20)
    assert gaps["p10"] == pytest.approx(2.8)  # sorted position 1.9: 1 + 0.9 * (3 - 1)
    assert sum(gaps["histogram"]["counts"]) == 20
    h = pur["holdout"]
    assert h["calibration_days"] == 10 and h["holdout_days"] == 16
    assert h["scorable_customers"] == 9 and h["scorable_share"] == pytest.approx(9 / 11)
    assert h["scorable_buying_in_holdout"] == 5 and h["scorable_buying_in_holdout_share"] == pytest.approx(5 / 9)
    assert h["new_in_holdout_customers"] == 2 and h["purchase_days_after_holdout"] == 3
    assert pur["amounts"]["mean"] == pytest.approx(18.5) and pur["amounts"]["median"] == pytest.approx(18.5)


def test_few_gaps_give_no_quantiles_and_no_amount_figures():
    tx = hand_transactions()
    few = tx[tx["customer_id"].isin(["r0", "t0"])]  # 5 gaps, 7 amounts: below the aggregate minimum
    pur = profile_tables(few)["transactions"]["purchases"]
    assert pur["inter_purchase_days"]["n"] == 5 and "p50" not in pur["inter_purchase_days"]
    assert "mean" not in pur["amounts"]


def test_date_only_log_says_no_amounts(tmp_path):
    tx = hand_transactions().drop(columns="amount")
    p = profile_tables(tx, calibration_end="2024-01-10", holdout_end="2024-01-26")
    pur = p["transactions"]["purchases"]
    assert pur["amounts"] is None and "no amounts in this log" in pur["amounts_note"]
    assert pur["repeat_buyer_share"] == pytest.approx(9 / 11)
    assert any("no amounts in this log" in w for w in p["warnings"])
    write_report(p, tmp_path / "r")
    assert "no amounts in this log" in (tmp_path / "r" / "data_check.md").read_text()


def test_randomised_campaign_passes_the_check(market):
    s, d = market
    p = profile_tables(campaign=s.campaign, campaign_features=d.features,
                       campaign_levels=d.levels, campaign_assignment="randomised")
    c = p["campaign"]
    chk = c["assignment_check"]
    assert chk["verdict"] == "randomised" and abs(chk["auc"] - 0.5) < 0.03
    assert c["declared_vs_check"] == "agrees" and p["warnings"] == []
    assert chk["overlap_share"] > 0.95 and "propensity" not in chk
    arms = {a["level"]: a for a in c["arms"]}
    control = s.campaign[s.campaign["treatment"] == d.levels[0]]
    assert arms[d.levels[0]]["rows"] == len(control)
    assert arms[d.levels[0]]["conversion_rate"] == pytest.approx(control["conversion"].mean())
    assert arms[d.levels[0]]["revenue_per_converter"] == pytest.approx(
        control.loc[control["conversion"] == 1, "revenue"].mean())
    hist = chk["overlap_histograms"]["by_level"][d.levels[1]]
    assert sum(hist["received"]) + sum(hist["not_received"]) == len(s.campaign)


def test_targeted_campaign_is_flagged_against_a_randomised_declaration(market, tmp_path):
    s, d = market
    rng = np.random.default_rng(1)
    recency_rank = d.features["recency_days"].rank(pct=True).to_numpy()
    deeper = 3 - np.minimum((recency_rank * 4).astype(int), 3)  # recent buyers get the deepest discount
    codes = np.where(rng.random(len(deeper)) < 0.3, rng.integers(0, 4, len(deeper)), deeper)
    camp = s.campaign.assign(treatment=np.asarray(d.levels, dtype=object)[codes])
    p = profile_tables(campaign=camp, campaign_features=d.features, campaign_levels=d.levels,
                       campaign_assignment="randomised")
    chk = p["campaign"]["assignment_check"]
    assert chk["verdict"] == "targeted" and chk["auc"] > 0.7
    assert p["campaign"]["declared_vs_check"].startswith("MISMATCH")
    assert any("MISMATCH" in w for w in p["warnings"])
    files = write_report(p, tmp_path / "r")
    md = (tmp_path / "r" / "data_check.md").read_text()
    assert "**Warning:** MISMATCH" in md and "Verdict: targeted" in md
    assert tmp_path / "r" / "campaign_propensity_overlap.png" in files


def test_campaign_without_features_skips_the_check(market):
    s, d = market
    c = profile_tables(campaign=s.campaign, campaign_levels=d.levels)["campaign"]
    assert "no campaign features" in c["assignment_check"]["skipped"]
    assert [a["level"] for a in c["arms"]] == d.levels


def test_planted_leak_is_the_only_leakage_suspect(market):
    s, _ = market
    apps = s.applications.copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(apps)) < 0.01
    apps["leak"] = np.where(flip, 1 - apps["default"], apps["default"]).astype(float)
    apps["leak_text"] = np.where(apps["leak"] == 1, "late", "on time")
    a = profile_tables(applications=apps)["applications"]
    assert a["default_rate"] == pytest.approx(apps["default"].mean())
    lk = a["leakage"]
    assert set(lk["suspects"]) == {"leak", "leak_text"}
    assert lk["aucs"]["leak"] > 0.97 and lk["max_auc"] == max(lk["aucs"].values())
    assert max(v for k, v in lk["aucs"].items() if not k.startswith("leak")) < 0.8
    assert [r["feature"] for r in lk["top"][:2]] == sorted(["leak", "leak_text"], key=lambda c: -lk["aucs"][c])


def test_psi_flags_a_feature_shifted_in_the_second_half(market):
    s, _ = market
    apps = s.applications.copy()
    late = apps["applied_at"] > apps["applied_at"].median()
    apps.loc[late, "income"] *= 2.0
    ps = profile_tables(applications=apps)["applications"]["psi"]
    assert ps["first_half_rows"] + ps["second_half_rows"] == len(apps)
    by = {r["feature"]: r for r in ps["features"]}
    assert by["income"]["status"] == "significant" and ps["features"][0]["feature"] == "income"
    assert ps["shifted"] == ["income"]
    same_day = apps.assign(applied_at=pd.Timestamp("2024-05-01"))
    assert "not computable" in profile_tables(applications=same_day)["applications"]["psi"]["skipped"]


def test_report_holds_no_ids_and_a_failed_write_keeps_the_earlier_one(market, tmp_path):
    s, _ = market
    p = profile_tables(s.transactions, s.customers, applications=s.applications,
                       calibration_end="2024-06-30", holdout_end="2024-12-31")
    out = tmp_path / "report"
    files = write_report(p, out, title="Synthetic check")
    assert {f.name for f in files} == {"data_check.md", "data_check.json", "inter_purchase_days.png",
                                       "credit_single_feature_auc.png", "credit_psi.png"}
    assert all(f.stat().st_size > 0 for f in files)
    md = (out / "data_check.md").read_text()
    assert md.startswith("# Synthetic check") and "## Transactions" in md and "### Timing holdout" in md
    assert json.loads((out / "data_check.json").read_text()) == p
    text = md + (out / "data_check.json").read_text()
    assert not any(cid in text for cid in s.customers["customer_id"].head(50))
    assert not any(aid in text for aid in s.applications["application_id"].head(50))

    with pytest.raises(TypeError):
        write_report({**p, "bad": object()}, out)
    assert (out / "data_check.md").read_text() == md
    assert sorted(x.name for x in tmp_path.iterdir()) == ["report"]  # no temporary folder left behind

    write_report(profile_tables(hand_transactions()), out)  # a good write replaces the whole earlier report
    assert not (out / "credit_psi.png").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a data-check report"):
        write_report(p, out)


def test_log_profile_records_metrics_and_artifacts(market, mlflow_store, tmp_path):
    s, _ = market
    p = profile_tables(hand_transactions(), applications=s.applications, calibration_end="2024-01-10",
                       holdout_end="2024-01-26")
    files = write_report(p, tmp_path / "report")
    run_id = log_profile(p, files, params={"data_spec": "spec.yaml"})
    run = mlflow.get_run(run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "offerlab-data"
    m = run.data.metrics
    assert m["transactions.rows"] == 36 and m["transactions.repeat_buyer_share"] == pytest.approx(9 / 11)
    assert m["applications.default_rate"] == pytest.approx(s.applications["default"].mean())
    assert 0.5 <= m["applications.max_single_feature_auc"] < 0.95
    assert run.data.params["data_spec"] == "spec.yaml"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "data_check")}
    assert logged == {f"data_check/{f.name}" for f in files}
    text = str(run.data.params) + str(run.data.tags) + str(m)
    assert not any(cid in text for cid in s.applications["customer_id"].head(50))
