"""Returns, payment methods and repayments: the contract, the synthetic truth, the features as of a date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from offerlab.data import synth as S
from offerlab.data import synth_returns as R
from offerlab.data.returns import repayment_features, repayment_features_at, return_features
from offerlab.data.schema import DataValidationError, check_returns, validate_table
from offerlab.data.spec import SpecData, SpecError

T = pd.Timestamp


@pytest.fixture(scope="module")
def synth() -> S.SynthData:
    return S.generate(6000, seed=4, chunk_size=3000)


# ------------------------------------------------------------------------------------------------- hand tables
def hand_tx() -> pd.DataFrame:
    return validate_table(pd.DataFrame({
        "customer_id": ["A", "A", "A", "B"],
        "timestamp": [T("2024-01-01"), T("2024-02-01"), T("2024-04-01"), T("2024-01-10")],
        "amount": [100.0, 50.0, 80.0, 40.0],
        "order_id": ["o1", "o2", "o3", "o4"],
        "payment_method": ["card", "bnpl", "instalments", "card"],
    }), "transactions", now=T("2025-01-01"))


def hand_returns() -> pd.DataFrame:
    return validate_table(pd.DataFrame({
        "customer_id": ["A", "A", "A", "B"],
        "order_id": ["o1", "o1", "o2", "o4"],
        "returned_at": [T("2024-01-06"), T("2024-03-20"), T("2024-02-11"), T("2024-03-16")],
        "amount": [30.0, 20.0, 50.0, 40.0],
    }), "returns", now=T("2025-01-01"))


def hand_repayments() -> pd.DataFrame:
    return validate_table(pd.DataFrame({
        "customer_id": ["A", "A", "A", "A", "A"],
        "credit_id": ["c9", "c9", "c9", "o2", "o3"],
        "issued_at": [T("2023-09-01")] * 3 + [T("2024-02-01"), T("2024-04-01")],
        "due_date": [T("2023-10-01"), T("2024-01-30"), T("2024-03-30"), T("2024-03-02"), T("2024-05-01")],
        "paid_at": [T("2023-10-20"), T("2024-03-20"), pd.NaT, T("2024-03-10"), T("2024-04-20")],
        "amount_due": [10.0, 10.0, 10.0, 50.0, 80.0],
        "amount_paid": [10.0, 10.0, 0.0, 50.0, 80.0],
    }), "repayments", now=T("2025-01-01"))


# ---------------------------------------------------------------------------------------------------- refusals
def test_returns_refused_with_the_row_named() -> None:
    tx, ret = hand_tx(), hand_returns()
    check_returns(ret, tx)
    bad = ret.copy()
    bad.loc[2, "returned_at"] = T("2024-01-15")  # o2 was bought on 2024-02-01
    with pytest.raises(DataValidationError, match=r"table 'returns', column 'returned_at': return before its "
                       r"purchase .*row 2: order_id='o2'"):
        check_returns(bad, tx)
    bad = ret.copy()
    bad.loc[3, "order_id"] = "o99"
    with pytest.raises(DataValidationError, match=r"column 'order_id': order not in transactions .*row 3: "
                       r"order_id='o99'"):
        check_returns(bad, tx)
    bad = ret.copy()
    bad.loc[1, "amount"] = 75.0  # 30 + 75 > 100
    with pytest.raises(DataValidationError, match=r"column 'amount': returned above the amount bought \(order total "
                       r"100.00, returned 105.00 in all\) \(example: row 0: order_id='o1'\)"):
        check_returns(bad, tx)
    bad = ret.copy()
    bad.loc[3, "customer_id"] = "A"
    with pytest.raises(DataValidationError, match="the order belongs to another customer"):
        check_returns(bad, tx)
    with pytest.raises(DataValidationError, match=r"table 'returns', column 'amount': negative value"):
        validate_table(ret.assign(amount=[-1.0, 1.0, 1.0, 1.0]), "returns", now=T("2025-01-01"))


def test_repayments_refused_with_the_row_named() -> None:
    rep = hand_repayments()
    raw = rep.copy()
    raw.loc[3, "paid_at"] = T("2024-01-20")  # credit o2 started 2024-02-01
    with pytest.raises(DataValidationError, match=r"table 'repayments', column 'paid_at': paid before the credit "
                       r"started \(issued_at\) \(example: row 3: credit_id='o2'\)"):
        validate_table(raw, "repayments", now=T("2025-01-01"))
    raw = rep.copy()
    raw.loc[4, "due_date"] = T("2024-03-01")
    with pytest.raises(DataValidationError, match=r"column 'due_date': due date before the credit started .*row 4"):
        validate_table(raw, "repayments", now=T("2025-01-01"))
    raw = rep.copy()
    raw.loc[0, "issued_at"] = pd.NaT
    with pytest.raises(DataValidationError, match=r"column 'issued_at': missing timestamp"):
        validate_table(raw, "repayments", now=T("2025-01-01"))
    # a due date after today is a schedule, not an error; a blank paid_at is "not paid"
    future = rep.assign(due_date=rep["due_date"] + pd.Timedelta(days=400))
    assert validate_table(future, "repayments", now=T("2024-06-01"))["paid_at"].isna().sum() == 1


# ---------------------------------------------------------------------------------------- features, no leakage
def test_return_features_as_of_hand_values() -> None:
    f = return_features(hand_tx(), hand_returns(), "2024-03-15")
    a, b = f.loc["A"], f.loc["B"]
    # A: o1, o2 by then (o3 later); returns of o1 on 01-06 (30) and o2 on 02-11 (50); o1's 20 on 03-20 is after
    assert (a["n_orders"], a["spend"], a["returned_value"], a["net_spend"]) == (2, 150.0, 80.0, 70.0)
    assert a["return_rate_count"] == 1.0 and a["return_rate_value"] == pytest.approx(80 / 150)
    assert a["n_returns"] == 2 and a["days_to_return_mean"] == pytest.approx((5 + 10) / 2)
    assert (a["pay_share_card"], a["pay_share_bnpl"], a["pay_share_instalments"], a["instalment_share"]) == (
        0.5, 0.5, 0.0, 0.5)
    # B's return on 03-16 is after as_of: nothing returned yet
    assert (b["n_orders"], b["returned_value"], b["return_rate_count"], b["pay_share_card"]) == (1, 0.0, 0.0, 1.0)
    assert np.isnan(b["days_to_return_mean"])
    later = return_features(hand_tx(), hand_returns(), "2024-04-30").loc["A"]
    assert (later["n_orders"], later["returned_value"], later["n_returns"]) == (3, 100.0, 3)
    assert later["return_rate_count"] == pytest.approx(2 / 3)


def test_repayment_features_as_of_hand_values() -> None:
    g = repayment_features(hand_repayments(), "2024-03-15").loc["A"]
    # c9 (issued 2023-09-01) and o2 by then; o3 starts later. Due by then: 10-01 (paid 19 days late), 01-30
    # (paid 03-20: after as_of, so 45 days past due and unpaid then), 03-02 (paid 8 days late); 03-30 not due yet
    assert (g["n_credits"], g["n_instalments"], g["dpd_max"], g["n_late"]) == (2, 3, 45, 3)
    assert g["share_repaid"] == pytest.approx(60 / 70)
    assert (g["late_3m"], g["late_6m"], g["late_12m"]) == (2, 3, 3)  # 10-01 is more than 90 days back
    assert (g["overdue_now"], g["amount_overdue"]) == (1, 10.0)
    h = repayment_features(hand_repayments(), "2024-03-25").loc["A"]
    assert (h["dpd_max"], h["overdue_now"], h["share_repaid"]) == (50, 0, 1.0)  # 01-30 paid on 03-20
    # strictly before: on the due date nothing is late yet; a day later it is (unpaid then)
    anchors = pd.DataFrame({"customer_id": ["A", "A", "Z"], "as_of": [T("2023-10-01"), T("2023-10-02"),
                                                                       T("2024-01-01")]})
    at = repayment_features_at(hand_repayments(), anchors, inclusive=False)
    assert at["n_late"].tolist() == [0, 1, 0] and at["n_instalments"].tolist() == [0, 1, 0]
    assert at["dpd_max"].tolist() == [0, 1, 0] and np.isnan(at["share_repaid"].iloc[2])


def test_nothing_after_as_of_changes_the_features(synth) -> None:
    as_of = T("2024-03-01")
    tx, ret, rep = synth.transactions, synth.returns, synth.repayments
    full_r, full_p = return_features(tx, ret, as_of), repayment_features(rep, as_of)
    cut_tx, cut_ret = tx[tx["timestamp"] <= as_of], ret[ret["returned_at"] <= as_of]
    # what the repayments showed at as_of: later payments unknown, later credits absent
    cut_rep = rep[rep["issued_at"] <= as_of].copy()
    later = cut_rep["paid_at"] > as_of
    cut_rep.loc[later, "paid_at"] = pd.NaT
    cut_rep.loc[later, "amount_paid"] = 0.0
    pd.testing.assert_frame_equal(full_r, return_features(cut_tx, cut_ret, as_of))
    pd.testing.assert_frame_equal(full_p, repayment_features(cut_rep, as_of))
    assert full_r["returned_value"].sum() > 0 and full_p["n_late"].sum() > 0


# ---------------------------------------------------------------------------------------------- synthetic truth
def test_synthetic_tables_validate_and_link(synth) -> None:
    now = T(synth.meta["observation_end"])
    tx = validate_table(synth.transactions, "transactions", now=now)
    check_returns(validate_table(synth.returns, "returns", now=now), tx)
    validate_table(synth.repayments, "repayments", now=now)
    assert set(tx["payment_method"]) == set(R.METHODS)
    for name in ("returns", "repayments", "truth_returns"):
        assert list(getattr(synth, name).columns) == S.SCHEMAS[name].names
    assert (synth.campaign["returned_revenue"] <= synth.campaign["revenue"]).all()
    assert (synth.campaign["returned_revenue"] >= 0).all()
    assert ((synth.campaign["returned_revenue"] > 0) <= (synth.campaign["conversion"] == 1)).all()
    credit = tx.loc[tx["payment_method"].isin(["instalments", "bnpl"]), "order_id"]
    assert set(synth.repayments["credit_id"]) == set(credit)
    due = synth.repayments.groupby("credit_id")["amount_due"].sum()
    np.testing.assert_allclose(due.to_numpy(), tx.set_index("order_id").loc[due.index, "amount"], atol=0.011)
    assert synth.meta["version"] == S.GENERATOR_VERSION == 4


def test_returns_follow_category_discount_and_propensity(synth) -> None:
    tx, ret = synth.transactions, synth.returns
    returned = tx["order_id"].isin(ret["order_id"])
    by_cat = returned.groupby(tx["category"]).mean()
    assert by_cat["fashion"] > 2 * by_cat["grocery"] and by_cat["electronics"] > by_cat["household"]
    prop = synth.truth_returns.set_index("customer_id")["return_propensity"]
    rate = returned.groupby(tx["customer_id"]).mean()
    assert np.corrcoef(prop.loc[rate.index], rate)[0, 1] > 0.4
    # the campaign: the deeper the discount, the more of the revenue comes back, most of all for the prone
    tc = synth.truth_campaign
    share = [tc[f"exp_returned_{lv}"].sum() / tc[f"exp_revenue_{lv}"].sum() for lv in S.LEVELS]
    assert np.all(np.diff(share) > 0) and share[-1] > 2 * share[0]
    prone = prop.loc[tc["customer_id"]].to_numpy() > prop.median()
    extra = (tc["exp_returned_discount_15"] / tc["exp_revenue_discount_15"]
             - tc["exp_returned_control"] / tc["exp_revenue_control"]).to_numpy()
    assert extra[prone].mean() > 1.5 * extra[~prone].mean()
    # observed campaign returns match the truth of the arm each customer got
    camp = synth.campaign
    arm = pd.Categorical(camp["treatment"], categories=S.LEVELS).codes
    expected = tc[[f"exp_returned_{lv}" for lv in S.LEVELS]].to_numpy()[np.arange(len(camp)), arm]
    assert abs(camp["returned_revenue"].sum() / expected.sum() - 1) < 0.2


def test_repayment_discipline_tied_to_default_risk(synth) -> None:
    from offerlab.credit.metrics import auc

    apps, tc = synth.applications, synth.truth_credit
    disc = synth.truth_returns.set_index("customer_id")["repay_discipline"].loc[apps["customer_id"]].to_numpy()
    true_pd = tc["true_pd"].to_numpy()
    assert np.corrcoef(disc, np.log(true_pd))[0, 1] < -0.25
    y = apps["default"].to_numpy()
    assert auc(y, tc["true_pd_observable_payments"].to_numpy()) > auc(y, tc["true_pd_observable"].to_numpy())
    # the posterior stays calibrated: mean PD close to the default rate
    assert abs(tc["true_pd_observable_payments"].mean() - y.mean()) < 0.02


def test_noise_posterior_matches_a_fine_grid() -> None:
    n_due, n_late = np.array([0.0, 4.0, 20.0]), np.array([0.0, 3.0, 1.0])
    nodes, w = R.noise_posterior(n_due, n_late)
    x = np.linspace(-8, 8, 20001)
    z = R.LATE_BASE + R.LATE_SLOPE * x
    for i in range(3):
        log_p = -0.5 * x**2 - n_late[i] * np.logaddexp(0, -z) - (n_due[i] - n_late[i]) * np.logaddexp(0, z)
        p = np.exp(log_p - log_p.max())
        mean = (x * p).sum() / p.sum()
        assert (nodes[i] * w[i]).sum() == pytest.approx(mean, abs=1e-4)
        assert (nodes[i] ** 2 * w[i]).sum() == pytest.approx((x**2 * p).sum() / p.sum(), abs=1e-4)


def test_same_seed_same_bytes_and_the_other_tables_untouched(tmp_path) -> None:
    a = S.synth_to_dir(400, 21, tmp_path / "a", chunk_size=200)
    b = S.synth_to_dir(400, 21, tmp_path / "b", chunk_size=200)
    for name in ("returns", "repayments", "truth_returns", "transactions", "campaign", "truth_credit"):
        assert a[name].read_bytes() == b[name].read_bytes(), name
    assert pq.read_table(a["returns"]).num_rows > 0
    # the returns stream is its own: without it, every pre-existing column is the same
    w = S._window("2023-01-01", "2024-12-31")
    ss = np.random.SeedSequence(21).spawn(2)[0]
    with_r = S._chunk(np.random.default_rng(ss), 0, 200, w, "randomised", None, R.returns_rng(21, 0))
    without = S._chunk(np.random.default_rng(ss), 0, 200, w, "randomised", None, None)
    for name, tab in without.items():
        assert with_r[name].select(tab.column_names).equals(tab), name
    assert set(with_r["transactions"].column_names) - set(without["transactions"].column_names) == {"payment_method"}


# -------------------------------------------------------------------------------------------- a user's files
def _user_files(tmp_path, negative_lines: bool):
    tx = pd.DataFrame({"kunde": ["A", "A", "B"], "zeit": ["2024-01-01", "2024-02-01", "2024-01-10"],
                       "betrag": [100.0, 50.0, 40.0], "bestellung": ["o1", "o2", "o4"],
                       "zahlart": ["card", "bnpl", "card"]})
    ret = pd.DataFrame({"kunde": ["A", "A"], "bestellung": ["o1", "o2"], "zurueck_am": ["2024-01-06", "2024-02-11"],
                        "erstattet": [30.0, 50.0], "grund": ["size_fit", "damaged"]})
    if negative_lines:  # the same returns booked as negative lines of the purchase file
        neg = ret.rename(columns={"zurueck_am": "zeit", "erstattet": "betrag"}).drop(columns="grund")
        tx = pd.concat([tx, neg.assign(betrag=-neg["betrag"], zahlart="card")], ignore_index=True)
    tx.to_csv(tmp_path / "kaeufe.csv", index=False)
    ret.to_csv(tmp_path / "retouren.csv", index=False)
    pd.DataFrame({"kunde": ["A"], "kredit": ["o2"], "start": ["2024-02-01"], "faellig": ["2024-03-02"],
                  "bezahlt": [None], "soll": [50.0], "ist": [0.0]}).to_csv(tmp_path / "raten.csv", index=False)
    tables = {"transactions": {"path": "kaeufe.csv", "columns": {
        "customer_id": "kunde", "timestamp": "zeit", "amount": "betrag", "order_id": "bestellung",
        "payment_method": "zahlart"}},
        "repayments": {"path": "raten.csv", "columns": {
            "customer_id": "kunde", "credit_id": "kredit", "issued_at": "start", "due_date": "faellig",
            "paid_at": "bezahlt", "amount_due": "soll", "amount_paid": "ist"}}}
    if negative_lines:
        tables["transactions"]["returns"] = "negative_lines"
    else:
        tables["returns"] = {"path": "retouren.csv", "columns": {
            "customer_id": "kunde", "order_id": "bestellung", "returned_at": "zurueck_am", "amount": "erstattet",
            "reason": "grund"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "shop", "tables": tables}))
    return path


@pytest.mark.parametrize("negative_lines", [False, True])
def test_a_users_files_through_the_data_spec(tmp_path, negative_lines) -> None:
    spec = SpecData.load(_user_files(tmp_path, negative_lines))
    assert spec.has("returns") and spec.has("repayments")
    tx, ret, rep = spec.table("transactions"), spec.table("returns"), spec.table("repayments")
    assert len(tx) == 3 and (tx["amount"] > 0).all() and tx["payment_method"].tolist() == ["card", "bnpl", "card"]
    assert ret["amount"].tolist() == [30.0, 50.0] and ret["returned_at"].tolist() == [T("2024-01-06"),
                                                                                       T("2024-02-11")]
    assert rep["paid_at"].isna().all()
    f = return_features(tx, ret, "2024-03-15").loc["A"]
    assert (f["net_spend"], f["return_rate_count"]) == (70.0, 1.0)
    g = repayment_features(rep, "2024-03-15").loc["A"]
    assert (g["dpd_max"], g["overdue_now"], g["late_3m"]) == (13, 1, 1)


def test_spec_refusals_for_returns(tmp_path) -> None:
    path = _user_files(tmp_path, negative_lines=False)
    raw = yaml.safe_load(path.read_text())
    raw["tables"]["transactions"]["returns"] = "negative_lines"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"key 'tables.returns': given twice"):
        SpecData.load(path).table("returns")
    pd.DataFrame({"kunde": ["A"], "bestellung": ["o2"], "zurueck_am": ["2024-01-20"], "erstattet": [5.0],
                  "grund": ["x"]}).to_csv(tmp_path / "retouren.csv", index=False)
    del raw["tables"]["transactions"]["returns"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataValidationError, match=r"return before its purchase .*order_id='o2'"):
        SpecData.load(path).table("returns")
    del raw["tables"]["returns"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"key 'tables.returns': this command needs returns"):
        SpecData.load(path).table("returns")
