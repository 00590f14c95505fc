"""Returns in the purchase history: a returned order is not a purchase.

For the sequence model (`net_of_returns`, on the `transactions` table of orders): an order whose returns add up
to its whole amount is no purchase event; a partly returned order still is one, at its net amount (every row of the
order scaled by the share kept). For the basket (`lines_net_of_returns`, on order lines): a return naming its item
takes that item's quantity off the line (a line with nothing left is no purchase of the item), an order returned in
full loses all its lines; so an item or category that keeps coming back scores lower. Only returns made by `as_of`
count: a return after it is not known yet (nothing after the as-of date leaks in).

Returns are the canonical `returns` table (customer_id, order_id, returned_at, amount, optional item_id, quantity),
validated by the data contract; `order_id` links them to the transactions.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError

log = logging.getLogger(__name__)
CENT = 0.005  # returns adding up to the order amount within half a cent return it in full


def _known(returns: pd.DataFrame, as_of: pd.Timestamp | None) -> pd.DataFrame:
    if as_of is None or returns.empty:
        return returns
    return returns[pd.to_datetime(returns["returned_at"]) <= pd.Timestamp(as_of)]


def _need_order_id(frame: pd.DataFrame, table: str) -> None:
    if "order_id" not in frame.columns:
        raise DataValidationError(table, "order_id", "returns are linked to purchases by order_id: map the "
                                  "column in the data spec (tables.transactions.columns.order_id)")


def net_of_returns(transactions: pd.DataFrame, returns: pd.DataFrame | None, as_of: str | pd.Timestamp | None = None
                   ) -> tuple[pd.DataFrame, dict]:
    """Transactions without the orders returned in full by `as_of`, partly returned ones at their net amount; and
    counts of what was done (orders returned in full, orders netted, returns not yet known at `as_of`)."""
    if returns is None or returns.empty:
        return transactions, {"orders_returned": 0, "orders_netted": 0, "returns_after_as_of": 0}
    _need_order_id(transactions, "transactions")
    if "amount" not in transactions.columns:
        raise DataValidationError("transactions", "amount", "returns need the orders' amounts to tell a full "
                                  "return from a partial one")
    known = _known(returns, None if as_of is None else pd.Timestamp(as_of))
    back = known.groupby(known["order_id"].astype(str), sort=False)["amount"].sum()
    oid = transactions["order_id"].astype(str)
    amount = transactions["amount"].to_numpy(dtype=float)
    total = pd.Series(amount).groupby(oid.to_numpy(), sort=False).transform("sum").to_numpy()
    ret = oid.map(back).fillna(0.0).to_numpy(dtype=float)
    full = (ret > 0) & (ret >= total - CENT)
    part = (ret > 0) & ~full
    kept = np.where(part, 1.0 - ret / np.where(total > 0, total, 1.0), 1.0)
    out = transactions.loc[~full].copy()
    out["amount"] = (amount * kept)[~full]
    report = {"orders_returned": int(oid[full].nunique()), "orders_netted": int(oid[part].nunique()),
              "returns_after_as_of": int(len(returns) - len(known))}
    log.info("returns: %d orders returned in full are no purchase, %d partly returned at their net amount "
             "(%d returns after the as-of date not counted)", report["orders_returned"], report["orders_netted"],
             report["returns_after_as_of"])
    return out, report


def lines_net_of_returns(lines: pd.DataFrame, returns: pd.DataFrame | None, as_of: str | pd.Timestamp | None = None
                         ) -> pd.DataFrame:
    """Order lines less what came back by `as_of`: a return with an item_id takes its quantity (all of the line
    without a quantity) off that item's line of the order; an order returned in full (its returns add up to its
    amount) loses every line. Lines with nothing left are dropped; amounts follow the quantity kept."""
    if returns is None or returns.empty:
        return lines
    _need_order_id(lines, "lines")
    known = _known(returns, None if as_of is None else pd.Timestamp(as_of))
    oid = lines["order_id"].astype(str).to_numpy()
    drop = np.zeros(len(lines), dtype=bool)
    qty = lines["quantity"].to_numpy(dtype=float) if "quantity" in lines.columns else np.ones(len(lines))
    left = qty.copy()
    if "amount" in lines.columns and "amount" in known.columns:
        total = pd.Series(lines["amount"].to_numpy(dtype=float)).groupby(oid, sort=False).transform("sum").to_numpy()
        back = known.groupby(known["order_id"].astype(str), sort=False)["amount"].sum()
        ret = pd.Series(oid).map(back).fillna(0.0).to_numpy(dtype=float)
        drop |= (ret > 0) & (ret >= total - CENT)
    if "item_id" in known.columns:
        by_item = known[known["item_id"].notna()]
        if len(by_item):
            rq = (by_item["quantity"].to_numpy(dtype=float) if "quantity" in by_item.columns
                  else np.full(len(by_item), np.inf))
            rq = np.where(np.isnan(rq), np.inf, rq)  # no quantity: the whole line came back
            key = pd.Series(rq).groupby([by_item["order_id"].astype(str).to_numpy(),
                                         by_item["item_id"].astype(str).to_numpy()], sort=False).sum()
            line_key = pd.MultiIndex.from_arrays([oid, lines["item_id"].astype(str).to_numpy()])
            taken = key.reindex(line_key).fillna(0.0).to_numpy()
            left = np.clip(qty - taken, 0.0, None)
            drop |= left <= 0
    out = lines.loc[~drop].copy()
    if "quantity" in lines.columns:
        kept = left[~drop]
        if "amount" in out.columns:
            out["amount"] = out["amount"].to_numpy(dtype=float) * kept / np.maximum(qty[~drop], 1e-12)
        out["quantity"] = kept.astype(lines["quantity"].dtype, copy=False)
    return out
