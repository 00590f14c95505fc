"""Credit default: a calibrated PD network, reason codes and risk-based credit terms.

Will this customer repay, and on what terms? A single applicant (or a batch) in Python::

    from offerlab.credit import CreditModel, DecisionConfig, application_features
    from offerlab.data.loaders import load_german

    apps = load_german()                                   # canonical `applications` table
    X = application_features(apps)                         # + transactions=... for purchase-history features
    model = CreditModel({"members": 5}).fit(X, apps["default"])
    model.decision = DecisionConfig.from_yaml("configs/credit/terms.yaml")
    offers = model.decide(apps.head(1).drop(columns="default"))
    # columns: pd, score, grade, reason_1..reason_4 (+ _effect in log-odds), decision, decline_reason,
    #          limit, annual_rate, rate_capped, term_options, insurance_offered, insurance_monthly_premium,
    #          covers_request (when the requested amount column is known)

Population stability of new applications against the training population (per feature and for
the score, 0.10 / 0.25 thresholds): `model.monitor(new_applications)`.

With purchase histories (the synthetic marketplace or your own transactions) pass
`model.decide(applications, transactions)`: behaviour features are computed from each customer's
purchases up to `applied_at` only. A model logged by `offerlab train credit` loads with
`mlflow.pyfunc.load_model(uri).predict(applications_with_beh_columns)` and returns the same table.

Modules: data (features, encoder), model (Lightning wide & deep net, calibrated ensemble),
calibration, metrics, explain (occlusion reason codes), scorecard (PDO points, grades), terms
(limit, rate, term options, insurance), decision (all of it under one config), monitoring (PSI),
baselines (LightGBM, WoE logistic scorecard, logistic), bench, train, cli, jobs, pyfunc.
"""

from offerlab.credit.data import application_features
from offerlab.credit.decision import DecisionConfig
from offerlab.credit.model import CreditModel

__all__ = ["CreditModel", "DecisionConfig", "application_features"]
