"""The credit model as an MLflow pyfunc: serving loads it by URI and calls predict on applications.

Input: a DataFrame of applications (the application fields the model was trained on, plus `beh_*`
purchase-history columns when the model uses them). Output: one row per application with PD,
score, grade, reasons and terms (`CreditModel.decide`). The pickled model carries its own encoder,
calibration and decision policy, so no preprocessing lives outside it.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class CreditPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from offerlab.credit.model import CreditModel

        self.model = CreditModel.load(context.artifacts["credit_model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.model.decide(model_input).reset_index(drop=True)


def log_pyfunc(model, example: pd.DataFrame, workdir) -> None:
    """Log `model` as an MLflow pyfunc named 'model' with a signature and an input example."""
    from pathlib import Path

    from mlflow.models import infer_signature

    path = model.save(Path(workdir) / "credit_model.pkl")
    wrapper = CreditPyfunc()
    wrapper.model = model
    signature = infer_signature(example, wrapper.predict(None, example))
    mlflow.pyfunc.log_model(name="model", python_model=CreditPyfunc(), artifacts={"credit_model": str(path)},
                            signature=signature, input_example=example)
