import pandas as pd
import pytest

from offerlab.data import DataFileMissing, DataValidationError, load_cdnow, load_german, load_hillstrom, load_mapped


def test_cdnow_checked_facts():
    t = load_cdnow()
    assert len(t) == 69_659
    assert t["customer_id"].nunique() == 23_570
    assert t["timestamp"].min() == pd.Timestamp("1997-01-01")
    assert t["timestamp"].max() == pd.Timestamp("1998-06-30")
    assert (t["amount"] >= 0).all()


def test_hillstrom_checked_facts():
    h = load_hillstrom()
    assert len(h) == 64_000
    assert sorted(h["treatment"].unique()) == ["Mens E-Mail", "No E-Mail", "Womens E-Mail"]
    # the published response rates of the RCT (visit)
    rates = h.groupby("treatment")["visit"].mean().round(3).to_dict()
    assert rates == {"Mens E-Mail": 0.183, "No E-Mail": 0.106, "Womens E-Mail": 0.151}


def test_german_checked_facts():
    g = load_german()
    assert len(g) == 1000
    assert g["default"].sum() == 300
    assert "credit_amount" in g and "creditability" not in g


def test_missing_env_names_variable(monkeypatch):
    monkeypatch.delenv("OFFERLAB_DATA_DIR")
    with pytest.raises(DataFileMissing, match="OFFERLAB_DATA_DIR is not set"):
        load_cdnow()


def test_missing_file_names_file_and_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFERLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataFileMissing, match=r"data file hillstrom.csv not found at .*OFFERLAB_DATA_DIR="):
        load_hillstrom()


MAPPING = """
table: transactions
columns: {customer_id: client, timestamp: day, amount: value, category: group}
timestamp_format: "%Y-%m-%d"
"""


def test_mapped_csv_and_parquet(tmp_path):
    raw = pd.DataFrame({"client": ["1", "2"], "day": ["2024-03-01", "2024-03-05"], "value": [3.5, 4.0], "group": ["x", "y"]})
    (tmp_path / "m.yaml").write_text(MAPPING)
    raw.to_csv(tmp_path / "t.csv", index=False)
    raw.to_parquet(tmp_path / "t.parquet")
    for f in ("t.csv", "t.parquet"):
        t = load_mapped(tmp_path / f, tmp_path / "m.yaml")
        assert list(t["customer_id"]) == ["1", "2"]
        assert t["timestamp"].iloc[1] == pd.Timestamp("2024-03-05")
        assert t["order_id"].is_unique


def test_mapped_refusals(tmp_path):
    (tmp_path / "m.yaml").write_text(MAPPING)
    pd.DataFrame({"client": ["1"], "day": ["2024-03-01"], "price": [3.5], "group": ["x"]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataValidationError, match="column 'value': column named in the mapping is absent from a.csv"):
        load_mapped(tmp_path / "a.csv", tmp_path / "m.yaml")
    pd.DataFrame({"client": ["1"], "day": ["01/03/2024"], "value": [3.5], "group": ["x"]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataValidationError, match=r"column 'timestamp': does not match timestamp_format '%Y-%m-%d' \(example: row 0: '01/03/2024'\)"):
        load_mapped(tmp_path / "b.csv", tmp_path / "m.yaml")
    (tmp_path / "bad.yaml").write_text("table: orders\ncolumns: {}\n")
    with pytest.raises(ValueError, match="unknown table 'orders'"):
        load_mapped(tmp_path / "b.csv", tmp_path / "bad.yaml")
    with pytest.raises(DataFileMissing, match="data file not found"):
        load_mapped(tmp_path / "nope.csv", tmp_path / "m.yaml")


def test_example_mapping_loads_cdnow():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    t = load_mapped(Path(__import__("os").environ["OFFERLAB_DATA_DIR"]) / "CDNOW_master.txt", root / "configs/data/cdnow_mapping.yaml")
    assert len(t) == 69_659


def test_bare_application_file_through_mapping(tmp_path):
    pd.DataFrame({"amount": [100, 250], "bad": ["yes", "no"]}).to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "m.yaml").write_text(
        "table: applications\ncolumns: {default: bad}\nlabel_values: {'yes': 1, 'no': 0}\nkeep: [amount]\napplied_at: '2020-01-01'\n"
    )
    apps = load_mapped(tmp_path / "a.csv", tmp_path / "m.yaml")
    assert list(apps["customer_id"]) == list(apps["application_id"]) == ["0", "1"]
    assert apps["default"].tolist() == [1, 0] and (apps["applied_at"] == pd.Timestamp("2020-01-01")).all()
