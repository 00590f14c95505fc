"""Tiny hand-written transaction tables shared by the sequence and feature tests."""

import pandas as pd


def make_tx(rows: list[tuple]) -> pd.DataFrame:
    """(customer_id, ISO timestamp, amount, category) rows -> a transactions table."""
    cid, ts, amount, cat = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(cid),
            "timestamp": pd.to_datetime(list(ts), format="ISO8601"),
            "amount": list(amount),
            "category": list(cat),
        }
    )
