"""The timing model as an `mlflow.pyfunc` model: transactions in, one row of answers per customer out.

It carries its own preprocessing (sequence building, feature scaling, categories), so serving loads it
by URI and calls `predict` on a DataFrame of raw transactions. Parameters: `as_of` (default: the end of
the day of the latest transaction), `horizon_days` and `n_samples` for the expected purchase count.

`amount` is an optional input column (the signature says so): a model trained on dates alone ignores it,
one trained with amounts refuses an input without it, naming the column.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from offerlab.timing.baselines import end_of_day

PARAMS = {"as_of": "", "horizon_days": 90.0, "n_samples": 100}
INPUT_COLUMNS = ("customer_id", "timestamp", "amount", "category")


class TimingPyfunc(mlflow.pyfunc.PythonModel):
    """Answers of `TimingPredictor.predict_frame` for every customer in the input transactions."""

    def load_context(self, context) -> None:
        from offerlab.timing.predict import load_predictor

        self.predictor = load_predictor(context.artifacts["predictor"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        p = {**PARAMS, **(params or {})}
        tx = prepare_input(model_input, self.predictor.categories, self.predictor.uses_amount)
        as_of = end_of_day(p["as_of"]) if p["as_of"] else end_of_day(tx["timestamp"].max())
        out = self.predictor.predict_frame(tx, as_of, horizon_days=float(p["horizon_days"]),
                                           n_samples=int(p["n_samples"]))
        out["median_next_date"] = out["median_next_date"].astype(str)
        return out.replace([np.inf], np.nan)


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


def log_pyfunc(predictor, workdir: Path, name: str = "model", registered_model_name: str | None = None):
    """Save the predictor, log it as a pyfunc with signature and input example; returns the model info."""
    from mlflow.models import infer_signature

    from offerlab.timing.predict import save_predictor

    path = save_predictor(predictor, Path(workdir) / "timing_predictor.pt")
    example = input_example(predictor.categories, predictor.uses_amount)
    wrapper = TimingPyfunc()
    wrapper.predictor = predictor
    output = wrapper.predict(None, example, {"n_samples": 20})
    signature = infer_signature(example, output, params=PARAMS)
    signature.inputs = _amount_optional(signature.inputs)
    return mlflow.pyfunc.log_model(name=name, python_model=TimingPyfunc(), artifacts={"predictor": str(path)},
                                   signature=signature, input_example=example,
                                   registered_model_name=registered_model_name)


def _amount_optional(schema):
    """The input schema with `amount` optional: MLflow then lets an input without amounts (or, for a
    dates-only model, with them) through to `predict`, whose own check names the column."""
    from mlflow.types import ColSpec, DataType, Schema

    cols = [c for c in schema.inputs if c.name != "amount"]
    cols.insert(2, ColSpec(DataType.double, "amount", required=False))
    return Schema(cols)
