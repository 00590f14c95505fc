"""Order lines: what each order held, item by item (the canonical `lines` table), and the orders they make.

A user's purchase file with an item column (`item_id` mapped under `tables.transactions.columns`) has one row
per line. Its orders are the `order_id`s when one is mapped, else each customer's lines at one timestamp (a
basket of one day for date-only files). The same item twice in one order is one line (quantities and amounts
summed; the count is logged). The orders fill `transactions` (amount and quantity summed over the lines, the
category of the order's largest line), so the timing, uplift and credit families see orders as before, and the
lines feed the replenishment basket (`offerlab.timing.basket`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError, validate_table

log = logging.getLogger(__name__)
GROCERIES_FILE = "Groceries_dataset.csv"


def lines_from_rows(rows: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Canonical, validated `lines` from line-level purchase rows (customer_id, timestamp, item_id, optional
    order_id, item_name, category, quantity, amount). Rows without an order id are grouped into orders by
    customer and timestamp."""
    df = rows.copy()
    for col in ("customer_id", "item_id"):
        if col not in df.columns:
            raise DataValidationError("lines", col, "missing required column")
    if "order_id" not in df.columns:
        if "timestamp" not in df.columns:
            raise DataValidationError("lines", "timestamp", "missing required column")
        key = pd.MultiIndex.from_arrays([df["customer_id"].astype(str), pd.to_datetime(df["timestamp"])])
        codes = pd.factorize(key)[0]
        df.insert(0, "order_id", pd.Series(codes, index=df.index).map("b{:d}".format))
    df = validate_table(_merged(validate_table(df, "lines", now=now, check_key=False)), "lines", now=now)
    stamps = df.groupby("order_id", sort=False)["timestamp"].transform("min")
    df["timestamp"] = stamps  # one time per order: its first line's
    return df.reset_index(drop=True)


def _merged(df: pd.DataFrame) -> pd.DataFrame:
    """The same item twice in one order -> one line (sums of quantity and amount)."""
    dup = df.duplicated(["order_id", "item_id"], keep=False)
    if not dup.any():
        return df
    sums = [c for c in ("quantity", "amount") if c in df.columns]
    first = df.groupby(["order_id", "item_id"], sort=False, as_index=False).first()
    if sums:
        total = df.groupby(["order_id", "item_id"], sort=False, as_index=False)[sums].sum()
        first[sums] = total[sums].to_numpy()
    log.info("merged %d lines that repeat an item within its order into %d", int(dup.sum()),
             int(df[dup].drop_duplicates(["order_id", "item_id"]).shape[0]))
    return first[df.columns]


def orders_from_lines(lines: pd.DataFrame) -> pd.DataFrame:
    """The `transactions` table of the orders the lines make: one row per order, amount and quantity summed, the
    category of the largest line (by amount, else the first line). An order whose lines name two customers is
    refused."""
    g = lines.groupby("order_id", sort=False)
    n_cust = g["customer_id"].nunique()
    if (n_cust > 1).any():
        bad = n_cust.index[n_cust > 1][0]
        raise DataValidationError("lines", "customer_id", "one order's lines name more than one customer",
                                  f"order_id={bad!r}")
    out = g.agg(customer_id=("customer_id", "first"), timestamp=("timestamp", "min"))
    if "amount" in lines.columns:
        out["amount"] = g["amount"].sum()
    if "quantity" in lines.columns:
        out["quantity"] = g["quantity"].sum()
    if "payment_method" in lines.columns:  # an order is paid one way: its first line's
        out["payment_method"] = g["payment_method"].first()
    if "category" in lines.columns:
        if "amount" in lines.columns:
            top = lines.loc[lines["amount"].to_numpy().argsort(kind="stable")[::-1]].drop_duplicates("order_id")
        else:
            top = lines.drop_duplicates("order_id")
        out["category"] = top.set_index("order_id")["category"].reindex(out.index)
    out = out.reset_index()
    out = out.sort_values(["customer_id", "timestamp", "order_id"], kind="stable").reset_index(drop=True)
    return validate_table(out, "transactions")


def load_groceries(folder: str | Path | None = None) -> pd.DataFrame:
    """The public member-level grocery log (`Groceries_dataset.csv`) as `lines`: a basket is a member's items on
    one date; the file has no quantities, amounts or order ids."""
    from offerlab.data.loaders import _data_file

    path = _data_file(GROCERIES_FILE, folder)
    raw = pd.read_csv(path, dtype={"Member_number": str, "Date": str, "itemDescription": str})
    ts = pd.to_datetime(raw["Date"], format="%d-%m-%Y", errors="coerce")
    if ts.isna().any():
        i = np.flatnonzero(ts.isna().to_numpy())[0]
        raise DataValidationError("lines", "timestamp", f"unparsable date in {path.name} (expected DD-MM-YYYY)",
                                  f"row {i}: {raw['Date'].iloc[i]!r}")
    rows = pd.DataFrame({"customer_id": raw["Member_number"], "timestamp": ts,
                         "item_id": raw["itemDescription"].str.strip(), "item_name": raw["itemDescription"].str.strip()})
    return lines_from_rows(rows)
