"""The timing model as an `mlflow.pyfunc` model: transactions in, one row of answers per customer out.

It carries its own preprocessing (sequence building, feature scaling, categories), so serving loads it
by URI and calls `predict` on a DataFrame of raw transactions. Parameters: `as_of` (default: the end of
the day of the latest transaction), `horizon_days` and `n_samples` for the expected purchase count.

`amount` is an optional input column (the signature says so): a model trained on dates alone ignores it,
one trained with amounts refuses an input without it, naming the column.

A model trained on order lines also carries the replenishment basket (`offerlab.timing.basket`): an input with
an `item_id` column (one row per line; `order_id`, `quantity`, `item_name` optional) is scored as orders by the
timing model and as lines by the basket, adding `reminder_date`, `basket_value` and `basket` (a JSON list of
{item_id, item_name, quantity, p_30d, due_date, expected_value}) to each customer's row. Without items it answers
as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from offerlab.timing.baselines import end_of_day

PARAMS = {"as_of": "", "horizon_days": 90.0, "n_samples": 100}
INPUT_COLUMNS = ("customer_id", "timestamp", "amount", "category")
LINE_COLUMNS = ("order_id", "item_id", "item_name", "quantity")


class TimingPyfunc(mlflow.pyfunc.PythonModel):
    """Answers of `TimingPredictor.predict_frame` for every customer in the input transactions."""

    def load_context(self, context) -> None:
        from offerlab.timing.predict import load_predictor

        self.predictor = load_predictor(context.artifacts["predictor"])
        self.returns = None  # how training read a returns table: "net", "keep"; None = no table or an older model
        if "settings" in context.artifacts:
            self.returns = json.loads(Path(context.artifacts["settings"]).read_text()).get("returns")
        self.basket = None
        if "basket" in context.artifacts:
            from offerlab.timing.basket import BasketModel

            self.basket = BasketModel.load(context.artifacts["basket"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        p = {**PARAMS, **(params or {})}
        lines = None
        if "item_id" in model_input.columns and model_input["item_id"].notna().any():
            model_input, lines = orders_and_lines(model_input)
        tx = prepare_input(model_input, self.predictor.categories, self.predictor.uses_amount)
        as_of = end_of_day(p["as_of"]) if p["as_of"] else end_of_day(tx["timestamp"].max())
        out = self.predictor.predict_frame(tx, as_of, horizon_days=float(p["horizon_days"]),
                                           n_samples=int(p["n_samples"]))
        out["median_next_date"] = out["median_next_date"].astype(str)
        if getattr(self, "basket", None) is not None and lines is not None:
            out = out.merge(basket_columns(self.basket, lines, as_of), on="customer_id", how="left")
            out["basket"] = out["basket"].fillna("[]")
        return out.replace([np.inf], np.nan)


def orders_and_lines(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A line-level input (one row per item bought) as its orders (the timing model's transactions) and lines."""
    from offerlab.data.lines import lines_from_rows, orders_from_lines

    cols = [c for c in (*INPUT_COLUMNS, *LINE_COLUMNS) if c in df.columns]
    rows = df[cols].copy()
    rows["customer_id"] = rows["customer_id"].astype(str)
    rows["timestamp"] = pd.to_datetime(rows["timestamp"])
    if "order_id" in rows.columns and rows["order_id"].isna().all():
        rows = rows.drop(columns="order_id")
    if "quantity" in rows.columns:
        rows["quantity"] = rows["quantity"].fillna(1)
    lines = lines_from_rows(rows)
    return orders_from_lines(lines).drop(columns=["order_id", "quantity"], errors="ignore"), lines


def basket_columns(model, lines: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Per customer with a basket: reminder_date, basket_value and the basket as JSON (see the module docstring)."""
    import json

    from offerlab.timing.basket import baskets, days

    L = model.lines(lines[lines["timestamp"] <= as_of])
    if not len(L.customers):
        return pd.DataFrame(columns=["customer_id", "reminder_date", "basket_value", "basket"])
    cut = np.full(len(L.customers), float(days(pd.Series([as_of]))[0]))
    b = baskets(model.predict(L, cut), L.customers, L.items, pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1),
                model.cfg.min_p, model.cfg.max_items, model.item_names)
    if b.empty:
        return pd.DataFrame(columns=["customer_id", "reminder_date", "basket_value", "basket"])
    b["due_date"] = b["due_date"].dt.strftime("%Y-%m-%d")
    items = b[["item_id", "item_name", "quantity", "p_30d", "due_date", "expected_value"]]
    records = items.astype(object).where(items.notna(), None).to_dict(orient="records")
    per = pd.DataFrame({"customer_id": b["customer_id"].to_numpy(), "item": records})
    g = per.groupby("customer_id", sort=False)["item"].agg(lambda r: json.dumps(list(r)))
    head = b.groupby("customer_id", sort=False).agg(reminder_date=("reminder_date", "first"),
                                                    basket_value=("expected_value", "sum"))
    head["reminder_date"] = head["reminder_date"].dt.strftime("%Y-%m-%d")
    head["basket_value"] = head["basket_value"].where(b.groupby("customer_id", sort=False)["expected_value"]
                                                      .count() > 0)
    return head.join(g.rename("basket")).reset_index()


def prepare_input(df: pd.DataFrame, categories: list[str], uses_amount: bool = True) -> pd.DataFrame:
    """Check and coerce the serving input into the canonical transactions table.

    `uses_amount=False` (a model trained on dates alone): `amount` is not needed and dropped if present.
    """
    from offerlab.data.schema import DataValidationError, validate_table

    missing = [c for c in ("customer_id", "timestamp") if c not in df.columns]
    if missing:
        raise ValueError(f"input is missing column(s) {missing}; expected {list(INPUT_COLUMNS)}")
    if uses_amount and "amount" not in df.columns:
        raise DataValidationError("transactions", "amount", "the timing model was trained with amounts; "
                                  "the transactions to score have no 'amount' column")
    keep = [c for c in INPUT_COLUMNS if c in df.columns and (uses_amount or c != "amount")]
    tx = df[keep].copy()
    tx["customer_id"] = tx["customer_id"].astype(str)
    tx["timestamp"] = pd.to_datetime(tx["timestamp"])
    if "amount" in tx:
        tx["amount"] = tx["amount"].astype(float)
    if "category" in tx:
        tx["category"] = tx["category"].astype(str)
    return validate_table(tx, "transactions")


def input_example(categories: list[str], uses_amount: bool = True) -> pd.DataFrame:
    """A small made-up input (no real customer) for the logged signature (no `amount` for a dates-only model)."""
    cats = (categories or ["none"]) * 3
    ex = pd.DataFrame({
        "customer_id": ["example-1", "example-1", "example-1", "example-2", "example-2"],
        "timestamp": pd.to_datetime(["2024-01-03", "2024-02-01", "2024-03-04", "2024-01-20", "2024-04-02"]),
    })
    if uses_amount:
        ex["amount"] = [25.0, 31.5, 18.0, 60.0, 42.0]
    if categories:
        ex["category"] = cats[:5]
    return ex


def log_pyfunc(predictor, workdir: Path, name: str = "model", registered_model_name: str | None = None,
               basket=None, returns: str | None = None):
    """Save the predictor (and the basket model, when given), log them as one pyfunc with signature and input
    example; returns the model info. `returns`: how training read a returns table (net or keep), so scoring and
    serving read a history's returns the same way."""
    from mlflow.models import infer_signature

    from offerlab.timing.predict import save_predictor

    path = save_predictor(predictor, Path(workdir) / "timing_predictor.pt")
    artifacts = {"predictor": str(path)}
    if returns is not None:
        (Path(workdir) / "settings.json").write_text(json.dumps({"returns": returns}))
        artifacts["settings"] = str(Path(workdir) / "settings.json")
    example = input_example(predictor.categories, predictor.uses_amount)
    wrapper = TimingPyfunc()
    wrapper.predictor, wrapper.basket = predictor, basket
    if basket is not None:
        basket.save(Path(workdir) / "basket.pt")
        artifacts["basket"] = str(Path(workdir) / "basket.pt")
        example = _with_lines(example, basket)
    output = wrapper.predict(None, example, {"n_samples": 20})
    signature = infer_signature(example, output, params=PARAMS)
    signature.inputs = _amount_optional(signature.inputs)
    return mlflow.pyfunc.log_model(name=name, python_model=TimingPyfunc(), artifacts=artifacts,
                                   signature=signature, input_example=example,
                                   registered_model_name=registered_model_name)


def _with_lines(example: pd.DataFrame, basket) -> pd.DataFrame:
    """The made-up example as order lines of the basket model's two first items (one per order)."""
    items = list(basket.items[:2]) if len(basket.items) >= 2 else list(basket.items) * 2
    ex = example.copy()
    ex["order_id"] = [f"example-order-{i}" for i in range(len(ex))]
    ex["item_id"] = [items[i % 2] for i in range(len(ex))]
    ex["quantity"] = 1
    return ex


def _amount_optional(schema):
    """The input schema with `amount` optional: MLflow then lets an input without amounts (or, for a
    dates-only model, with them) through to `predict`, whose own check names the column."""
    from mlflow.types import ColSpec, DataType, Schema

    line_cols = {"order_id": DataType.string, "item_id": DataType.string, "item_name": DataType.string,
                 "quantity": DataType.long}
    cols = [c for c in schema.inputs if c.name != "amount" and c.name not in line_cols]
    cols.insert(2, ColSpec(DataType.double, "amount", required=False))
    cols += [ColSpec(t, n, required=False) for n, t in line_cols.items()]  # order lines: the basket's input
    return Schema(cols)
