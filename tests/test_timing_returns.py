"""Returns in the timing family: a fully returned order is no purchase event, a partly returned one counts at its net
amount, returns after the as-of date are not known yet, and returned lines lower the basket's item and category
scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlab.data.schema import DataValidationError
from offerlab.timing import basket as B
from offerlab.timing.returns import lines_net_of_returns, net_of_returns

TX = pd.DataFrame({
    "customer_id": ["a", "a", "a", "b"],
    "order_id": ["o1", "o2", "o3", "o4"],
    "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-01-15"]),
    "amount": [50.0, 80.0, 30.0, 20.0],
    "category": ["fashion", "home", "fashion", "books"],
})
RET = pd.DataFrame({
    "customer_id": ["a", "a", "a", "b"],
    "order_id": ["o1", "o1", "o2", "o4"],
    "returned_at": pd.to_datetime(["2024-01-05", "2024-01-09", "2024-02-10", "2024-04-20"]),
    "amount": [20.0, 30.0, 20.0, 20.0],
})


def test_full_return_is_no_purchase_partial_counts_net():
    out, report = net_of_returns(TX, RET, as_of="2024-03-31")
    assert out["order_id"].tolist() == ["o2", "o3", "o4"]  # o1: 20 + 30 = its 50, no purchase
    assert out.set_index("order_id")["amount"].to_dict() == {"o2": 60.0, "o3": 30.0, "o4": 20.0}
    # o4's return comes after the as-of date: not known yet, the order stands in full
    assert report == {"orders_returned": 1, "orders_netted": 1, "returns_after_as_of": 1}
    out_all, report_all = net_of_returns(TX, RET)
    assert "o4" not in set(out_all["order_id"]) and report_all["orders_returned"] == 2


def test_sequences_skip_returned_orders():
    from offerlab.data.sequences import build_sequences

    net, _ = net_of_returns(TX, RET, as_of="2024-03-31")
    seqs = build_sequences(net, pd.Timestamp("2024-03-31"), same_day="keep")
    lengths = dict(zip(seqs.customer_ids, np.diff(seqs.offsets), strict=True))
    assert lengths == {"a": 2, "b": 1}  # a's first order went back: its history starts on 2024-02-01
    assert np.asarray(seqs.log_amount)[:2] == pytest.approx(np.log1p([60.0, 30.0]))  # o2 at its net 80 - 20


def test_returns_need_order_ids_and_amounts():
    with pytest.raises(DataValidationError, match="'transactions', column 'order_id'"):
        net_of_returns(TX.drop(columns="order_id"), RET)
    with pytest.raises(DataValidationError, match="column 'amount'.*full return from a partial"):
        net_of_returns(TX.drop(columns="amount"), RET)
    assert net_of_returns(TX, RET.iloc[:0])[0] is TX


LINES = pd.DataFrame({
    "customer_id": ["a"] * 8,
    "order_id": ["o1", "o1", "o2", "o2", "o3", "o3", "o4", "o4"],
    "timestamp": pd.to_datetime(["2024-01-01"] * 2 + ["2024-02-01"] * 2 + ["2024-03-01"] * 2 + ["2024-04-01"] * 2),
    "item_id": ["shoe", "soap"] * 4,
    "quantity": [2, 1, 1, 1, 1, 1, 1, 1],
    "amount": [60.0, 5.0, 30.0, 5.0, 30.0, 5.0, 30.0, 5.0],
    "category": ["fashion", "personal_care"] * 4,
})


def test_returned_lines_come_off():
    ret = pd.DataFrame({"customer_id": ["a", "a", "a"], "order_id": ["o1", "o2", "o4"],
                        "returned_at": pd.to_datetime(["2024-01-04", "2024-02-05", "2024-05-01"]),
                        "amount": [30.0, 35.0, 30.0], "item_id": ["shoe", None, "shoe"], "quantity": [1, None, 1]})
    out = lines_net_of_returns(LINES, ret, as_of="2024-04-15")
    # o1: one of two shoes back (line at quantity 1, amount 30); o2 returned in full (35 = its amount);
    # o4's shoe comes back after the as-of date: kept
    assert list(zip(out["order_id"], out["item_id"], out["quantity"], out["amount"], strict=True)) == [
        ("o1", "shoe", 1, 30.0), ("o1", "soap", 1, 5.0), ("o3", "shoe", 1, 30.0), ("o3", "soap", 1, 5.0),
        ("o4", "shoe", 1, 30.0), ("o4", "soap", 1, 5.0)]


def _features(lines: pd.DataFrame) -> pd.DataFrame:
    L = B.Lines.from_frame(lines)
    cut = np.full(len(L.customers), B.days(pd.Series([pd.Timestamp("2024-05-01")]))[0])
    cand = B.candidates(L, cut)
    own = cand.explore == 0
    frame = pd.DataFrame(cand.x[own], columns=list(B.FEATURES))
    frame["item"] = L.items[cand.item[own]]
    return frame.set_index("item")


def test_returned_item_scores_lower_in_the_basket():
    # the shoes come back every time: three of four shoe lines returned
    ret = pd.DataFrame({"customer_id": ["a"] * 3, "order_id": ["o2", "o3", "o4"],
                        "returned_at": pd.to_datetime(["2024-02-03", "2024-03-03", "2024-04-03"]),
                        "amount": [30.0] * 3, "item_id": ["shoe"] * 3, "quantity": [1] * 3})
    before, after = _features(LINES), _features(lines_net_of_returns(LINES, ret, as_of="2024-05-01"))
    for col in ("log_n", "share_of_baskets", "category_share", "log_decayed"):
        assert after.loc["shoe", col] < before.loc["shoe", col], col
    assert after.loc["soap", "category_share"] > before.loc["soap", "category_share"]
