"""The uplift model as an `mlflow.pyfunc` model: raw feature frame in, "which discount, if any" out.

It carries its own preprocessing (the fitted `FeatureEncoder` inside the saved `UpliftModel`) and the
campaign economics (`PolicyConfig`), so serving loads it by URI and calls `predict` on a DataFrame of
the raw feature columns (plus an optional `customer_id`).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """predict(df) -> one row per customer: level, expected profit and spend, and per-level predictions."""

    def load_context(self, context) -> None:
        from offerlab.uplift.model import UpliftModel
        from offerlab.uplift.policy import PolicyConfig

        self.model = UpliftModel.load(context.artifacts["model"])
        self.policy = PolicyConfig(**json.loads(Path(context.artifacts["policy"]).read_text()))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """`params={"budget": B}` (B >= 0) spends at most B over the rows of this call; without it (the signature's
        default -1) each customer gets their own best level at the policy's stored `price_of_spend` (argmax of
        profit - price x spend; plain argmax when none is stored): a campaign-wide budget must see the whole
        campaign, so batch scoring in chunks never applies the policy's budget chunk by chunk (`offerlab score
        --budget` allocates over the whole file)."""
        from offerlab.uplift.policy import recommend

        ids = model_input["customer_id"].astype(str).to_numpy() if "customer_id" in model_input else None
        budget = (params or {}).get("budget")
        budget = None if budget is None or budget < 0 else float(budget)
        policy = self.policy if budget is not None else self.policy.model_copy(update={"budget": None})
        pred = self.model.predict_levels(model_input)
        levels = list(self.model.levels)
        rec = recommend(pred, levels, policy, customer_id=ids, discounts=self.model.discounts, budget=budget,
                        price=stored_price(self.policy))
        for i, lv in enumerate(levels):
            rec[f"p_conversion_{lv}"] = pred["conversion"][:, i]
            rec[f"expected_revenue_{lv}"] = pred["revenue"][:, i]
            if "returned" in pred:
                rec[f"expected_returned_{lv}"] = pred["returned"][:, i]
                rec[f"p_return_{lv}"] = pred["p_return"][:, i]
        if ids is None:
            rec = rec.drop(columns="customer_id")
        return rec


def stored_price(policy) -> float:
    """The price of spend a policy carries (training with a budget stores it); 0 when none (plain argmax)."""
    return float(getattr(policy, "price_of_spend", None) or 0.0)


# the per-level prediction columns of a `predict` frame: <column prefix>_<level> for each key of `predict_levels`
PER_LEVEL_COLUMNS = {"conversion": "p_conversion", "revenue": "expected_revenue", "returned": "expected_returned",
                     "p_return": "p_return"}


def frame_predictions(frame: pd.DataFrame, levels: list[str], prefix: str = "") -> dict[str, np.ndarray]:
    """The model's per-level predictions (n, L) read back from a `predict` frame (columns prefixed by `prefix`):
    conversion and revenue, and returned / p_return where the model predicts returns, so a choice made again
    from the frame (a whole-file budget, a Spark price) prices levels exactly as `predict` did."""
    out = {}
    for key, name in PER_LEVEL_COLUMNS.items():
        cols = [f"{prefix}{name}_{lv}" for lv in levels]
        if all(c in frame.columns for c in cols):
            out[key] = frame[cols].to_numpy(dtype=float)
    return out


def apply_choice(rec: pd.DataFrame, choice: np.ndarray, profit: np.ndarray, spend: np.ndarray,
                 conversion: np.ndarray, revenue: np.ndarray, levels: list[str], prefix: str = "",
                 rows: np.ndarray | None = None, returned: np.ndarray | None = None) -> None:
    """Rewrite, in place, the chosen-level columns of a `policy.recommend` frame (names prefixed by `prefix`,
    e.g. "discount_" in `offerlab score offers`) for another choice of level per row; `rows`: the positions of
    `rec` the matrices describe (default: every row, in order); `returned`: the expected returned revenue per level
    of a model that predicts returns."""
    idx = np.arange(len(choice))
    at = np.arange(len(rec)) if rows is None else rows
    values = {
        "level": np.asarray(levels, dtype=object)[choice], "treat": choice > 0,
        "expected_incremental_profit": profit[idx, choice], "expected_spend": spend[idx, choice],
        "p_conversion": conversion[idx, choice], "expected_revenue": revenue[idx, choice],
        "uplift_conversion": conversion[idx, choice] - conversion[:, 0],
    }
    if returned is not None and prefix + "expected_returned_revenue" in rec.columns:
        values["expected_returned_revenue"] = returned[idx, choice]
    for name, v in values.items():
        col = prefix + name
        if rows is None:
            rec[col] = v
        else:
            rec.iloc[at, rec.columns.get_loc(col)] = v


def save_artifacts(model, policy, folder: Path) -> dict[str, str]:
    """Write the model state and policy JSON into `folder`; returns the pyfunc `artifacts` mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "uplift_model.pt")
    (folder / "policy.json").write_text(json.dumps(policy.model_dump()))
    return {"model": str(folder / "uplift_model.pt"), "policy": str(folder / "policy.json")}


def log_pyfunc(model, policy, example: pd.DataFrame, tmp_dir: Path):
    """Log the model as `model` in the active MLflow run with a signature and an input example."""
    from mlflow.models import infer_signature

    artifacts = save_artifacts(model, policy, tmp_dir)
    example = example.reset_index(drop=True)
    wrapper = UpliftPyfunc()
    wrapper.model, wrapper.policy = model, policy
    output = wrapper.predict(None, example)
    signature = infer_signature(example, output, params={"budget": np.float64(-1.0)})  # -1: no budget
    return mlflow.pyfunc.log_model(name="model", python_model=UpliftPyfunc(), artifacts=artifacts,
                                   signature=signature, input_example=example)
