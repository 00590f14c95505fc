"""The replenishment basket in the service: request histories with items -> order lines -> `Basket` answers, and
the win-back offer of an overdue customer (the discount policy's level priced on the prepared basket).

A batch's requests may each have their own as-of instant: the basket model scores every customer at its own cut.
The loops here run over a bounded batch of requests and their purchases (a request, not a data set).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.serving.contracts import Basket, BasketItem, DiscountAnswer, TimingAnswer, WinbackOffer


def request_lines(reqs: list) -> pd.DataFrame | None:
    """The lines of the batch's purchases that carry items (customer_id = the request's position), or None."""
    rows = [(i, n, p.timestamp, it.item_id, it.item_name, it.quantity, it.amount)
            for i, r in enumerate(reqs) for n, p in enumerate(r.history) for it in (p.items or ())]
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["customer_id", "n", "timestamp", "item_id", "item_name", "quantity", "amount"])
    df["order_id"] = df["customer_id"].astype(str) + "-" + df["n"].astype(str)
    df["customer_id"] = df["customer_id"].astype(str)
    df["timestamp"] = pd.to_datetime(df["timestamp"])
    df = df.drop(columns="n")
    if df["amount"].isna().any():  # a line without its amount: the basket's values are not known
        df = df.drop(columns="amount")
    return df


def basket_answers(model, reqs: list, winback_p30: np.ndarray | None = None) -> list[Basket | None]:
    """Each request's basket (None where its history has no known item or nothing is likely within 30 days).
    `winback_p30`: per request, P(any purchase within 30 days) where the customer is overdue (nan elsewhere): its
    basket is the one of the purchase the win-back asks for (`offerlab.timing.basket.baskets`, given_purchase)."""
    from offerlab.data.lines import lines_from_rows
    from offerlab.timing.basket import baskets, days

    out: list[Basket | None] = [None] * len(reqs)
    rows = request_lines(reqs)
    if rows is None:
        return out
    rows = rows[model.items.get_indexer(rows["item_id"]) >= 0]
    if rows.empty:
        return out
    lines = lines_from_rows(rows, now=pd.Timestamp.max)
    L = model.lines(lines)
    as_of = pd.DatetimeIndex([pd.Timestamp(reqs[int(c)].answer_time()) for c in L.customers])
    cut = days(as_of) + 1e-9  # purchases at the as-of instant are known then
    given = None if winback_p30 is None else np.asarray(winback_p30, dtype=float)[L.customers.astype(int)]
    b = baskets(model.predict(L, cut), L.customers, L.items, (as_of.normalize() + pd.Timedelta(days=1)).to_numpy(),
                model.cfg.min_p, model.cfg.max_items, model.item_names, given_purchase=given)
    if b.empty:
        return out
    for cid, g in b.groupby("customer_id", sort=False):
        vals = g["expected_value"].to_numpy()
        out[int(cid)] = Basket(
            reminder_date=g["reminder_date"].iloc[0].date(),
            value=float(np.sum(vals)) if np.isfinite(vals).all() else None,
            items=[BasketItem(item_id=str(r.item_id), item_name=None if r.item_name is None else str(r.item_name),
                              quantity=int(r.quantity), p_30d=float(r.p_30d),
                              due_date=None if pd.isna(r.due_date) else r.due_date.date(),
                              expected_value=None if not np.isfinite(r.expected_value) else float(r.expected_value))
                   for r in g.itertuples(index=False)])
    return out


def winback_offer(timing: TimingAnswer | None, discount: DiscountAnswer) -> WinbackOffer | None:
    """For an overdue customer with a prepared basket: the policy's level, its rate and what it gives away on the
    basket, with the reason; None otherwise."""
    if timing is None or not timing.winback or timing.basket is None:
        return None
    basket = timing.basket
    overdue = f"overdue: P(no purchase in 90 days) {timing.p_no_purchase_90d:.0%}"
    if discount.level is None:
        return WinbackOffer(level=None, discount_rate=None, basket_value=basket.value, discount_amount=None,
                            expected_incremental_profit=0.0,
                            reason=f"{overdue}; no discount level pays for this customer (the policy chose none): "
                                   f"remind with the prepared basket of {len(basket.items)} item(s) only")
    rate = next((lv.discount_rate for lv in discount.levels if lv.level == discount.level), None)
    amount = rate * basket.value if rate is not None and basket.value is not None else None
    worth = f" worth {basket.value:.2f}" if basket.value is not None else ""
    gives = f", {amount:.2f} off" if amount is not None else ""
    return WinbackOffer(
        level=discount.level, discount_rate=rate, basket_value=basket.value, discount_amount=amount,
        expected_incremental_profit=discount.expected_incremental_profit,
        reason=f"{overdue}; the discount policy's level {discount.level}"
               + (f" ({rate:.0%})" if rate is not None else "")
               + f" on the prepared basket of {len(basket.items)} item(s){worth}{gives}; expected incremental "
                 f"profit {discount.expected_incremental_profit:.2f}")
