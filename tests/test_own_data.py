"""A stranger's three files to bench results, a scored campaign and a served model, in the README's commands."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.data.stranger import write_stranger_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.mark.slow
def test_run_data_benches_scores_registers_and_serves(tmp_path, monkeypatch):
    from offerlab.data.synth import generate

    synth = generate(3000, seed=0)
    spec = write_stranger_files(synth, tmp_path / "files")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["run", "--data", str(spec), "--quick", "--bench"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["families"] == ["timing", "uplift", "credit"]
    assert out["check"]["readiness"] == {"timing": "ready", "uplift": "ready", "credit": "ready"}
    work = tmp_path / "runs" / "stranger"
    assert (work / "data_check" / "data_check.md").is_file()
    # bench results: ours beside the peers, on the stranger's data
    bench = {f: json.loads((work / "bench" / f"{f}.json").read_text()) for f in out["families"]}
    assert {"offerlab", "bg_nbd", "pareto_nbd"} <= set(bench["timing"]["models"])
    assert bench["timing"]["dataset"] == "stranger" and bench["credit"]["dataset"] == "stranger"
    assert {"offerlab", "t_learner"} <= set(bench["uplift"]["models"])
    assert set(bench["uplift"]["models"]["offerlab"]["qini"]) == {"promo_a", "promo_b", "promo_c"}
    assert bench["credit"]["models"]["offerlab"]["auc"] > 0.6
    # the scored campaign: every campaign customer, levels by the stranger's names, profits from the spec's rates
    camp = pd.read_parquet(out["scored"]["campaign_scored"]["path"])
    assert len(camp) == len(synth.campaign) and set(camp["level"]) <= {"holdout", "promo_a", "promo_b", "promo_c"}
    assert camp.loc[camp["level"] == "holdout", "expected_incremental_profit"].eq(0).all()
    assert (camp.loc[camp["treat"], "expected_incremental_profit"] > 0).all()
    offers = pd.read_parquet(out["scored"]["offers"]["path"])
    assert offers["customer_id"].nunique() == synth.transactions["customer_id"].nunique()
    assert {"timing_p_within_30d", "discount_level", "credit_decision"} <= set(offers.columns)
    for family in out["families"]:
        assert "is now 'champion'" in out[family]["registry"]

    # served: /offers on the stranger's attribute and application names, from the registry the run wrote
    from serving.service import OffersLocal

    from offerlab.serving.contracts import OffersRequest

    svc = OffersLocal()
    assert svc.wait_ready(120)
    tx = synth.transactions[synth.transactions["customer_id"] == "c0000001"].sort_values("timestamp")
    body = {"customer_id": "anyone", "as_of": "2025-01-01T00:00:00",
            "history": [{"timestamp": t.isoformat(), "amount": float(a), "category": c}
                        for t, a, c in zip(tx["timestamp"], tx["amount"], tx["category"], strict=True)],
            "attributes": {"Region": "north", "AgeGroup": "35-44", "Channel": "app", "first_seen": "2023-02-01"},
            "application": {"loan_amount": 600.0, "yearly_income": 42000.0, "months": 6, "age": 38,
                            "years_employed": 4.5, "home": "rent", "reason": "electronics", "open_loans": 1}}
    (answer,) = asyncio.run(svc.offers_batch([OffersRequest.model_validate(body)]))
    assert answer.discount.level in (None, "promo_a", "promo_b", "promo_c")
    assert {lv.level for lv in answer.discount.levels} == {"holdout", "promo_a", "promo_b", "promo_c"}
    assert answer.credit.decision in ("approve", "decline") and 0 < answer.credit.pd < 1
    assert 0 <= answer.timing.p_buy_30d <= 1
