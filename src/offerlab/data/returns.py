"""Return and repayment features as of a date: nothing recorded after it leaks in.

`return_features(transactions, returns, as_of)`: per customer with an order by `as_of`, from the orders by then and
the returns made by then (a return recorded after `as_of` does not count, even of an earlier order):

- n_orders, spend (sum of order amounts), returned_value (sum refunded), net_spend = spend - returned_value;
- return_rate_count = orders with a return / orders; return_rate_value = returned_value / spend;
- n_returns, days_to_return_mean (days from the purchase to each return);
- pay_share_<method> (share of orders paid by each payment method, when transactions carry `payment_method`)
  and instalment_share (instalments and buy-now-pay-later, `schema.INSTALMENT_METHODS`).

`repayment_features(repayments, as_of)`: per customer with an instalment credit started by `as_of`, from what the
repayments showed at `as_of` (an instalment paid after `as_of` is unpaid then; one due after `as_of` is not late):

- n_credits, n_instalments (due by as_of), share_repaid (paid by as_of / due by as_of, over those due);
- days past due per instalment due by as_of: (paid date, or as_of if unpaid then) - due date, in whole days;
  dpd_max, n_late (dpd >= 1), late_3m / late_6m / late_12m (late ones due in the last 90 / 180 / 365 days),
  overdue_now (unpaid and past due at as_of), amount_overdue.

The `_at` variants take anchors (customer_id, as_of per row: an application's applied_at) and return one row per
anchor (same index), NaN rates where nothing was there to count. `inclusive=True`: an event at exactly as_of
counts (as `offerlab.data.features`); credit uses `inclusive=False` (strictly before the application).
Vectorised: a merge of events with their customer's anchors and group sums, no loop over customers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.data.schema import INSTALMENT_METHODS

DAY_NS = 86_400 * 10**9
LATE_WINDOWS = {"late_3m": 90, "late_6m": 180, "late_12m": 365}
RETURN_COLUMNS = ("n_orders", "spend", "returned_value", "net_spend", "return_rate_count", "return_rate_value",
                  "n_returns", "days_to_return_mean")
REPAYMENT_COLUMNS = ("n_credits", "n_instalments", "share_repaid", "dpd_max", "n_late", *LATE_WINDOWS,
                     "overdue_now", "amount_overdue")


def _anchors(anchors: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index]:
    a = pd.DataFrame({"customer_id": anchors["customer_id"].astype(str).to_numpy(),
                      "as_of": pd.to_datetime(anchors["as_of"]).to_numpy().astype("datetime64[ns]").astype(np.int64),
                      "k": np.arange(len(anchors))})
    return a, anchors.index


def _ns(s: pd.Series) -> np.ndarray:
    v = pd.to_datetime(s).to_numpy().astype("datetime64[ns]")
    out = v.astype(np.int64)
    return np.where(np.isnat(v), np.iinfo(np.int64).max, out)  # a blank date: never (not yet paid)


def _with_anchor(events: pd.DataFrame, a: pd.DataFrame) -> pd.DataFrame:
    """Each event row joined to every anchor of its customer (customer ids as text)."""
    ev = events.assign(customer_id=events["customer_id"].astype(str).to_numpy())
    return ev.merge(a, on="customer_id", how="inner", sort=False)


def _before(t: np.ndarray, as_of: np.ndarray, inclusive: bool) -> np.ndarray:
    return t <= as_of if inclusive else t < as_of


def return_features_at(transactions: pd.DataFrame, returns: pd.DataFrame | None, anchors: pd.DataFrame, *,
                       methods: list[str] | None = None, inclusive: bool = True) -> pd.DataFrame:
    """Return and payment-method features per anchor row (customer_id, as_of); see the module docstring.
    `methods` fixes the payment-method vocabulary (a trained model's), else the methods in `transactions`."""
    a, index = _anchors(anchors)
    n = len(a)
    cols = ["customer_id", "timestamp"] + [c for c in ("amount", "order_id", "payment_method")
                                           if c in transactions.columns]
    tx = transactions[cols].assign(timestamp=_ns(transactions["timestamp"]))
    m = _with_anchor(tx, a)
    m = m[_before(m["timestamp"].to_numpy(), m["as_of"].to_numpy(), inclusive)]
    k = m["k"].to_numpy()
    n_orders = np.bincount(k, minlength=n).astype(float)
    has_amount = "amount" in m.columns
    spend = np.bincount(k, weights=m["amount"].to_numpy(dtype=float), minlength=n) if has_amount else None
    returned = np.zeros(n)
    n_returned_orders = np.zeros(n)
    n_returns = np.zeros(n)
    days_sum = np.zeros(n)
    if returns is not None and len(returns) and "order_id" in m.columns:
        r = returns[["customer_id", "order_id", "returned_at", "amount"]].rename(columns={"amount": "refund"})
        r = r.assign(returned_at=_ns(r["returned_at"]))
        rm = _with_anchor(r, a)
        rm = rm[_before(rm["returned_at"].to_numpy(), rm["as_of"].to_numpy(), inclusive)]
        bought = m[["k", "order_id", "timestamp"]].drop_duplicates(["k", "order_id"])
        rm = rm.merge(bought, on=["k", "order_id"], how="inner", sort=False)  # of orders visible at as_of
        rk = rm["k"].to_numpy()
        returned = np.bincount(rk, weights=rm["refund"].to_numpy(dtype=float), minlength=n)
        n_returns = np.bincount(rk, minlength=n).astype(float)
        days_sum = np.bincount(rk, weights=(rm["returned_at"].to_numpy() - rm["timestamp"].to_numpy()) / DAY_NS,
                               minlength=n)
        first = ~rm.duplicated(["k", "order_id"]).to_numpy()
        n_returned_orders = np.bincount(rk[first], minlength=n).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"n_orders": n_orders}
        if has_amount:
            out.update({"spend": spend, "returned_value": returned, "net_spend": spend - returned})
        out["return_rate_count"] = np.where(n_orders > 0, n_returned_orders / n_orders, np.nan)
        if has_amount:
            out["return_rate_value"] = np.where(spend > 0, returned / spend, np.nan)
        out["n_returns"] = n_returns
        out["days_to_return_mean"] = np.where(n_returns > 0, days_sum / n_returns, np.nan)
        if "payment_method" in m.columns:
            vocab = sorted(set(methods if methods is not None else transactions["payment_method"].dropna()
                               .astype(str).unique()))
            code = pd.Index(vocab).get_indexer(m["payment_method"].astype(str))
            ok = code >= 0
            counts = np.bincount(k[ok] * len(vocab) + code[ok], minlength=n * len(vocab)).reshape(n, -1)
            share = np.where(n_orders[:, None] > 0, counts / np.maximum(n_orders, 1.0)[:, None], np.nan)
            for j, meth in enumerate(vocab):
                out[f"pay_share_{meth}"] = share[:, j]
            inst = [j for j, meth in enumerate(vocab) if meth in INSTALMENT_METHODS]
            out["instalment_share"] = share[:, inst].sum(axis=1) if inst else np.where(n_orders > 0, 0.0, np.nan)
    return pd.DataFrame(out, index=index)


def repayment_features_at(repayments: pd.DataFrame, anchors: pd.DataFrame, *, inclusive: bool = True
                          ) -> pd.DataFrame:
    """Repayment features per anchor row (customer_id, as_of); see the module docstring."""
    a, index = _anchors(anchors)
    n = len(a)
    rep = pd.DataFrame({"customer_id": repayments["customer_id"].to_numpy(),
                        "credit_id": repayments["credit_id"].astype(str).to_numpy(),
                        "issued_at": _ns(repayments["issued_at"]), "due": _ns(repayments["due_date"]),
                        "paid": _ns(repayments["paid_at"]),
                        "amount_due": repayments["amount_due"].to_numpy(dtype=float),
                        "amount_paid": repayments["amount_paid"].to_numpy(dtype=float)})
    m = _with_anchor(rep, a)
    as_of = m["as_of"].to_numpy()
    m = m[_before(m["issued_at"].to_numpy(), as_of, inclusive)]
    as_of, k = m["as_of"].to_numpy(), m["k"].to_numpy()
    first = ~m.duplicated(["k", "credit_id"]).to_numpy()
    n_credits = np.bincount(k[first], minlength=n).astype(float)
    due, paid = m["due"].to_numpy(), m["paid"].to_numpy()
    is_due = _before(due, as_of, inclusive)
    paid_by = _before(paid, as_of, inclusive)
    upto = np.where(paid_by, paid, as_of)  # unpaid at as_of: counted up to as_of
    dpd = np.where(is_due, np.floor((upto - due) / DAY_NS), 0.0)
    late = is_due & (dpd >= 1)
    amount_due = np.where(is_due, m["amount_due"].to_numpy(), 0.0)
    amount_paid = np.where(is_due & paid_by, m["amount_paid"].to_numpy(), 0.0)
    n_inst = np.bincount(k, weights=is_due.astype(float), minlength=n)
    due_sum = np.bincount(k, weights=amount_due, minlength=n)
    paid_sum = np.bincount(k, weights=amount_paid, minlength=n)
    dpd_max = np.zeros(n)
    np.maximum.at(dpd_max, k, np.maximum(dpd, 0.0))
    overdue = is_due & ~paid_by & (dpd >= 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"n_credits": n_credits, "n_instalments": n_inst,
               "share_repaid": np.where(due_sum > 0, paid_sum / due_sum, np.nan), "dpd_max": dpd_max,
               "n_late": np.bincount(k, weights=late.astype(float), minlength=n)}
    for name, days in LATE_WINDOWS.items():
        recent = late & (due > as_of - days * DAY_NS)
        out[name] = np.bincount(k, weights=recent.astype(float), minlength=n)
    out["overdue_now"] = np.bincount(k, weights=overdue.astype(float), minlength=n)
    out["amount_overdue"] = np.bincount(k, weights=np.where(overdue, amount_due - amount_paid, 0.0), minlength=n)
    return pd.DataFrame(out, index=index)


def _customers_as_of(ids: pd.Series, as_of: object) -> pd.DataFrame:
    uniq = np.sort(ids.astype(str).unique())
    return pd.DataFrame({"customer_id": uniq, "as_of": pd.Timestamp(as_of)}, index=pd.Index(uniq, name="customer_id"))


def return_features(transactions: pd.DataFrame, returns: pd.DataFrame | None, as_of: object, *,
                    methods: list[str] | None = None, inclusive: bool = True) -> pd.DataFrame:
    """Return and payment-method features as of one date, indexed by customer_id (sorted): customers with at
    least one order by `as_of`."""
    a = _customers_as_of(transactions["customer_id"], as_of)
    f = return_features_at(transactions, returns, a, methods=methods, inclusive=inclusive)
    return f[f["n_orders"] > 0]


def repayment_features(repayments: pd.DataFrame, as_of: object, *, inclusive: bool = True) -> pd.DataFrame:
    """Repayment features as of one date, indexed by customer_id (sorted): customers with a credit started by
    `as_of`."""
    a = _customers_as_of(repayments["customer_id"], as_of)
    f = repayment_features_at(repayments, a, inclusive=inclusive)
    return f[f["n_credits"] > 0]
