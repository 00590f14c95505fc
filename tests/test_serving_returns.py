"""Returns and repayments in a serving request: refused with the field named when they cannot be true, left out
after as_of, and a purchase returned in full is no purchase for the timing answer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offerlab.serving.contracts import OffersRequest, TimingRequest
from serving_models import serving_models  # noqa: F401

HISTORY = [
    {"timestamp": "2024-09-02T10:15:00", "amount": 42.5, "category": "grocery", "order_id": "o1"},
    {"timestamp": "2024-10-01T18:40:00", "amount": 18.9, "category": "household", "order_id": "o2",
     "items": [{"item_id": "soap", "quantity": 2, "amount": 8.0}, {"item_id": "mop", "quantity": 1, "amount": 10.9}]},
    {"timestamp": "2024-11-03T09:05:00", "amount": 57.0, "category": "grocery", "order_id": "o3"},
]


def _req(returns=(), repayments=(), as_of="2024-12-01T00:00:00", history=HISTORY):
    return {"customer_id": "c-1", "history": list(history), "as_of": as_of, "returns": list(returns),
            "repayments": list(repayments)}


def _loc_msg(body) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as e:
        TimingRequest.model_validate(body)
    err = e.value.errors()[0]
    return tuple(err["loc"]), err["msg"]


def test_impossible_returns_and_repayments_refused_naming_the_field():
    loc, msg = _loc_msg(_req([{"order_id": "o9", "returned_at": "2024-10-02T00:00:00", "amount": 1.0}]))
    assert loc == ("returns", 0, "order_id") and "no purchase of the history" in msg
    loc, msg = _loc_msg(_req([{"order_id": "o2", "returned_at": "2024-09-30T00:00:00", "amount": 1.0}]))
    assert loc == ("returns", 0, "returned_at") and "before its purchase" in msg
    loc, msg = _loc_msg(_req([{"order_id": "o2", "returned_at": "2024-10-02T00:00:00", "amount": 10.0},
                              {"order_id": "o2", "returned_at": "2024-10-03T00:00:00", "amount": 9.0}]))
    assert loc == ("returns", 1, "amount") and "add up to 19, above its amount 18.9" in msg
    dup = [HISTORY[0], {**HISTORY[2], "order_id": "o1"}]
    loc, msg = _loc_msg(_req([{"order_id": "o1", "returned_at": "2024-12-01T00:00:00", "amount": 1.0}], history=dup))
    assert loc == ("history", 1, "order_id") and "appears twice" in msg
    rep = {"credit_id": "k1", "issued_at": "2024-10-01T00:00:00", "due_date": "2024-09-01T00:00:00",
           "paid_at": None, "amount_due": 10.0, "amount_paid": 0.0}
    loc, msg = _loc_msg(_req(repayments=[rep]))
    assert loc == ("repayments", 0, "due_date") and "due before the credit was issued" in msg
    loc, msg = _loc_msg(_req(repayments=[{**rep, "due_date": "2024-11-01T00:00:00", "paid_at": "2024-09-15T00:00:00"}]))
    assert loc == ("repayments", 0, "paid_at") and "paid before the credit was issued" in msg
    with pytest.raises(ValidationError, match="amount"):  # a negative refund is no amount
        TimingRequest.model_validate(_req([{"order_id": "o2", "returned_at": "2024-10-02T00:00:00", "amount": -1.0}]))


def test_net_history_for_timing():
    r = TimingRequest.model_validate(_req([
        {"order_id": "o1", "returned_at": "2024-09-05T00:00:00", "amount": 42.5},  # o1 back in full
        {"order_id": "o2", "returned_at": "2024-10-04T00:00:00", "amount": 4.0, "item_id": "soap", "quantity": 1},
        {"order_id": "o3", "returned_at": "2024-12-05T00:00:00", "amount": 57.0},  # after as_of: not known yet
    ]))
    assert len(r.returns) == 2  # the one after as_of left out
    net = r.net_of_returns()
    assert [p.order_id for p in net.history] == ["o2", "o3"]
    assert net.history[0].amount == pytest.approx(14.9)
    assert [(it.item_id, it.quantity, it.amount) for it in net.history[0].items] == [("soap", 1, 4.0),
                                                                                     ("mop", 1, 10.9)]
    assert len(r.history) == 3  # the request itself is unchanged (discount and credit read the whole history)


def test_offers_example_and_contract_carry_returns():
    from offerlab.serving.contracts import CustomerHistory

    schema = CustomerHistory.model_json_schema()
    assert {"returns", "repayments"} <= set(schema["properties"])
    body = {**_req([{"order_id": "o3", "returned_at": "2024-11-10T00:00:00", "amount": 7.0}]),
            "attributes": {"region": "north"}}
    req = OffersRequest.model_validate(body)
    assert req.part(TimingRequest).returns == req.returns  # the timing part sees them


def test_timing_answer_skips_a_returned_purchase(serving_models):  # noqa: F811
    from offerlab.serving.models import TimingAdapter

    adapter = TimingAdapter.load()
    history = serving_models.history()
    with_ids = [{**p, "order_id": f"o{i}"} for i, p in enumerate(history)]
    last = with_ids[-1]
    returned = TimingRequest.model_validate({
        "customer_id": "c", "history": with_ids, "as_of": "2025-01-01T00:00:00",
        "returns": [{"order_id": last["order_id"], "returned_at": last["timestamp"], "amount": last["amount"]}]})
    without = TimingRequest.model_validate({"customer_id": "c", "history": with_ids[:-1], "as_of": "2025-01-01T00:00:00"})
    full = TimingRequest.model_validate({"customer_id": "c", "history": with_ids, "as_of": "2025-01-01T00:00:00"})
    a, b, c = adapter.predict([returned, without, full])
    assert a.p_buy_30d == pytest.approx(b.p_buy_30d, abs=1e-6) and a.next_date_median == b.next_date_median
    assert a.p_buy_30d != pytest.approx(c.p_buy_30d, abs=1e-6)
    only = TimingRequest.model_validate({
        "customer_id": "c", "history": with_ids[-1:], "as_of": "2025-01-01T00:00:00",
        "returns": [{"order_id": last["order_id"], "returned_at": last["timestamp"], "amount": last["amount"]}]})
    with pytest.raises(ValidationError, match="returned in full does not count"):
        adapter.predict([only])


def test_credit_columns_from_the_request_history():
    from offerlab.serving.contracts import CreditRequest
    from offerlab.serving.models import returns_repayment_columns

    history = [{**HISTORY[0], "payment_method": "card"}, {**HISTORY[1], "payment_method": "bnpl"},
               {**HISTORY[2], "payment_method": "bnpl"}]
    body = _req([{"order_id": "o2", "returned_at": "2024-10-04T00:00:00", "amount": 9.45}],
                [{"credit_id": "o2", "issued_at": "2024-10-01T18:40:00", "due_date": "2024-10-31T00:00:00",
                  "paid_at": "2024-11-12T00:00:00", "amount_due": 18.9, "amount_paid": 18.9},
                 {"credit_id": "o3", "issued_at": "2024-11-03T09:05:00", "due_date": "2024-12-03T00:00:00",
                  "paid_at": None, "amount_due": 57.0, "amount_paid": 0.0}], history=history)
    req = CreditRequest.model_validate({**body, "application": {"age": 40}})
    cols = ["ret_return_rate_count", "ret_return_rate_value", "ret_pay_share_bnpl", "ret_pay_share_card",
            "rep_late_6m", "rep_dpd_max", "rep_n_instalments", "rep_share_repaid", "age"]
    out = returns_repayment_columns([req], cols)
    assert set(out) == set(cols) - {"age"}  # application fields are the application's
    assert out["ret_return_rate_count"][0] == pytest.approx(1 / 3)
    assert out["ret_return_rate_value"][0] == pytest.approx(9.45 / (42.5 + 18.9 + 57.0))
    assert (out["ret_pay_share_bnpl"][0], out["ret_pay_share_card"][0]) == pytest.approx((2 / 3, 1 / 3))
    # o2's instalment was paid 12 days late; o3's is not due by as_of 2024-12-01
    assert (out["rep_late_6m"][0], out["rep_dpd_max"][0], out["rep_n_instalments"][0]) == (1.0, 12.0, 1.0)
    assert out["rep_share_repaid"][0] == pytest.approx(1.0)


def test_batch_timing_scores_purchases_net_of_returns(serving_models):  # noqa: F811
    import pandas as pd

    from offerlab.serving.score import load_model, score_timing

    tx = serving_models.synth.transactions
    top = tx["customer_id"].value_counts().index[:3]
    tx = tx[tx["customer_id"].isin(top)]
    last = tx.sort_values("timestamp").groupby("customer_id").tail(1)
    returns = pd.DataFrame({"customer_id": last["customer_id"], "order_id": last["order_id"],
                            "returned_at": last["timestamp"] + pd.Timedelta(days=2), "amount": last["amount"]})
    model, as_of = load_model("timing"), pd.Timestamp("2025-01-01")
    got = score_timing(model, tx, as_of, 16, returns).set_index("customer_id").sort_index()
    want = score_timing(model, tx.drop(index=last.index), as_of, 16).set_index("customer_id").sort_index()
    assert list(got.columns) == list(want.columns) and len(got) == 3
    pd.testing.assert_frame_equal(got.select_dtypes("number"), want.select_dtypes("number"))
