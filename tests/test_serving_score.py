"""Batch scoring (`offerlab score`): chunked = one pass, the served models' answers, safe outputs, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.serving.score import customer_chunks, run_score
from serving_models import serving_models  # noqa: F401


def write_tables(synth, some: pd.Series, d) -> tuple[dict, pd.DataFrame]:
    """The transactions and applications of the customers `some`, and the whole customers table, as parquet."""
    tx = synth.transactions[synth.transactions["customer_id"].isin(some)]
    paths = {"tx": d / "tx.parquet", "cust": d / "cust.parquet", "apps": d / "apps.parquet"}
    tx.to_parquet(paths["tx"])
    synth.customers.to_parquet(paths["cust"])
    synth.applications[synth.applications["customer_id"].isin(some)].to_parquet(paths["apps"])
    return paths, tx


@pytest.fixture(scope="module")
def tables(serving_models, tmp_path_factory):  # noqa: F811
    s = serving_models.synth
    some = s.customers["customer_id"].head(40)  # small: scoring cost, not coverage, grows with customers
    return write_tables(s, some, tmp_path_factory.mktemp("score_inputs"))


def _score(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["score", *args])
    return res.exit_code, res.output + (res.stderr if hasattr(res, "stderr") else "")


def test_chunks_are_contiguous_customer_groups():
    tx = pd.DataFrame({"customer_id": list("abcabca"), "v": range(7)})
    apps = pd.DataFrame({"customer_id": ["c", "d"], "w": [1, 2]})
    got = [(n, t["customer_id"].tolist(), a["customer_id"].tolist()) for n, t, a in customer_chunks(2, tx, apps)]
    assert got == [(2, ["a", "a", "a", "b", "b"], []), (2, ["c", "c"], ["c", "d"])]


def test_timing_chunked_equals_one_pass(tables, tmp_path):
    paths, tx = tables
    small = run_score("timing", paths["tx"], tmp_path / "a.parquet", chunk_size=15, progress=False, n_samples=8)
    run_score("timing", paths["tx"], tmp_path / "b.parquet", chunk_size=10_000, progress=False, n_samples=8)
    a = pd.read_parquet(tmp_path / "a.parquet").set_index("customer_id").sort_index()
    b = pd.read_parquet(tmp_path / "b.parquet").set_index("customer_id").sort_index()
    assert small["customers"] == tx["customer_id"].nunique() == len(a) == len(b)
    # one scoring instant for every chunk: the end of the day of the latest transaction in the whole file
    last_day = tx["timestamp"].max().normalize()
    assert small["as_of"] == str(last_day + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1))
    np.testing.assert_allclose(a["p_within_30d"], b["p_within_30d"], rtol=1e-5)
    assert ((a["p_within_7d"] <= a["p_within_30d"] + 1e-9) & (a["p_within_30d"] <= a["p_within_90d"] + 1e-9)).all()


def test_credit_matches_the_model_and_offers_joins_all_three(serving_models, tables, tmp_path):  # noqa: F811
    import mlflow

    paths, tx = tables
    code, out = _score("credit", "--input", str(paths["apps"]), "--transactions", str(paths["tx"]),
                       "--output", str(tmp_path / "credit.parquet"), "--chunk-size", "10")
    assert code == 0, out
    credit = pd.read_parquet(tmp_path / "credit.parquet")
    apps = pd.read_parquet(paths["apps"])
    cm = mlflow.pyfunc.load_model("models:/offerlab-credit@champion").unwrap_python_model().model
    ref = cm.decide(apps, tx).reset_index(drop=True)
    got = credit.set_index("application_id").loc[apps["application_id"], "pd"].to_numpy()
    np.testing.assert_allclose(got, ref["pd"].to_numpy(), rtol=1e-6)

    code, out = _score("offers", "--input", str(paths["tx"]), "--customers", str(paths["cust"]),
                       "--applications", str(paths["apps"]), "--output", str(tmp_path / "offers.parquet"),
                       "--chunk-size", "20", "--samples", "8")
    assert code == 0, out
    offers = pd.read_parquet(tmp_path / "offers.parquet")
    assert offers["customer_id"].is_unique and len(offers) == tx["customer_id"].nunique()
    assert {"timing_p_within_30d", "discount_level", "credit_pd"} <= set(offers.columns)
    applicants = set(apps["customer_id"]) & set(tx["customer_id"])
    assert offers["credit_pd"].notna().sum() == len(applicants)
    assert offers["discount_expected_incremental_profit"].ge(0).all()  # "no discount" (profit 0) is always an option


def test_bad_inputs_are_refused_and_outputs_are_never_clobbered(tables, tmp_path):
    paths, tx = tables
    bad = tmp_path / "bad.parquet"
    tx.drop(columns="amount").to_parquet(bad)
    out = tmp_path / "out.parquet"
    code, msg = _score("timing", "--input", str(bad), "--output", str(out))
    assert code == 2 and "amount" in msg and "bad.parquet" in msg
    code, msg = _score("timing", "--input", str(tmp_path / "nope.parquet"), "--output", str(out))
    assert code == 2 and "does not exist" in msg

    code, msg = _score("timing", "--input", str(paths["tx"]), "--output", str(out), "--as-of", "soon")
    assert code == 2 and "--as-of 'soon'" in msg
    out.write_bytes(b"earlier results")
    code, msg = _score("timing", "--input", str(paths["tx"]), "--output", str(out))
    assert code == 2 and "--force" in msg
    code, msg = _score("timing", "--input", str(paths["tx"]), "--output", str(out), "--force", "--alias", "nosuch")
    assert code == 2 and "cannot load the timing model" in msg
    assert out.read_bytes() == b"earlier results"
    assert list(tmp_path.glob(".*.tmp")) == []
