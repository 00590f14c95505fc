"""A credit model trained with return and repayment features, scored through every door: `offerlab score credit`
with --returns / --repayments, and the serving adapter (which /offers uses) from a request's returns and
repayments, both equal to the library's `CreditModel.decide` on the same tables; without the tables, refused."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main
from serving_models import serving_models  # noqa: F401


@pytest.fixture(scope="module")
def paying(serving_models, tmp_path_factory):  # noqa: F811
    """A tiny credit model with ret_* and rep_* features in its own store, and its applicants' tables as parquet."""
    import mlflow

    from offerlab.credit.data import application_features
    from offerlab.credit.model import CreditModel
    from offerlab.credit.pyfunc import log_pyfunc

    s = serving_models.synth
    d = tmp_path_factory.mktemp("paying")
    X = application_features(s.applications, s.transactions, returns=s.returns, repayments=s.repayments)
    assert any(c.startswith("rep_") for c in X.columns) and any(c.startswith("ret_return") for c in X.columns)
    model = CreditModel({"members": 2, "hidden": [4], "patience": 2, "batch_size": 64},
                        {"max_epochs": 2}).fit(X, s.applications["default"].to_numpy())
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d / 'mlflow.db'}"  # the CLI's --model-uri reads this store
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("score-returns-test")  # this store's own (an earlier test's active id is another store's)
    example = s.applications.head(5).drop(columns="default")
    example = example.join(X.head(5)[[c for c in X.columns if c not in example.columns]])
    with mlflow.start_run() as run:
        log_pyfunc(model, example, d / "art")
    uri = f"runs:/{run.info.run_id}/model"
    # applicants with a late instalment and a return, so the features matter
    late = s.repayments[s.repayments["paid_at"].isna() | (s.repayments["paid_at"] > s.repayments["due_date"])]
    some = pd.Index(s.applications["customer_id"]).intersection(late["customer_id"].unique())
    some = some.intersection(s.returns["customer_id"].unique())[:25]
    assert len(some) >= 5
    apps = s.applications[s.applications["customer_id"].isin(some)].drop(columns="default")
    tx = s.transactions[s.transactions["customer_id"].isin(some)]
    paths = {k: d / f"{k}.parquet" for k in ("apps", "tx", "returns", "repayments")}
    apps.to_parquet(paths["apps"])
    tx.to_parquet(paths["tx"])
    s.returns.to_parquet(paths["returns"])  # the whole file: the scorer keeps the scored customers' rows
    s.repayments.to_parquet(paths["repayments"])
    yield model, uri, paths, apps, tx, s
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old
    mlflow.set_tracking_uri(old or "")


def _score(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["score", *[str(a) for a in args]])
    return r.exit_code, r.output


def test_score_credit_reads_returns_and_repayments_and_refuses_without(paying, tmp_path):
    model, uri, paths, apps, tx, s = paying
    out = tmp_path / "credit.parquet"
    code, msg = _score("credit", "--input", paths["apps"], "--transactions", paths["tx"], "--model-uri", uri,
                       "--output", out)
    assert code == 2 and "repayment features (rep_*): pass the repayments table" in msg and not out.exists()
    code, msg = _score("credit", "--input", paths["apps"], "--transactions", paths["tx"], "--returns",
                       paths["returns"], "--repayments", paths["repayments"], "--model-uri", uri, "--output", out,
                       "--chunk-size", 7)
    assert code == 0, msg
    got = pd.read_parquet(out).set_index("application_id").loc[apps["application_id"]]
    ref = model.decide(apps.reset_index(drop=True), tx, returns=s.returns, repayments=s.repayments)
    np.testing.assert_allclose(got["pd"].to_numpy(), ref["pd"].to_numpy(), rtol=1e-6)
    assert (got["decision"].to_numpy() == ref["decision"].to_numpy()).all()
    # a return of an order the transactions do not hold is refused with the row named
    bad = s.returns[s.returns["customer_id"].isin(apps["customer_id"])].head(3).copy()
    bad.loc[bad.index[0], "order_id"] = "no-such-order"
    bad.to_parquet(tmp_path / "bad_returns.parquet")
    code, msg = _score("credit", "--input", paths["apps"], "--transactions", paths["tx"], "--returns",
                       tmp_path / "bad_returns.parquet", "--repayments", paths["repayments"], "--model-uri", uri,
                       "--output", tmp_path / "x.parquet")
    assert code == 2 and "returns" in msg and "no-such-order" in msg, msg
    code, msg = _score("discount", "--input", paths["tx"], "--returns", paths["returns"], "--output",
                       tmp_path / "d.parquet")
    assert code == 2 and "`score discount` reads neither" in msg


def test_serving_credit_from_a_requests_returns_and_repayments_equals_the_library(paying):
    from offerlab.serving.contracts import CreditRequest
    from offerlab.serving.models import CreditAdapter

    model, _, _, apps, tx, s = paying
    adapter = CreditAdapter(model, "test")
    app = apps.iloc[0]
    cid = app["customer_id"]
    as_of = pd.Timestamp(app["applied_at"]) - pd.Timedelta(microseconds=1)  # features strictly before applied_at
    own = tx[(tx["customer_id"] == cid) & (tx["timestamp"] <= as_of)]
    ret = s.returns[(s.returns["customer_id"] == cid) & (s.returns["returned_at"] <= as_of)]
    rep = s.repayments[s.repayments["customer_id"] == cid]
    body = {"customer_id": "c-x", "as_of": as_of.isoformat(),
            "history": [{"timestamp": t.isoformat(), "amount": float(a), "category": str(c), "order_id": str(o),
                         "payment_method": str(m)} for t, a, c, o, m in
                        own[["timestamp", "amount", "category", "order_id", "payment_method"]].itertuples(index=False)],
            "returns": [{"order_id": str(o), "returned_at": t.isoformat(), "amount": float(a)} for o, t, a in
                        ret[["order_id", "returned_at", "amount"]].itertuples(index=False)],
            "repayments": [{"credit_id": str(k), "issued_at": i.isoformat(), "due_date": du.isoformat(),
                            "paid_at": None if pd.isna(p) else p.isoformat(), "amount_due": float(ad),
                            "amount_paid": float(ap)} for k, i, du, p, ad, ap in
                           rep[["credit_id", "issued_at", "due_date", "paid_at", "amount_due", "amount_paid"]]
                           .itertuples(index=False)],
            "application": {k: (v.item() if hasattr(v, "item") else v) for k, v in app.items()
                            if k not in ("application_id", "customer_id", "applied_at")}}
    req = CreditRequest.model_validate(body)
    assert req.repayments, "the chosen applicant has instalments"
    ans = adapter.predict([req])[0]
    one = apps.iloc[[0]].reset_index(drop=True)
    ref = model.decide(one, tx, returns=s.returns, repayments=s.repayments)
    assert ans.pd == pytest.approx(float(ref["pd"].iloc[0]), rel=1e-6)
    # the same request without its repayments answers otherwise: they are read, not ignored
    bare = adapter.predict([CreditRequest.model_validate({**body, "repayments": []})])[0]
    assert bare.pd != pytest.approx(ans.pd, rel=1e-9)


def test_offers_hands_returns_and_repayments_to_credit_and_no_timing_for_a_history_all_returned():
    from serving.service import _Parts

    from offerlab.serving.contracts import OffersRequest

    rep = [{"credit_id": "k1", "issued_at": "2024-06-01T00:00:00", "due_date": "2024-07-01T00:00:00",
            "paid_at": None, "amount_due": 50.0, "amount_paid": 0.0}]
    base = {"history": [{"timestamp": "2024-09-02T10:15:00", "amount": 42.5, "order_id": "o1"}],
            "as_of": "2024-12-01T00:00:00", "application": {"age": 40}, "repayments": rep}
    back = OffersRequest.model_validate({**base, "customer_id": "a", "returns": [
        {"order_id": "o1", "returned_at": "2024-09-05T00:00:00", "amount": 42.5}]})
    kept = OffersRequest.model_validate({**base, "customer_id": "b"})
    parts = _Parts.of([back, kept])
    assert parts.timing_idx == [1]  # the first customer sent everything back: no purchase, no timing answer
    assert parts.credit_idx == [0, 1]
    assert [len(c.repayments) for c in parts.credit] == [1, 1] and len(parts.credit[0].returns) == 1
