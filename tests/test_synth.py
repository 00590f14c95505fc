"""Tests for the synthetic marketplace generator (offerlab.data.synth): contracts, determinism, ground truth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from offerlab.data import synth as S
from offerlab.data.schema import validate_table

N = 2_000


@pytest.fixture(scope="module")
def data() -> S.SynthData:
    return S.generate(N, seed=7, chunk_size=1_000)  # two chunks


@pytest.fixture(scope="module")
def window(data: S.SynthData) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(data.meta["start"]), pd.Timestamp(data.meta["observation_end"])


def _gaps(data: S.SynthData) -> pd.DataFrame:
    """Observed inter-purchase gaps (days) plus each customer's censored gap up to the end."""
    tx = data.transactions
    end = pd.Timestamp(data.meta["observation_end"])
    days = (tx["timestamp"] - tx["timestamp"].iloc[0]).dt.total_seconds().to_numpy() / 86_400
    same = tx["customer_id"].to_numpy()[1:] == tx["customer_id"].to_numpy()[:-1]
    ev = pd.DataFrame({"customer_id": tx["customer_id"].to_numpy()[1:][same], "gap": np.diff(days)[same]})
    ev["censored"] = False
    last = tx.groupby("customer_id", sort=False)["timestamp"].max()
    ce = pd.DataFrame(
        {"customer_id": last.index, "gap": (end - last).dt.total_seconds().to_numpy() / 86_400, "censored": True}
    )
    return pd.concat([ev, ce], ignore_index=True)


# ------------------------------------------------------------------------------------------------------------
# contracts
# ------------------------------------------------------------------------------------------------------------
def test_tables_validate(data: S.SynthData, window) -> None:
    now = window[1]
    validate_table(data.transactions, "transactions", now=now)
    validate_table(data.customers, "customers", now=now)
    validate_table(data.campaign, "campaign", treatments=list(S.LEVELS), control=S.CONTROL, now=now)
    validate_table(data.applications, "applications", now=now)


def test_columns_ids_and_alignment(data: S.SynthData) -> None:
    for name in S.FILES:
        assert list(getattr(data, name).columns) == S.SCHEMAS[name].names, name
    assert len(data.customers) == N and data.customers["customer_id"].is_unique
    assert data.customers["customer_id"].iloc[0] == "c0000001"
    assert data.customers["customer_id"].str.fullmatch(r"c\d{7}").all()
    assert data.transactions["order_id"].is_unique
    assert data.transactions["timestamp"].dtype == "datetime64[ns]"
    assert (data.transactions["quantity"] >= 1).all() and (data.transactions["amount"] >= 0).all()
    assert set(data.transactions["category"]) <= set(S.CATEGORIES)
    # truth tables line up row by row with the tables they describe
    assert (data.truth_timing["customer_id"].to_numpy() == data.customers["customer_id"].to_numpy()).all()
    assert (data.truth_campaign["customer_id"].to_numpy() == data.campaign["customer_id"].to_numpy()).all()
    assert (data.truth_credit["application_id"].to_numpy() == data.applications["application_id"].to_numpy()).all()
    # customers table exposes no latent trait
    assert not {"shape", "scale", "p_drop", "spend_level"} & set(data.customers.columns)
    per_cust = data.transactions.groupby("customer_id").size()
    assert 8 <= per_cust.mean() <= 25
    assert 0.2 <= len(data.applications) / N <= 0.3
    m = data.meta
    assert m["levels"] == list(S.LEVELS) and m["control"] == "control"
    assert m["discounts"] == {"control": 0.0, "discount_05": 0.05, "discount_10": 0.10, "discount_15": 0.15}
    assert m["contact_cost"] == 0.10 and m["campaign_date"] == "2024-07-01" and m["n_customers"] == N
    assert m["rows"]["transactions"] == len(data.transactions)


def test_time_consistency(data: S.SynthData, window) -> None:
    start, end = window
    tx = data.transactions
    assert end == pd.Timestamp("2025-01-01")
    assert (tx["timestamp"] < end).all() and (tx["timestamp"] >= start).all()
    acq = tx["customer_id"].map(data.customers.set_index("customer_id")["acquired_at"])
    assert (tx["timestamp"] >= acq).all()
    first = tx.groupby("customer_id")["timestamp"].min()
    assert (first == data.customers.set_index("customer_id")["acquired_at"].loc[first.index]).all()
    # sorted by customer, then time
    assert tx["customer_id"].is_monotonic_increasing
    assert (tx.groupby("customer_id")["timestamp"].diff().dropna() >= pd.Timedelta(0)).all()
    acq_days = (data.customers["acquired_at"] - start).dt.days
    assert acq_days.max() < 365
    apps = data.applications
    app_acq = apps["customer_id"].map(data.customers.set_index("customer_id")["acquired_at"])
    assert (apps["applied_at"] >= app_acq).all() and (apps["applied_at"] < end).all()
    # purchases seen never exceed the true number before drop-out; alive_at_end says whether more would come
    tt = data.truth_timing.set_index("customer_id")
    seen = tx.groupby("customer_id").size().reindex(tt.index)
    assert (seen <= tt["n_purchases_total"]).all()
    assert ((seen < tt["n_purchases_total"]).astype(int) == tt["alive_at_end"]).all()


def test_other_window() -> None:
    d = S.generate(300, seed=3, start="2022-03-01", end="2022-12-31")
    end = pd.Timestamp("2023-01-01")
    assert d.meta["observation_end"] == end.isoformat()
    assert pd.Timestamp("2022-03-01") < pd.Timestamp(d.meta["campaign_date"]) < end
    assert (d.transactions["timestamp"] < end).all()
    validate_table(d.campaign, "campaign", treatments=list(S.LEVELS), control="control", now=end)


# ------------------------------------------------------------------------------------------------------------
# determinism, files
# ------------------------------------------------------------------------------------------------------------
def _bytes(paths: dict) -> dict:
    return {k: p.read_bytes() for k, p in paths.items()}


def test_deterministic_files(tmp_path) -> None:
    kw = {"chunk_size": 200}
    a = _bytes(S.synth_to_dir(500, 11, tmp_path / "a", **kw))
    b = _bytes(S.synth_to_dir(500, 11, tmp_path / "b", **kw))
    c = _bytes(S.synth_to_dir(500, 12, tmp_path / "c", **kw))
    assert set(a) == set(S.FILES) | {"meta"}
    assert a == b
    for k in S.FILES:
        assert a[k] != c[k], k
    w1 = _bytes(S.write(S.generate(500, 11, **kw), tmp_path / "w1"))
    w2 = _bytes(S.write(S.generate(500, 11, **kw), tmp_path / "w2"))
    assert w1 == w2
    assert (tmp_path / "a" / "truth" / "timing.parquet").exists() and (tmp_path / "a" / "meta.json").exists()


def test_streaming_matches_in_memory(tmp_path) -> None:
    mem = S.generate(700, seed=5, chunk_size=300)
    S.synth_to_dir(700, 5, tmp_path, chunk_size=300)
    disk = S.load_synth(tmp_path)
    for name in S.FILES:
        pd.testing.assert_frame_equal(getattr(mem, name), getattr(disk, name), check_dtype=True)
    assert disk.meta == mem.meta
    S.write(mem, tmp_path / "again")
    back = S.load_synth(tmp_path / "again")
    pd.testing.assert_frame_equal(back.transactions, mem.transactions)
    assert back.meta == mem.meta


# ------------------------------------------------------------------------------------------------------------
# ground truth: timing, categories, amounts
# ------------------------------------------------------------------------------------------------------------
def test_regular_customers_mean_gap(data: S.SynthData) -> None:
    g = _gaps(data)
    g = g[~g["censored"]]
    tt = data.truth_timing.set_index("customer_id")
    regular = tt.index[tt["shape"] > 4]
    sel = g[g["customer_id"].isin(regular)]
    ratio = sel["gap"].to_numpy() / tt.loc[sel["customer_id"], "mean_gap_days"].to_numpy()
    assert len(ratio) > 500
    assert abs(ratio.mean() - 1) < 0.05
    # and the coefficient of variation follows 1/sqrt(shape)
    cv2 = tt.loc[sel["customer_id"], "shape"].to_numpy()
    assert abs(np.mean((ratio - 1) ** 2 * cv2) - 1) < 0.2


def test_true_process_maximises_likelihood(data: S.SynthData) -> None:
    g = _gaps(data)
    tt = data.truth_timing.set_index("customer_id").loc[g["customer_id"]]
    gaps, cens = g["gap"].to_numpy(), g["censored"].to_numpy()
    ll = S.true_gap_logpdf(tt, gaps, cens).sum()
    assert np.isfinite(ll)
    for f_shape, f_scale, f_p in [
        (1, 1.3, 1),
        (1, 0.75, 1),
        (0.6, 1 / 0.6, 1),
        (1.6, 1 / 1.6, 1),
        (1, 1, 2),
        (1, 1, 0.5),
    ]:
        alt = {"shape": tt["shape"] * f_shape, "scale": tt["scale"] * f_scale, "p_drop": tt["p_drop"] * f_p}
        assert S.true_gap_logpdf(alt, gaps, cens).sum() < ll


def test_category_process(data: S.SynthData) -> None:
    tx = data.transactions
    tt = data.truth_timing.set_index("customer_id")
    cols = [f"p_cat_{c}" for c in S.CATEGORIES]
    assert np.allclose(tt[cols].sum(axis=1), 1.0)
    n = tx.groupby("customer_id").size()
    expected = (tt.loc[n.index, cols].mul(n, axis=0).sum() / n.sum()).to_numpy()
    observed = tx["category"].value_counts(normalize=True).reindex(S.CATEGORIES).fillna(0).to_numpy()
    assert np.abs(observed - expected).max() < 0.02
    # P(same category as the previous purchase) = r + (1 - r) sum_c p_c^2
    cid = tx["customer_id"].to_numpy()
    cat = tx["category"].to_numpy()
    pair = cid[1:] == cid[:-1]
    same = (cat[1:] == cat[:-1])[pair]
    who = tt.loc[cid[1:][pair]]
    p_same = who["p_repeat_cat"] + (1 - who["p_repeat_cat"]) * (who[cols] ** 2).sum(axis=1)
    se = math.sqrt((p_same * (1 - p_same)).sum()) / len(p_same)
    assert abs(same.mean() - p_same.mean()) < 4 * se


def test_amounts_follow_spend_level(data: S.SynthData) -> None:
    tx = data.transactions
    tt = data.truth_timing.set_index("customer_id")
    price = tx["category"].map(data.meta["category_price_factor"]).to_numpy()
    season = tx["timestamp"].dt.month.astype(str).map(data.meta["season_factor_by_month"]).to_numpy()
    expected = tt.loc[tx["customer_id"], "spend_level"].to_numpy() * price * season
    ratio = tx["amount"].to_numpy() / expected
    assert abs(ratio.mean() - 1) < 0.02
    dec = tx["timestamp"].dt.month == 12
    assert tx.loc[dec, "amount"].mean() > 1.15 * tx.loc[tx["timestamp"].dt.month.between(3, 10), "amount"].mean()


# ------------------------------------------------------------------------------------------------------------
# ground truth: campaign
# ------------------------------------------------------------------------------------------------------------
def test_campaign_matches_truth(data: S.SynthData) -> None:
    camp, tc = data.campaign, data.truth_campaign
    assert np.allclose(camp["propensity"], 0.25)
    for lv in S.LEVELS:
        m = (camp["treatment"] == lv).to_numpy()
        assert abs(m.mean() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(camp))
        p = tc.loc[m, f"p_conv_{lv}"].to_numpy()
        se = math.sqrt((p * (1 - p)).sum()) / m.sum()
        assert abs(camp.loc[m, "conversion"].mean() - p.mean()) < 4 * se, lv
        rev = camp.loc[m, "revenue"].to_numpy()
        assert abs(rev.mean() - tc.loc[m, f"exp_revenue_{lv}"].mean()) < 4 * rev.std() / math.sqrt(m.sum()), lv
        cost = camp.loc[m, "cost"].to_numpy()
        assert abs(cost.mean() - tc.loc[m, f"exp_cost_{lv}"].mean()) < 4 * cost.std() / math.sqrt(m.sum()) + 0.01
    ctrl = camp["treatment"] == "control"
    assert (camp.loc[ctrl, "cost"] == 0).all()
    assert (camp.loc[~ctrl, "cost"] >= 0.10 - 1e-9).all()
    assert (camp.loc[camp["conversion"] == 0, "revenue"] == 0).all()
    assert (camp.loc[camp["conversion"] == 1, "revenue"] > 0).all()
    assert (tc["exp_cost_control"] == 0).all()


def test_uplift_heterogeneity(data: S.SynthData) -> None:
    tc = data.truth_campaign
    for lv in S.LEVELS[1:]:
        u = tc[f"p_conv_{lv}"] - tc["p_conv_control"]
        assert u.mean() > 0.01, lv
        assert (u < -0.01).mean() > 0.01, lv  # some harmed (sleeping dogs)
        assert (u.abs() < 0.005).mean() > 0.1, lv  # some unaffected
        assert (u > 0.1).mean() > 0.05, lv  # some strongly helped
    prof = S.true_expected_profit(tc, data.meta)
    best = prof.idxmax(axis=1).value_counts(normalize=True)
    assert 0.3 < best.get("control", 0) < 0.95 and best.drop("control").sum() > 0.05


def test_campaign_profit_charges_the_discount_once(data: S.SynthData) -> None:
    """profit = margin x list-price basket - discount paid - contact; equal to the uplift policy's economics."""
    from offerlab.uplift.policy import level_economics

    tc, m, disc = data.truth_campaign, data.meta["margin"], data.meta["discounts"]
    prof = S.true_expected_profit(tc, data.meta)
    lv, d = "discount_15", disc["discount_15"]
    gross = tc[f"exp_revenue_{lv}"] / (1 - d)  # the basket at list price
    by_hand = m * gross - (gross - tc[f"exp_revenue_{lv}"]) - data.meta["contact_cost"]
    assert np.allclose(prof[lv], by_hand) and np.allclose(prof["control"], m * tc["exp_revenue_control"])
    levels = list(S.LEVELS)
    rev = tc[[f"exp_revenue_{v}" for v in levels]].to_numpy()
    inc, _ = level_economics(rev, np.array([disc[v] for v in levels]), m, data.meta["contact_cost"])
    assert np.allclose(inc, (prof[levels] - prof[["control"]].to_numpy()).to_numpy())


def test_uplift_learnable_from_behaviour(data: S.SynthData) -> None:
    """True uplift is largely explained by simple features built from pre-campaign transactions."""
    cdate = pd.Timestamp(data.meta["campaign_date"])
    tx = data.transactions[data.transactions["timestamp"] < cdate]
    grp = tx.groupby("customer_id")
    deal = tx["category"].isin(["beauty", "fashion", "electronics"])
    feats = pd.DataFrame(
        {
            "recency": (cdate - grp["timestamp"].max()).dt.total_seconds() / 86_400,
            "freq": grp.size(),
            "log_amount": np.log(grp["amount"].mean()),
            "deal_share": deal.groupby(tx["customer_id"]).mean(),
        }
    )
    feats["log_recency"] = np.log1p(feats["recency"])
    feats["log_freq"] = np.log(feats["freq"])
    cust = data.customers.set_index("customer_id").loc[feats.index]
    X = pd.concat([feats, pd.get_dummies(cust["region"], dtype=float)], axis=1)
    X = np.column_stack([X.to_numpy(dtype=float), feats["log_recency"] ** 2, feats["log_recency"] * feats["log_freq"]])
    tc = data.truth_campaign.set_index("customer_id").loc[feats.index]
    u = (tc["p_conv_discount_15"] - tc["p_conv_control"]).to_numpy()
    beta, *_ = np.linalg.lstsq(X, u, rcond=None)
    r2 = 1 - np.var(u - X @ beta) / np.var(u)
    assert r2 > 0.3


# ------------------------------------------------------------------------------------------------------------
# ground truth: credit
# ------------------------------------------------------------------------------------------------------------
def test_credit_matches_truth(data: S.SynthData) -> None:
    apps, pd_true = data.applications, data.truth_credit["true_pd"].to_numpy()
    assert 0.06 < pd_true.mean() < 0.2
    se = math.sqrt((pd_true * (1 - pd_true)).sum()) / len(pd_true)
    assert abs(apps["default"].mean() - pd_true.mean()) < 4 * se
    assert set(apps["term_months"]) <= {3, 6, 12, 24}
    assert set(apps["housing"]) <= {"own", "rent", "free"}
    assert (apps["requested_amount"] > 0).all() and (apps["income"] > 0).all()
    assert apps["application_id"].is_unique
    # oracle AUC: ranks of the true PD separate defaulters well
    r = pd.Series(pd_true).rank().to_numpy()
    y = apps["default"].to_numpy() == 1
    auc = (r[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())
    assert auc > 0.7


def test_credit_oracles_rank_and_calibrate(data: S.SynthData) -> None:
    tc, y = data.truth_credit, data.applications["default"].to_numpy()
    from sklearn.metrics import roc_auc_score

    aucs = {c: roc_auc_score(y, tc[c]) for c in ("true_pd", "true_pd_traits", "true_pd_observable")}
    # each oracle knows less than the one before: the noise, then the latent traits are averaged out
    assert aucs["true_pd"] > aucs["true_pd_traits"] > aucs["true_pd_observable"] > 0.65
    for c in ("true_pd_traits", "true_pd_observable"):  # conditional expectations keep the level
        p = tc[c].to_numpy()
        assert ((p > 0) & (p < 1)).all() and abs(p.mean() - tc["true_pd"].mean()) < 0.005


def test_posterior_oracle_is_calibrated_within_history_groups(data: S.SynthData) -> None:
    # E[default | observables] must match the default rate in any slice defined by observables
    tc, apps = data.truth_credit, data.applications
    p, y = tc["true_pd_observable"].to_numpy(), apps["default"].to_numpy()
    groups = pd.qcut(p, 4, labels=False)
    for g in range(4):
        sel = groups == g
        se = math.sqrt((p[sel] * (1 - p[sel])).sum()) / sel.sum()
        assert abs(y[sel].mean() - p[sel].mean()) < 4 * se + 1e-3


def test_logit_normal_mean_against_hand_values() -> None:
    # symmetric about logit 0; sd 0 gives the sigmoid; E[sigmoid(1 + N(0, 1))] = 0.6967 (numerical integral)
    out = S.logit_normal_mean(np.array([0.0, 2.0, 1.0, -1.0]), 0.0)
    assert np.allclose(out, [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1)), 1 / (1 + math.e)])
    assert S.logit_normal_mean(np.array([0.0]), 1.5)[0] == pytest.approx(0.5, abs=1e-12)
    assert S.logit_normal_mean(np.array([1.0]), 1.0)[0] == pytest.approx(0.69670, abs=1e-4)


# ------------------------------------------------------------------------------------------------------------
# oracle helpers against hand-computed values
# ------------------------------------------------------------------------------------------------------------
def test_prob_within_exponential_closed_form() -> None:
    truth = pd.DataFrame({"shape": [1.0, 1.0, 1.0], "scale": [10.0, 10.0, 20.0], "p_drop": [0.2, 0.0, 0.5]})
    got = S.true_prob_purchase_within(truth, np.array([5.0, 7.0, 0.0]), np.array([10.0, 10.0, 30.0]))
    # exponential: (1-p)(e^{-e/th} - e^{-(e+k)/th}) / (p + (1-p) e^{-e/th})
    want0 = 0.8 * (math.exp(-0.5) - math.exp(-1.5)) / (0.2 + 0.8 * math.exp(-0.5))
    assert got[0] == pytest.approx(want0, rel=1e-12)
    assert want0 == pytest.approx(0.447620, abs=1e-6)
    assert got[1] == pytest.approx(1 - math.exp(-1.0), rel=1e-12)  # p = 0: memoryless
    assert got[2] == pytest.approx(0.5 * (1 - math.exp(-1.5)), rel=1e-12)  # e = 0: (1-p) F(k)


def test_prob_within_gamma_shape2() -> None:
    truth = {"shape": np.array([2.0]), "scale": np.array([5.0]), "p_drop": np.array([0.1])}

    def sf(x: float) -> float:  # Gamma(2, th) survival: e^{-x/th} (1 + x/th)
        return math.exp(-x / 5) * (1 + x / 5)

    e, k = 4.0, 6.0
    want = 0.9 * (sf(e) - sf(e + k)) / (0.1 + 0.9 * sf(e))
    assert S.true_prob_purchase_within(truth, e, k)[0] == pytest.approx(want, rel=1e-10)
    # broadcasting over horizons; monotone in k and bounded by the alive probability
    ks = np.array([1.0, 10.0, 100.0, 1e4])
    p = S.true_prob_purchase_within(truth, np.full(4, e), ks)
    assert np.all(np.diff(p) > 0) and p[-1] == pytest.approx(0.9 * sf(e) / (0.1 + 0.9 * sf(e)), rel=1e-9)


def test_gap_logpdf_closed_form() -> None:
    truth = pd.DataFrame({"shape": [1.0, 1.0, 2.0, 2.0], "scale": [10.0, 10.0, 5.0, 5.0], "p_drop": [0.2] * 4})
    gaps = np.array([7.0, 7.0, 3.0, 3.0])
    cens = np.array([False, True, False, True])
    got = S.true_gap_logpdf(truth, gaps, cens)
    assert got[0] == pytest.approx(math.log(0.8) - math.log(10) - 0.7, rel=1e-12)
    assert got[1] == pytest.approx(math.log(0.2 + 0.8 * math.exp(-0.7)), rel=1e-12)
    assert got[2] == pytest.approx(math.log(0.8 * 3 / 25 * math.exp(-0.6)), rel=1e-12)
    assert got[3] == pytest.approx(math.log(0.2 + 0.8 * math.exp(-0.6) * 1.6), rel=1e-12)


def test_oracle_monte_carlo() -> None:
    """P(within k | elapsed e) from the helper matches a direct simulation of the process."""
    rng = np.random.default_rng(0)
    k, th, p, e, h = 0.8, 30.0, 0.1, 20.0, 15.0
    n = 400_000
    alive = rng.random(n) >= p
    gap = rng.gamma(k, th, n)
    survived = ~alive | (gap > e)  # no purchase for e days
    hit = alive & (gap > e) & (gap <= e + h)
    mc = hit.sum() / survived.sum()
    truth = {"shape": [k], "scale": [th], "p_drop": [p]}
    assert S.true_prob_purchase_within(truth, e, h)[0] == pytest.approx(mc, abs=0.005)
