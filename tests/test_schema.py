import pandas as pd
import pytest

from offerlab.data.schema import DataValidationError, validate_table


def tx(**over):
    df = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-01-15"]),
            "amount": [10.0, 20.0, 5.5],
            "order_id": ["o1", "o2", "o3"],
        }
    )
    for k, v in over.items():
        df[k] = v
    return df


def test_valid_transactions_pass_with_canonical_types():
    out = validate_table(tx(timestamp=["2024-01-01", "2024-02-01 10:00", "2024-01-15"]), "transactions")
    assert str(out["timestamp"].dtype) == "datetime64[ns]"
    assert out["amount"].dtype == "float64"


def test_transactions_without_amounts_are_a_valid_table():
    out = validate_table(tx().drop(columns="amount"), "transactions")  # date-only purchase logs
    assert "amount" not in out.columns and str(out["timestamp"].dtype) == "datetime64[ns]"


@pytest.mark.parametrize(
    "table_df, table, kwargs, message",
    [
        (tx().drop(columns="timestamp"), "transactions", {}, "table 'transactions', column 'timestamp': missing required column"),
        (tx(amount=["1", "x", "2"]), "transactions", {}, "column 'amount': expected a number (float) (example: row 1: amount='x')"),
        (tx(amount=[1.0, -3.0, 2.0]), "transactions", {}, "column 'amount': negative value (example: row 1: amount=-3.0)"),
        (tx(timestamp=["2024-01-01", "not a date", "2024-01-02"]), "transactions", {}, "column 'timestamp': unparsable timestamp (example: row 1: timestamp='not a date')"),
        (tx(timestamp=pd.to_datetime(["2024-01-01", "2099-01-01", "2024-01-02"])), "transactions", {}, "column 'timestamp': timestamp in the future"),
        (tx(order_id=["o1", "o2", "o1"]), "transactions", {}, "column 'order_id': duplicate key (example: row 2: order_id='o1')"),
        (tx(customer_id=["a", None, "b"]), "transactions", {}, "column 'customer_id': missing value"),
        (tx().iloc[:0], "transactions", {}, "table 'transactions': the table is empty"),
    ],
)
def test_transactions_refusals(table_df, table, kwargs, message):
    with pytest.raises(DataValidationError) as e:
        validate_table(table_df, table, **kwargs)
    assert message in str(e.value)


def campaign(**over):
    df = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "treatment": ["control", "d10", "d05"], "conversion": [0, 1, 1], "revenue": [0.0, 9.0, 3.0]}
    )
    for k, v in over.items():
        df[k] = v
    return df


def test_unknown_treatment_refused():
    with pytest.raises(DataValidationError, match=r"column 'treatment': unknown treatment; allowed: \['control', 'd05'\] \(example: row 1: treatment='d10'\)"):
        validate_table(campaign(), "campaign", treatments=["control", "d05"], control="control")


def test_missing_control_refused():
    with pytest.raises(DataValidationError, match="no row has the control level 'none'"):
        validate_table(campaign(), "campaign", control="none")


def test_label_outside_01_refused():
    with pytest.raises(DataValidationError, match=r"column 'conversion': label outside \{0,1\} \(example: row 2: conversion=2\)"):
        validate_table(campaign(conversion=[0, 1, 2]), "campaign")


def test_application_label_and_duplicate_key():
    apps = pd.DataFrame(
        {"application_id": ["x1", "x2"], "customer_id": ["a", "b"], "applied_at": ["2024-01-01", "2024-01-02"], "default": [0, 1]}
    )
    assert validate_table(apps, "applications")["default"].tolist() == [0, 1]
    with pytest.raises(DataValidationError, match="column 'default': label outside"):
        validate_table(apps.assign(default=[0, -1]), "applications")
    with pytest.raises(DataValidationError, match="column 'application_id': duplicate key"):
        validate_table(apps.assign(application_id=["x1", "x1"]), "applications")


def test_non_dataframe_refused():
    with pytest.raises(DataValidationError, match="expected a pandas DataFrame"):
        validate_table([1, 2], "transactions")
