"""The replenishment basket: the lines contract, the synthetic item truth, the peers, the metrics, the candidates
(bounded, no leakage after the cut), the basket rule and the model against the simple baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlab.data import synth as S
from offerlab.data.lines import lines_from_rows, load_groceries, orders_from_lines
from offerlab.data.schema import DataValidationError, validate_table
from offerlab.timing import basket as B
from offerlab.timing import basket_bench as BB
from offerlab.timing import basket_peers as P
from serving_models import serving_models  # noqa: F401


@pytest.fixture(scope="module")
def data() -> S.SynthData:
    return S.generate(800, seed=3, chunk_size=400)


# ------------------------------------------------------------------------------------------------ synthetic items
def test_synth_lines_fill_every_order(data: S.SynthData) -> None:
    lines = validate_table(data.lines, "lines", now=pd.Timestamp(data.meta["observation_end"]))
    tx = data.transactions.set_index("order_id")
    assert set(lines["order_id"]) == set(tx.index)  # no order without a line, no line without an order
    n = lines.groupby("order_id").size()
    total = lines.groupby("order_id")["amount"].sum()
    assert (abs(total - tx.loc[total.index, "amount"]) <= 0.005 * n + 1e-9).all()  # split to the cent
    has_own_cat = lines.merge(tx[["category"]], left_on="order_id", right_index=True, suffixes=("", "_order"))
    per_order = (has_own_cat["category"] == has_own_cat["category_order"]).groupby(has_own_cat["order_id"]).any()
    assert per_order.all()  # every order holds its recorded category
    assert (lines["quantity"] >= 1).all()
    assert lines["item_id"].isin(S.ITEM_CATALOGUE["item_id"]).all()


def test_synth_item_truth_follows_its_cycle(data: S.SynthData) -> None:
    ti = data.truth_items
    lines = data.lines.merge(ti[["customer_id", "item_id", "unit_cycle_days"]], on=["customer_id", "item_id"])
    lines = lines.sort_values(["customer_id", "item_id", "timestamp"])
    same = (lines["customer_id"].eq(lines["customer_id"].shift()) & lines["item_id"].eq(lines["item_id"].shift()))
    gap = (lines["timestamp"] - lines["timestamp"].shift()).dt.total_seconds() / 86_400
    ratio = (gap / (lines["quantity"].shift() * lines["unit_cycle_days"]))[same]
    # the next purchase comes at the first order after the need (q x cycle x noise): hardly ever much earlier
    assert ratio.quantile(0.02) > np.exp(-2.5 * 0.25) * 0.95
    assert 1.0 < ratio.median() < 3.0
    bought = ti[ti["n_bought"] > 0]
    last = lines.groupby(["customer_id", "item_id"])["timestamp"].max()
    got = last.reindex(pd.MultiIndex.from_frame(bought[["customer_id", "item_id"]]))
    assert (got.to_numpy() >= bought["last_bought_at"].to_numpy()).all()
    assert (bought["next_need_at"] > bought["last_bought_at"]).all()
    assert (ti["stop_at"].isna().mean() > 0.7) and (ti["stop_at"].notna().any())


def test_synth_lines_same_seed_same_bytes(tmp_path) -> None:
    a = S.synth_to_dir(300, 5, tmp_path / "a", chunk_size=150)
    b = S.synth_to_dir(300, 5, tmp_path / "b", chunk_size=150)
    c = S.synth_to_dir(300, 6, tmp_path / "c", chunk_size=150)
    for k in ("lines", "truth_items"):
        assert a[k].read_bytes() == b[k].read_bytes()
        assert a[k].read_bytes() != c[k].read_bytes()


# ------------------------------------------------------------------------------------------------ contract
def _stranger(tmp_path, rows: list[tuple]) -> str:
    pd.DataFrame(rows, columns=["client", "when", "basket_ref", "sku", "label", "qty", "paid"]).to_csv(
        tmp_path / "orders.csv", index=False)
    (tmp_path / "spec.yaml").write_text(
        "name: shop\ntables:\n  transactions:\n    path: orders.csv\n    columns: {customer_id: client, timestamp: when,"
        " order_id: basket_ref, item_id: sku, item_name: label, quantity: qty, amount: paid}\n")
    return str(tmp_path / "spec.yaml")


def test_line_level_file_through_the_spec(tmp_path) -> None:
    from offerlab.data.spec import SpecData

    spec = _stranger(tmp_path, [
        ("u1", "2024-01-02", "A", "tea", "Green tea", 2, 6.0), ("u1", "2024-01-02", "A", "milk", "Milk", 1, 1.2),
        ("u1", "2024-01-02", "A", "tea", "Green tea", 1, 3.0), ("u2", "2024-01-05", "B", "soap", "Soap", 3, 4.5)])
    d = SpecData.load(spec)
    lines = d.table("lines")
    tx = d.table("transactions")
    assert len(lines) == 3  # the repeated tea line merged
    tea = lines[(lines["order_id"] == "A") & (lines["item_id"] == "tea")].iloc[0]
    assert tea["quantity"] == 3 and tea["amount"] == pytest.approx(9.0) and tea["item_name"] == "Green tea"
    assert tx.set_index("order_id").loc["A", "amount"] == pytest.approx(10.2)
    assert tx["order_id"].is_unique and len(tx) == 2


def test_line_refusals(tmp_path) -> None:
    from offerlab.data.spec import SpecData, SpecError

    spec = _stranger(tmp_path, [("u1", "2024-01-02", "A", "tea", "Tea", 0, 0.0)])
    with pytest.raises(DataValidationError, match=r"table 'lines', column 'quantity': a line must count at least one"):
        SpecData.load(spec).table("lines")
    spec = _stranger(tmp_path, [("u1", "2024-01-02", "A", "tea", "Tea", 1, 1.0), ("u2", "2024-01-02", "A", "milk",
                                                                                   "Milk", 1, 1.0)])
    with pytest.raises(DataValidationError, match=r"more than one customer.*order_id='A'"):
        SpecData.load(spec).table("lines")
    (tmp_path / "plain.yaml").write_text("name: p\ntables:\n  transactions:\n    path: orders.csv\n    columns: "
                                         "{customer_id: client, timestamp: when}\n")
    with pytest.raises(SpecError, match=r"tables\.transactions\.columns\.item_id"):
        SpecData.load(tmp_path / "plain.yaml").table("lines")


def test_groceries_loader() -> None:
    lines = load_groceries()
    assert lines["customer_id"].nunique() == 3_898 and lines["item_id"].nunique() == 167
    assert lines["order_id"].nunique() == 14_963  # a member's items on one date
    assert len(lines) == 38_006  # 38,765 rows, 759 repeats of an item within a member-day merged
    assert "quantity" not in lines.columns and "amount" not in lines.columns
    tx = orders_from_lines(lines)
    assert len(tx) == 14_963


def test_orders_without_ids_group_by_customer_and_time() -> None:
    rows = pd.DataFrame({"customer_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "x", "x"],
                         "timestamp": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-01", "2024-01-01"])})
    lines = lines_from_rows(rows)
    assert lines["order_id"].nunique() == 3


# ------------------------------------------------------------------------------------------------ peers and metrics
def _toy() -> B.Lines:
    df = pd.DataFrame({
        "customer_id": ["a"] * 6 + ["b"] * 2,
        "order_id": ["1", "1", "2", "3", "3", "4", "5", "6"],
        "item_id": ["x", "y", "x", "x", "z", "w", "y", "y"],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-08", "2024-01-15", "2024-01-15",
                                     "2024-01-22", "2024-01-03", "2024-01-10"]),
    })
    return B.Lines.from_frame(df)


def test_tifu_vector_by_hand() -> None:
    L = _toy()
    mask = L.t < B.days(pd.Series(pd.to_datetime(["2024-01-20"])))[0]  # a: baskets 1, 2, 3; b: 5, 6
    u = P.tifu_vectors(L, mask, group_size=2, r_b=0.9, r_g=0.7)
    a = L.customers.get_loc("a")
    x, y, z = (L.items.get_loc(k) for k in "xyz")
    # groups (1, 2) and (3): basket 1 weighs 0.9/2 and basket 2 1/2 within their group, that group 0.7/2, group 2 1/2
    assert u[a, x] == pytest.approx(0.7 / 2 * (0.9 / 2 + 1 / 2) + 1 / 2)
    assert u[a, y] == pytest.approx(0.7 / 2 * 0.9 / 2)
    assert u[a, z] == pytest.approx(1 / 2)


def test_p_topfreq_and_g_topfreq() -> None:
    L = _toy()
    mask = np.ones(len(L.t), bool)
    p = P.p_topfreq(L, mask)
    a, b = L.customers.get_loc("a"), L.customers.get_loc("b")
    x, y = L.items.get_loc("x"), L.items.get_loc("y")
    assert np.argmax(p[a]) == x and np.argmax(p[b]) == y
    g = P.g_topfreq(L, mask)
    assert np.argmax(g[a]) == np.argmax(g[b])  # one order for everyone


def test_ranking_metrics_by_hand() -> None:
    import scipy.sparse as sp

    truth = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 1]], float))
    top = np.array([[2, 1, 3, 0] + [-1] * 16, [0, 1, 2, 3] + [-1] * 16])
    m = BB.ranking_metrics(top, truth)
    assert m["recall_at_10"] == pytest.approx((1.0 + 1.0) / 2)
    idcg0 = 1 + 1 / np.log2(3)
    ndcg0 = (1 + 1 / np.log2(5)) / idcg0
    assert m["ndcg_at_10"] == pytest.approx((ndcg0 + 1 / np.log2(5)) / 2)
    assert m["phr_at_10"] == 1.0
    m3 = BB.ranking_metrics(top[:, :10].copy() * 0 + np.array([2, -1, -1, -1, -1, -1, -1, -1, -1, -1]), truth)
    assert m3["recall_at_10"] == pytest.approx(0.25)  # customer 0 half, customer 1 nothing


# ------------------------------------------------------------------------------------------------ candidates
def test_candidates_bounded_and_blind_to_the_future(data: S.SynthData) -> None:
    L = B.Lines.from_frame(data.lines)
    cut_day = B.days(pd.Series([pd.Timestamp(data.meta["campaign_date"])]))[0]
    cut = np.full(len(L.customers), cut_day)
    a = B.candidates(L, cut, max_own=5, n_popular=4, n_cobought=3)
    per = np.bincount(a.cust, minlength=len(L.customers))
    assert per.max() <= 5 + 4 + 3
    # the same history with every line at or after the cut changed: the same candidates and features
    future = L.t >= cut_day
    changed = data.lines.copy()
    moved = future[np.argsort(np.lexsort((changed["order_id"], changed["timestamp"], changed["customer_id"])))]
    changed.loc[moved, ["item_id", "category"]] = ["grocery_01", "grocery"]
    changed.loc[moved, "quantity"] *= 3
    L2 = B.Lines.from_frame(changed, items=L.items)
    b = B.candidates(L2, cut, max_own=5, n_popular=4, n_cobought=3)
    assert np.array_equal(a.cust, b.cust) and np.array_equal(a.item, b.item)
    np.testing.assert_allclose(a.x, b.x)


def test_due_day_and_reminder_rule() -> None:
    pw = np.array([[0.1, 0.3, 0.7, 0.9], [0.6, 0.8, 0.9, 0.95], [0.0, 0.1, 0.2, 0.4]])
    d = B.due_day(pw)
    assert d[0] == pytest.approx(14 + (0.5 - 0.3) / (0.7 - 0.3) * 16)
    assert d[1] == pytest.approx(0.5 / 0.6 * 7)
    assert np.isnan(d[2])
    assert B.cumulative_at(pw, 3.5)[0] == pytest.approx(0.05)
    cand = B.Candidates(np.array([0, 0, 0]), np.array([0, 1, 2]), np.zeros((3, 1)), np.zeros(3, bool),
                        np.array([2.0, 1.0, 1.0]), np.array([5.0, 10.0, 1.0]))
    cand.extra["p_within"] = pw
    out = B.baskets(cand, pd.Index(["c1"]), pd.Index(["tea", "milk", "soap"]), pd.Timestamp("2024-03-01"), min_p=0.5)
    assert list(out["item_id"]) == ["milk", "tea"]  # soap below min_p; ordered by P(within 30 d)
    # values 0.9 x 1 x 10 (milk) and 0.7 x 2 x 5 (tea): half of 16 is due by day 7 (milk 0.8 x 10 = 8 by day 14,
    # 0.6 x 10 + 0.1 x 10 = 7 at day 7, so the first day reaching 8)
    v = np.array([10.0, 10.0])
    days_ = np.arange(1, 31, dtype=float)
    due_value = [(B.cumulative_at(pw[[1, 0]], dd) * v).sum() for dd in days_]
    expected = days_[np.argmax(np.array(due_value) >= 0.5 * due_value[-1])]
    assert out["reminder_date"].iloc[0] == pd.Timestamp("2024-03-01") + pd.Timedelta(days=expected)
    assert out.set_index("item_id").loc["tea", "quantity"] == 2


@pytest.mark.slow
def test_model_beats_personal_frequency_on_synthetic() -> None:
    lines, truth = BB.load_lines("synth", customers=3000, seed=1)
    report = BB.run_bench(lines, truth, B.BasketConfig(epochs=3), models=("offerlab", "p_topfreq", "g_topfreq"))
    ours, ptop = report["models"]["offerlab"], report["models"]["p_topfreq"]
    assert ours["time_recall_7d"] > ptop["time_recall_7d"]
    assert ours["recall_at_10"] > ptop["recall_at_10"]
    assert report["oracle"]["recall_at_10"] >= ours["recall_at_10"] - 0.02


# ------------------------------------------------------------------------------------------------ served with timing
@pytest.mark.slow
def test_timing_pyfunc_answers_with_the_basket(data: S.SynthData, mlflow_store, tmp_path) -> None:
    import json

    import mlflow

    from offerlab.timing.basket import fit_and_score
    from offerlab.timing.pyfunc import log_pyfunc
    from offerlab.timing.train import BasketBlock, fit_timing, load_config
    from offerlab.tracking import start_run

    basket, metrics = fit_and_score(data.lines, "2024-10-31", "2024-12-31", BasketBlock(epochs=2).settings())
    assert 0.0 <= metrics["time_recall_30d"] <= 1.0 and metrics["customers_with_basket"] > 0
    cfg = load_config(None, {"training": {"seeds": [0], "max_epochs": 1, "validation_days": 0},
                             "model": {"hidden": 8, "n_components": 2, "category_dim": 4},
                             "data": {"same_day": "keep"}, "trainer": {"enable_progress_bar": False}})
    predictor, _ = fit_timing(data.transactions, "2024-12-31", cfg, progress=False)
    with start_run("timing", "basket-test") as run:
        log_pyfunc(predictor, tmp_path, basket=basket)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    counts = data.lines.groupby("customer_id").size()
    two = counts.index[counts.to_numpy().argsort()[-2:]]
    lines = data.lines[data.lines["customer_id"].isin(two)]
    out = model.predict(lines.drop(columns=["item_name"]), params={"as_of": "2024-12-31", "n_samples": 10})
    assert set(out["customer_id"]) == set(two)
    as_orders = orders_from_lines(lines_from_rows(lines))[["customer_id", "timestamp", "amount", "category"]]
    orders = model.predict(as_orders, params={"as_of": "2024-12-31", "n_samples": 10})
    np.testing.assert_allclose(out.sort_values("customer_id")["p_within_30d"],
                               orders.sort_values("customer_id")["p_within_30d"], rtol=1e-6)  # lines -> same orders
    assert "basket" not in orders.columns  # a history without items answers as before
    for _, row in out.iterrows():
        items = json.loads(row["basket"])
        assert len(items) <= basket.cfg.max_items
        for it in items:
            assert it["item_id"] in set(basket.items) and it["quantity"] >= 1 and it["p_30d"] >= basket.cfg.min_p
            assert it["due_date"] is None or it["due_date"] >= "2025-01-01"
        if items:
            assert "2025-01-01" <= row["reminder_date"] <= "2025-01-31"
            assert row["basket_value"] == pytest.approx(sum(it["expected_value"] for it in items))


# ------------------------------------------------------------------------------------------------ /offers
@pytest.mark.slow
def test_offers_answer_carries_the_basket_and_the_winback_offer(serving_models):  # noqa: F811
    import datetime as dt

    from serving.service import OffersLocal

    from offerlab.serving.contracts import OffersRequest

    svc = OffersLocal()
    assert svc.wait_ready(120)
    base = serving_models.offers_request()
    history = serving_models.history_with_items()
    last = max(dt.datetime.fromisoformat(p["timestamp"]) for p in history)
    soon = {**base, "history": history, "as_of": (last + dt.timedelta(days=1)).isoformat()}
    late = {**base, "history": history, "as_of": (last + dt.timedelta(days=400)).isoformat()}
    plain = {**base, "as_of": (last + dt.timedelta(days=1)).isoformat()}
    a_soon, a_late, a_plain = svc._compute([OffersRequest.model_validate(r) for r in (soon, late, plain)])
    b = a_soon.timing.basket
    assert b is not None and 1 <= len(b.items) <= 10
    known = {it["item_id"] for p in history for it in p["items"]}
    assert {i.item_id for i in b.items} <= known | set(serving_models.synth.lines["item_id"])
    day = (last + dt.timedelta(days=1)).date()
    assert day < b.reminder_date <= day + dt.timedelta(days=31)
    assert b.value == pytest.approx(sum(i.expected_value for i in b.items))
    assert a_plain.timing.basket is None and a_plain.winback_offer is None  # a history without items: as before
    assert a_late.timing.winback and a_late.winback_offer is not None and "overdue" in a_late.winback_offer.reason
    w = a_late.winback_offer
    if w.level is not None:
        assert w.discount_amount == pytest.approx(w.discount_rate * w.basket_value)
        assert w.level == a_late.discount.level
    assert not a_soon.timing.winback and a_soon.winback_offer is None


def test_offers_request_refuses_a_bad_item_line() -> None:
    from pydantic import ValidationError

    from offerlab.serving.contracts import Purchase

    with pytest.raises(ValidationError, match=r"items\.0\.quantity"):
        Purchase.model_validate({"timestamp": "2024-01-01T00:00:00", "amount": 3.0,
                                 "items": [{"item_id": "tea", "quantity": 0}]})
    with pytest.raises(ValidationError, match=r"items\.0\.item_id"):
        Purchase.model_validate({"timestamp": "2024-01-01T00:00:00", "amount": 3.0, "items": [{"quantity": 1}]})


@pytest.mark.slow
def test_batch_scoring_writes_the_basket_from_a_line_level_file(serving_models, tmp_path) -> None:  # noqa: F811
    import json

    from offerlab.serving.score import run_score

    lines = serving_models.synth.lines
    keep = lines["customer_id"].isin(lines["customer_id"].drop_duplicates().iloc[:40])
    lines[keep].to_parquet(tmp_path / "lines.parquet")
    orders_from_lines(lines_from_rows(lines[keep])).to_parquet(tmp_path / "orders.parquet")
    run_score("timing", tmp_path / "lines.parquet", tmp_path / "t.parquet", progress=False, n_samples=8,
              as_of="2024-12-31", chunk_size=15)
    serving_models.synth.customers.to_parquet(tmp_path / "customers.parquet")
    for src, out in (("lines", "o"), ("orders", "plain")):
        run_score("offers", tmp_path / f"{src}.parquet", tmp_path / f"{out}.parquet", progress=False, n_samples=8,
                  as_of="2024-12-31", customers=tmp_path / "customers.parquet")
    t = pd.read_parquet(tmp_path / "t.parquet")
    o = pd.read_parquet(tmp_path / "o.parquet")
    plain = pd.read_parquet(tmp_path / "plain.parquet")
    assert len(t) == 40 and {"reminder_date", "basket_value", "basket"} <= set(t.columns)
    assert "timing_basket" in o.columns and "timing_basket" not in plain.columns
    with_basket = t[t["basket"] != "[]"]
    assert len(with_basket) > 0
    for _, r in with_basket.iterrows():
        items = json.loads(r["basket"])
        assert "2025-01-01" <= r["reminder_date"] <= "2025-01-31"
        assert r["basket_value"] == pytest.approx(sum(i["expected_value"] for i in items))
    # the discount part saw the same orders either way (lines are summed to their orders)
    m = o.merge(plain, on="customer_id", suffixes=("", "_plain"))
    assert (m["discount_level"].fillna("-") == m["discount_level_plain"].fillna("-")).all()
    np.testing.assert_allclose(m["timing_p_within_30d"], m["timing_p_within_30d_plain"], rtol=1e-6)
