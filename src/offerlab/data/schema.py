"""Canonical tables and their validation (DESIGN.md "Data contracts").

Every input, real or synthetic, is mapped into one of these tables before any model sees it.
`validate_table` refuses bad input with a `DataValidationError` naming the table, the column and
an offending example row; all checks are vectorised so they cost little on millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class DataValidationError(ValueError):
    """Input data break the canonical table contract. The message names table, column and example."""

    def __init__(self, table: str, column: str | None, problem: str, example: object = None):
        where = f"table '{table}'" + (f", column '{column}'" if column else "")
        msg = f"{where}: {problem}"
        if example is not None:
            msg += f" (example: {example})"
        super().__init__(msg)
        self.table, self.column, self.problem, self.example = table, column, problem, example


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str" | "datetime" | "float" | "int" | "label"
    required: bool = True
    nonnegative: bool = False
    nullable: bool = False  # datetime: a blank means "not yet" (a repayment not paid)
    future_ok: bool = False  # datetime: may lie after now (an instalment's due date)


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


TRANSACTIONS = TableSpec(
    "transactions",
    (
        Column("customer_id", "str"),
        Column("timestamp", "datetime"),
        Column("amount", "float", required=False, nonnegative=True),  # absent in date-only purchase logs
        Column("category", "str", required=False),
        Column("quantity", "int", required=False, nonnegative=True),
        Column("order_id", "str", required=False),
        Column("payment_method", "str", required=False),  # card, instalments, bnpl, invoice, ...
    ),
    key=("order_id",),
)
CUSTOMERS = TableSpec("customers", (Column("customer_id", "str"),), key=("customer_id",))
CAMPAIGN = TableSpec(
    "campaign",
    (
        Column("customer_id", "str"),
        Column("treatment", "str"),
        Column("conversion", "label"),
        Column("revenue", "float", nonnegative=True),
        Column("cost", "float", required=False, nonnegative=True),
        Column("propensity", "float", required=False, nonnegative=True),
        Column("returned_revenue", "float", required=False, nonnegative=True),  # an outcome: what came back
    ),
    key=("customer_id",),
)
APPLICATIONS = TableSpec(
    "applications",
    (
        Column("application_id", "str"),
        Column("customer_id", "str"),
        Column("applied_at", "datetime"),
        Column("default", "label", required=False),
    ),
    key=("application_id",),
)

LINES = TableSpec(  # order lines: what each order (a transactions row) held, item by item
    "lines",
    (
        Column("order_id", "str"),
        Column("customer_id", "str"),
        Column("timestamp", "datetime"),
        Column("item_id", "str"),
        Column("item_name", "str", required=False),
        Column("category", "str", required=False),
        Column("quantity", "int", required=False, nonnegative=True),
        Column("amount", "float", required=False, nonnegative=True),
    ),
    key=("order_id", "item_id"),
)

RETURNS = TableSpec(  # what customers sent back: several returns per order allowed, never more than it cost
    "returns",
    (
        Column("customer_id", "str"),
        Column("order_id", "str"),
        Column("returned_at", "datetime"),
        Column("amount", "float", nonnegative=True),  # the amount refunded
        Column("item_id", "str", required=False),
        Column("quantity", "int", required=False, nonnegative=True),
        Column("reason", "str", required=False),
    ),
)
REPAYMENTS = TableSpec(  # instalment credit: one row per instalment due
    "repayments",
    (
        Column("customer_id", "str"),
        Column("credit_id", "str"),
        Column("issued_at", "datetime"),
        Column("due_date", "datetime", future_ok=True),
        Column("paid_at", "datetime", nullable=True),
        Column("amount_due", "float", nonnegative=True),
        Column("amount_paid", "float", nonnegative=True),
    ),
    key=("credit_id", "due_date"),
)
# payment methods that are instalment credit (`instalment_share`, repayments)
INSTALMENT_METHODS = ("instalments", "bnpl")

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (TRANSACTIONS, CUSTOMERS, CAMPAIGN, APPLICATIONS, LINES, RETURNS, REPAYMENTS)
}


def _example(df: pd.DataFrame, mask: np.ndarray | pd.Series, column: str) -> str:
    """First offending row, as 'row <index>: <column>=<value>'."""
    idx = np.flatnonzero(np.asarray(mask))[0]
    value = df[column].iloc[idx]
    if isinstance(value, np.generic):
        value = value.item()
    return f"row {df.index[idx]!r}: {column}={value!r}"


def _coerce_datetime(df: pd.DataFrame, table: str, col: str, now: pd.Timestamp, *, nullable: bool = False,
                     future_ok: bool = False) -> pd.Series:
    s = df[col]
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_any_dtype(s):
        parsed = pd.to_datetime(s, errors="coerce", format="mixed")
        bad = parsed.isna() & s.notna()
        if bad.any():
            raise DataValidationError(table, col, "unparsable timestamp", _example(df, bad, col))
        s = parsed
    s = s.astype("datetime64[ns]")
    if s.isna().any() and not nullable:
        raise DataValidationError(table, col, "missing timestamp", _example(df, s.isna(), col))
    if future_ok:
        return s
    future = s > now
    if future.any():
        raise DataValidationError(
            table, col, f"timestamp in the future (after {now:%Y-%m-%d})", _example(df, future, col)
        )
    return s


def _coerce_numeric(df: pd.DataFrame, table: str, c: Column) -> pd.Series:
    s = df[c.name]
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("int64")
    if not pd.api.types.is_numeric_dtype(s):
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna()
        if bad.any():
            raise DataValidationError(table, c.name, f"expected a number ({c.kind})", _example(df, bad, c.name))
        s = num
    if s.isna().any():
        raise DataValidationError(table, c.name, "missing value", _example(df, s.isna(), c.name))
    if c.kind == "float":
        s = s.astype("float64")
        if not np.isfinite(s.to_numpy()).all():
            raise DataValidationError(table, c.name, "non-finite value", _example(df, ~np.isfinite(s), c.name))
    else:
        frac = s.to_numpy(dtype="float64") % 1 != 0
        if frac.any():
            raise DataValidationError(table, c.name, "expected an integer", _example(df, frac, c.name))
        s = s.astype("int64")
    if c.kind == "label":
        bad = ~s.isin([0, 1])
        if bad.any():
            raise DataValidationError(table, c.name, "label outside {0,1}", _example(df, bad, c.name))
    elif c.nonnegative and (s < 0).any():
        raise DataValidationError(table, c.name, "negative value", _example(df, s < 0, c.name))
    return s


def validate_table(
    df: pd.DataFrame,
    table: str,
    *,
    treatments: list[str] | None = None,
    control: str | None = None,
    now: pd.Timestamp | None = None,
    check_key: bool = True,
) -> pd.DataFrame:
    """Check `df` against the canonical table `table` and return it with canonical dtypes.

    Refuses (raises `DataValidationError`): an empty table, a missing required column, a wrong type,
    a negative amount, an unparsable, missing or future-dated timestamp, a duplicate key, a label
    outside {0,1}, and, for `campaign`, a treatment not in `treatments` (when given) or a missing
    control level. Extra columns pass through untouched.
    """
    spec = TABLES[table]
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(table, None, f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataValidationError(table, None, "the table is empty")
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise DataValidationError(
            table, missing[0], f"missing required column; columns present: {list(df.columns)[:20]}"
        )
    now = pd.Timestamp.now() if now is None else pd.Timestamp(now)
    out = df.copy()
    for c in spec.columns:
        if c.name not in out.columns:
            continue
        if c.kind == "str":
            s = out[c.name]
            if s.isna().any():
                raise DataValidationError(table, c.name, "missing value", _example(out, s.isna(), c.name))
            if pd.api.types.is_float_dtype(s):
                raise DataValidationError(
                    table, c.name, "expected text identifiers, got floating-point numbers", _example(out, s.notna(), c.name)
                )
            out[c.name] = s.astype(str)
        elif c.kind == "datetime":
            out[c.name] = _coerce_datetime(out, table, c.name, now, nullable=c.nullable, future_ok=c.future_ok)
        else:
            out[c.name] = _coerce_numeric(out, table, c)
    if check_key and spec.key and all(k in out.columns for k in spec.key):
        dup = out.duplicated(list(spec.key), keep="first")
        if dup.any():
            raise DataValidationError(table, ",".join(spec.key), "duplicate key", _example(out, dup, spec.key[0]))
    if table == "campaign":
        _check_treatments(out, treatments, control)
        if "returned_revenue" in out.columns and (out["returned_revenue"] > out["revenue"] + 0.005).any():
            raise DataValidationError(table, "returned_revenue", "returned above the revenue of the purchase",
                                      _example(out, out["returned_revenue"] > out["revenue"] + 0.005,
                                               "customer_id"))
    if table == "lines" and "quantity" in out.columns and (out["quantity"] < 1).any():
        raise DataValidationError(table, "quantity", "a line must count at least one unit (a returned item is not "
                                  "a purchase line)", _example(out, out["quantity"] < 1, "quantity"))
    if table == "repayments":
        _check_repayments(out)
    return out


def _check_repayments(df: pd.DataFrame) -> None:
    """A credit's instalments fall due, and are paid, after the credit started."""
    early_due = df["due_date"] < df["issued_at"]
    if early_due.any():
        raise DataValidationError("repayments", "due_date", "due date before the credit started (issued_at)",
                                  _example(df, early_due, "credit_id"))
    early_paid = df["paid_at"].notna() & (df["paid_at"] < df["issued_at"])
    if early_paid.any():
        raise DataValidationError("repayments", "paid_at", "paid before the credit started (issued_at)",
                                  _example(df, early_paid, "credit_id"))


def check_returns(returns: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Cross-check validated `returns` against validated `transactions` (orders by `order_id`): a return of an
    unknown order, one of another customer's order, one before its order's timestamp, or an order returned for
    more than its amount is refused with the row named. Returns `returns` unchanged."""
    if "order_id" not in transactions.columns:
        raise DataValidationError("transactions", "order_id", "returns name the order they send back: the "
                                  "transactions need an order_id column")
    orders = transactions.drop_duplicates("order_id").set_index("order_id")
    pos = orders.index.get_indexer(returns["order_id"])
    unknown = pos < 0
    if unknown.any():
        raise DataValidationError("returns", "order_id", "order not in transactions", _example(returns, unknown,
                                                                                            "order_id"))
    other = orders["customer_id"].to_numpy()[pos] != returns["customer_id"].to_numpy()
    if other.any():
        raise DataValidationError("returns", "customer_id", "the order belongs to another customer",
                                  _example(returns, other, "order_id"))
    before = returns["returned_at"].to_numpy() < orders["timestamp"].to_numpy()[pos]
    if before.any():
        raise DataValidationError("returns", "returned_at", "return before its purchase (the order's timestamp)",
                                  _example(returns, before, "order_id"))
    if "amount" in orders.columns:
        total = returns.groupby("order_id", sort=False)["amount"].transform("sum").to_numpy()
        bought = orders["amount"].to_numpy()[pos]
        above = total > bought + 0.005  # half a cent: rounding of split refunds
        if above.any():
            i = np.flatnonzero(above)[0]
            raise DataValidationError(
                "returns", "amount", f"returned above the amount bought (order total {bought[i]:.2f}, returned "
                f"{total[i]:.2f} in all)", _example(returns, above, "order_id"))
    return returns


def returns_from_negative_lines(transactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a purchase file that books returns as negative lines (amount < 0) linked to their purchase by
    `order_id` into (purchases, `returns`): a negative row's timestamp is when it was returned, minus its amount
    (and quantity) what was refunded. Not yet validated; a negative row without an order_id is refused."""
    if "amount" not in transactions.columns:
        raise DataValidationError("transactions", "amount", "returns as negative lines need an amount column")
    amount = pd.to_numeric(transactions["amount"], errors="coerce")
    neg = (amount < 0).to_numpy()
    if "order_id" not in transactions.columns:
        raise DataValidationError("transactions", "order_id", "returns as negative lines are linked to their "
                                  "purchase by order_id: map the order column")
    ret = transactions.loc[neg].rename(columns={"timestamp": "returned_at"})
    ret = ret.assign(amount=-amount[neg])
    if "quantity" in ret.columns:
        ret["quantity"] = pd.to_numeric(ret["quantity"], errors="coerce").abs()
    keep = [c for c in ("customer_id", "order_id", "returned_at", "amount", "item_id", "quantity", "reason")
            if c in ret.columns]
    return transactions.loc[~neg], ret[keep]


def _check_treatments(df: pd.DataFrame, treatments: list[str] | None, control: str | None) -> None:
    if treatments is not None:
        bad = ~df["treatment"].isin(treatments)
        if bad.any():
            raise DataValidationError(
                "campaign", "treatment", f"unknown treatment; allowed: {treatments}", _example(df, bad, "treatment")
            )
    if control is not None and not (df["treatment"] == control).any():
        raise DataValidationError("campaign", "treatment", f"no row has the control level {control!r}")
