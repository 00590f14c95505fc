"""The synthetic marketplace as a stranger's files: other column and level names, gross revenue, string labels,
timestamps with offsets, and the data spec that describes them.

The "same model through either door" check (tests/test_either_door.py, scripts/bench_either_door.py) runs every
command from this spec and compares with the built-in route on the very same customers: the numbers must agree
within noise. `amounts=False` writes the order log without amounts (a date-only purchase log).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

LEVEL_NAMES = {"control": "holdout", "discount_05": "promo_a", "discount_10": "promo_b", "discount_15": "promo_c"}
LABELS = {1: "bad", 0: "good"}


def _offset_time(ts: pd.Series) -> pd.Series:
    """ISO timestamps with an explicit +00:00 offset (the spec then declares the zone the days count in)."""
    return ts.astype("datetime64[ns]").astype(str).str.replace(" ", "T", regex=False) + "+00:00"  # to the ns


def write_stranger_files(synth, out_dir: str | Path, *, amounts: bool = True, name: str = "stranger",
                         campaign_assignment: str = "randomised") -> Path:
    """Write orders / customers / campaign / applications CSVs of a stranger's shape and `spec.yaml`; return its path.

    The order of rows is kept, so splits and folds seeded alike pick the same customers as the built-in route."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = synth.meta
    tx = synth.transactions
    orders = pd.DataFrame({"client_ref": tx["customer_id"], "ordered": _offset_time(tx["timestamp"]),
                           "dept": tx["category"], "order_no": tx["order_id"]})
    if amounts:
        orders.insert(2, "basket_value", tx["amount"])
    if "payment_method" in tx.columns:
        orders["paid_with"] = tx["payment_method"]
    orders.to_csv(out / "orders.csv", index=False)
    history = _returns_and_repayments(synth, out)
    cu = synth.customers
    pd.DataFrame({"client_ref": cu["customer_id"], "Region": cu["region"], "AgeGroup": cu["age_band"],
                  "Channel": cu["signup_channel"], "first_seen": _offset_time(cu["acquired_at"])}
                 ).to_csv(out / "customers.csv", index=False)
    camp = synth.campaign
    rates = {LEVEL_NAMES[k]: float(v) for k, v in meta["discounts"].items()}
    offer = camp["treatment"].map(LEVEL_NAMES)
    gross = camp["revenue"].to_numpy() / (1.0 - offer.map(rates).to_numpy(dtype=float))  # the list price
    campaign = pd.DataFrame({"client_ref": camp["customer_id"], "offer": offer,
                             "bought": np.where(camp["conversion"].to_numpy() == 1, "Y", "N"), "list_value": gross})
    camp_cols = {"customer_id": "client_ref", "treatment": "offer", "conversion": "bought", "revenue": "list_value"}
    if "returned_revenue" in camp.columns:  # at list price too: the spec's semantics.revenue covers both
        campaign["returned_list_value"] = camp["returned_revenue"].to_numpy() / (
            1.0 - offer.map(rates).to_numpy(dtype=float))
        camp_cols["returned_revenue"] = "returned_list_value"
    campaign.to_csv(out / "campaign.csv", index=False)
    ap = synth.applications
    pd.DataFrame({"app_ref": ap["application_id"], "client_ref": ap["customer_id"],
                  "applied_on": _offset_time(ap["applied_at"]), "loan_amount": ap["requested_amount"],
                  "yearly_income": ap["income"], "months": ap["term_months"], "age": ap["age"],
                  "years_employed": ap["employment_years"], "home": ap["housing"], "reason": ap["purpose"],
                  "open_loans": ap["existing_credits"], "outcome": ap["default"].map(LABELS)}
                 ).to_csv(out / "applications.csv", index=False)
    tx_cols = {"customer_id": "client_ref", "timestamp": "ordered", "category": "dept", "order_id": "order_no"}
    if amounts:
        tx_cols["amount"] = "basket_value"
    if "payment_method" in tx.columns:
        tx_cols["payment_method"] = "paid_with"
    terms = Path(__file__).resolve().parents[3] / "configs" / "credit" / "terms.yaml"
    spec = {
        "name": name,
        "tables": {
            "transactions": {"path": "orders.csv", "columns": tx_cols, "read_options": {"dtype": {"client_ref": "str"}}},
            "customers": {"path": "customers.csv", "columns": {"customer_id": "client_ref"},
                          "keep": ["Region", "AgeGroup", "Channel", "first_seen"], "dates": ["first_seen"]},
            "campaign": {"path": "campaign.csv", "columns": camp_cols,
                         "control": LEVEL_NAMES[meta["control"]], "label_values": {"Y": 1, "N": 0}},
            "applications": {"path": "applications.csv",
                             "columns": {"application_id": "app_ref", "customer_id": "client_ref",
                                         "applied_at": "applied_on", "default": "outcome"},
                             "keep": ["loan_amount", "yearly_income", "months", "age", "years_employed", "home",
                                      "reason", "open_loans"],
                             "label_values": {"bad": 1, "good": 0}},
        },
        "semantics": {"revenue": "gross", "timezone": "UTC", "campaign_feature_date": meta["campaign_date"],
                      "campaign_assignment": campaign_assignment},
        "economics": {"discounts": rates, "margin": float(meta["margin"]), "contact_cost": float(meta["contact_cost"]),
                      "budget": None,
                      "credit": {"terms": str(terms), "amount_column": "loan_amount", "income_column": "yearly_income"}},
        "protocol": {"calibration_end": "2024-06-30", "holdout_end": "2024-12-31"},
    }
    spec["tables"].update(history)
    if "returns" in history:  # the built-in route's timing truth counts every order: returns kept
        spec["semantics"]["returns"] = "keep"
    if "returned_revenue" in camp_cols:
        spec["economics"]["returns"] = {"counted": True, "handling_cost": float(meta["return_handling_cost"])}
    if campaign_assignment == "randomised":  # the RCT's design, as a CRM team knows it
        spec["semantics"]["assignment_probabilities"] = {LEVEL_NAMES[k]: float(v)
                                                         for k, v in meta["assignment_probs"].items()}
    path = out / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _returns_and_repayments(synth, out: Path) -> dict:
    """returns.csv and repayments.csv in a stranger's names (where the marketplace has them); their spec blocks."""
    blocks = {}
    ref = {"read_options": {"dtype": {"client_ref": "str"}}}
    if getattr(synth, "returns", None) is not None:
        r = synth.returns
        pd.DataFrame({"client_ref": r["customer_id"], "order_no": r["order_id"],
                      "returned_on": _offset_time(r["returned_at"]), "refund": r["amount"]}
                     ).to_csv(out / "returns.csv", index=False)
        blocks["returns"] = {"path": "returns.csv", "columns": {"customer_id": "client_ref", "order_id": "order_no",
                                                                "returned_at": "returned_on", "amount": "refund"}, **ref}
    if getattr(synth, "repayments", None) is not None:
        r = synth.repayments
        paid = _offset_time(r["paid_at"]).where(r["paid_at"].notna())  # unpaid: an empty cell
        pd.DataFrame({"client_ref": r["customer_id"], "loan_ref": r["credit_id"],
                      "started": _offset_time(r["issued_at"]), "due": _offset_time(r["due_date"]), "paid": paid,
                      "due_amount": r["amount_due"], "paid_amount": r["amount_paid"]}
                     ).to_csv(out / "repayments.csv", index=False)
        blocks["repayments"] = {"path": "repayments.csv", "columns": {
            "customer_id": "client_ref", "credit_id": "loan_ref", "issued_at": "started", "due_date": "due",
            "paid_at": "paid", "amount_due": "due_amount", "amount_paid": "paid_amount"}, **ref}
    return blocks
