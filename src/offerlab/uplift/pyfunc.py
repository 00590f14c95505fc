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
        default -1) each customer gets their own best level: a campaign-wide budget must see the whole campaign,
        so batch scoring in chunks never applies the policy's budget chunk by chunk."""
        ids = model_input["customer_id"].astype(str).to_numpy() if "customer_id" in model_input else None
        budget = (params or {}).get("budget")
        budget = None if budget is None or budget < 0 else float(budget)
        policy = self.policy if budget is not None else self.policy.model_copy(update={"budget": None})
        rec = self.model.recommend(model_input, policy, customer_id=ids, budget=budget)
        pred = self.model.predict_levels(model_input)
        for i, lv in enumerate(self.model.levels):
            rec[f"p_conversion_{lv}"] = pred["conversion"][:, i]
            rec[f"expected_revenue_{lv}"] = pred["revenue"][:, i]
        if ids is None:
            rec = rec.drop(columns="customer_id")
        return rec


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
