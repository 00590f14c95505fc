"""`offerlab monitor drift` and `performance`: numbers against hand-computed values, exit codes, a simulated shift."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.monitor import drift, performance
from offerlab.monitor.decision_log import conform, pseudonyms, read_decisions

KEY = "test-key"
MODERATE = 0.2 * np.log(5 / 3) + 0.2 * np.log(1.4)  # shares 50/50 -> 30/70


def write_log(path: Path, regions: list[str], p30: list[float], refused: int = 0) -> Path:
    n = len(regions)
    df = pd.DataFrame({"customer_key": pseudonyms([f"c{i}" for i in range(n)], KEY),
                       "logged_at": pd.Timestamp("2025-01-02"), "day": "2025-01-02", "status": "answered",
                       "p_buy_30d": p30, "discount_level": "none", "discount_expected_profit": 0.0,
                       "features": [json.dumps({"uplift.region": r, "timing.purchases": 3}) for r in regions]})
    if refused:
        df = pd.concat([df, pd.DataFrame({"logged_at": [pd.Timestamp("2025-01-02")] * refused, "day": "2025-01-02",
                                          "status": "refused", "refused_fields": "attributes.region",
                                          "features": "{}"})], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    conform(df).to_parquet(path, index=False)
    return path


def test_drift_psi_by_hand_and_refusal_shares(tmp_path):
    p = list(np.linspace(0.01, 0.99, 100))
    ref = read_decisions([str(write_log(tmp_path / "r.parquet", ["x"] * 50 + ["y"] * 50, p))])
    cur = read_decisions([str(write_log(tmp_path / "c.parquet", ["x"] * 30 + ["y"] * 70, p, refused=2))])
    t = drift.drift_table(ref, cur).set_index("variable")
    assert t.loc["region", "psi"] == pytest.approx(MODERATE) and t.loc["region", "status"] == "moderate"
    assert t.loc["purchases", "psi"] == pytest.approx(0.0) and t.loc["p_buy_30d", "psi"] == pytest.approx(0.0)
    assert set(t.loc[t["family"] == "uplift"].index) == {"region", "discount_expected_profit", "discount_level"}
    r = drift.refusal_table(ref, cur)
    assert r.to_dict("records") == [{"family": "request", "refusal": "refused: attributes.region",
                                     "share_reference": 0.0, "share_current": pytest.approx(2 / 102)}]
    assert drift.exit_code(t) == 3 and drift.exit_code(t, "significant") == 0


def test_drift_cli_exit_codes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = [0.5] * 100
    write_log(tmp_path / "ref" / "a.parquet", ["x"] * 50 + ["y"] * 50, p)
    same = write_log(tmp_path / "same.parquet", ["x"] * 50 + ["y"] * 50, p)
    mod = write_log(tmp_path / "mod.parquet", ["x"] * 30 + ["y"] * 70, p)
    sig = write_log(tmp_path / "sig.parquet", ["x"] * 10 + ["y"] * 90, p)

    def run(*args):
        return CliRunner().invoke(main, ["monitor", "drift", "--reference", str(tmp_path / "ref"), *args, "--no-track"])

    assert run("--current", str(same)).exit_code == 0
    res = run("--current", str(mod), "--out", "m.md")
    assert res.exit_code == 3 and "uplift.region: PSI 0.169 (moderate)" in res.output
    assert "| feature | region | 0.1695 | moderate |" in (tmp_path / "m.md").read_text()
    assert run("--current", str(mod), "--fail-on", "significant").exit_code == 0
    assert run("--current", str(sig)).exit_code == 4
    bad = run("--current", str(tmp_path / "nope"))
    assert bad.exit_code == 2 and "decision log" in bad.output and "nope does not exist" in bad.output


def hand_case(tmp_path: Path) -> tuple[pd.DataFrame, dict]:
    ids = ["a", "b", "c", "d"]
    as_of = pd.Timestamp("2025-01-01")
    d = pd.DataFrame({"customer_key": pseudonyms(ids, KEY), "logged_at": as_of, "day": "2025-01-01",
                      "status": "answered", "as_of": as_of, "p_buy_30d": [0.9, 0.6, 0.3, 0.1],
                      "credit_pd": [0.8, 0.7, 0.3, 0.1], "discount_level": ["none", "d10", "none", "d10"],
                      "discount_rate": [0.0, 0.1, 0.0, 0.1], "discount_expected_profit": [0.0, 2.0, 0.0, 3.0],
                      "p_none": 0.5, "discount_margin": 0.4, "discount_contact_cost": 1.0, "features": "{}"})
    purchases = pd.DataFrame({"customer_id": ["a", "b", "c", "a"],
                              "timestamp": as_of + pd.to_timedelta([5, 40, 10, -7], unit="D")})
    outcomes = {"purchases": purchases,
                "campaign": pd.DataFrame({"customer_id": ids, "conversion": [0, 1, 1, 0], "revenue": [0, 90.0, 50.0, 0]}),
                "defaults": pd.DataFrame({"customer_id": ids, "default": [1, 0, 1, 0]})}
    return read_decisions([str(_write(conform(d), tmp_path / "d.parquet"))]), outcomes


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    return path


def test_performance_by_hand(tmp_path):
    d, outcomes = hand_case(tmp_path)
    rep = performance.performance_report(d, outcomes, KEY, observed_until="2025-03-01")
    t = rep["timing"]  # times 5, 40, 10 (a's purchase before as_of is not the next one) and 59 censored
    assert t["c_index"] == pytest.approx(5 / 6) and t["auc_30d"] == pytest.approx(0.75)
    assert t["brier_30d"] == pytest.approx((0.01 + 0.36 + 0.49 + 0.01) / 4) and t["observed_30d"] == 0.5
    c = rep["credit"]
    assert c["auc"] == pytest.approx(0.75) and c["ece"] == pytest.approx((0.2 + 0.7 + 0.7 + 0.1) / 4)
    u = rep["uplift"]  # profits 0, 0.4*100-10-1 = 29, 20, -1: V = 12; V0 = (0 + 20) / 2 = 10 (SNIPW)
    assert u["realised_total"] == pytest.approx(4 * (12 - 10)) and u["expected_total"] == pytest.approx(5.0)
    flags = performance.degradations(rep, {"credit": {"auc": 0.9, "ece": 0.4}, "timing": {"c_index": 0.85}}, 0.05)
    assert flags == ["credit auc 0.7500 vs 0.9000 at promotion (worse by 0.1500 > tolerance 0.05)"]


def test_performance_cli(tmp_path, mlflow_store, monkeypatch):
    d, outcomes = hand_case(tmp_path)
    for name, table in outcomes.items():
        table.to_parquet(tmp_path / f"{name}.parquet")
    args = ["monitor", "performance", "--decisions", str(tmp_path / "d.parquet"), "--no-track",
            *sum((["--outcomes", str(tmp_path / f"{n}.parquet")] for n in outcomes), [])]
    monkeypatch.delenv("OFFERLAB_DECISION_LOG_KEY", raising=False)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "OFFERLAB_DECISION_LOG_KEY" in res.output
    monkeypatch.setenv("OFFERLAB_DECISION_LOG_KEY", KEY)
    res = CliRunner().invoke(main, [*args, "--observed-until", "2025-03-01"])
    assert res.exit_code == 0, res.output
    assert '"c_index": 0.8333' in res.output and "| auc | 0.7500 |" in (tmp_path / "performance_report.md").read_text()
    pd.DataFrame({"customer_id": ["a"], "what": [1]}).to_parquet(tmp_path / "odd.parquet")
    res = CliRunner().invoke(main, [*args, "--outcomes", str(tmp_path / "odd.parquet")])
    assert res.exit_code == 2 and "odd.parquet: not purchases" in res.output


@pytest.mark.slow
def test_simulated_shift_is_flagged_exactly(serving_models, tmp_path):  # noqa: F811
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import simulate_shift

    r = simulate_shift.run(10_000, tmp_path, keep_other=0.3)  # about 50 s
    flagged = {k for k, (_, kind) in r["drift"]["flagged"].items() if kind == "feature"}
    assert flagged == {"uplift.region", "credit.requested_amount__q"}
    assert r["drift"]["exit_code"] == 4 and r["drift"]["max_psi_unshifted_features"] < 0.10
    ref, cur = r["reference"]["performance"]["credit"], r["current"]["performance"]["credit"]
    # the price change raised the true PD; the model sees the larger amounts and raises its PD too
    assert cur["truth"]["mean_true_pd"] > ref["truth"]["mean_true_pd"] and cur["mean_pd"] > ref["mean_pd"]


from serving_models import serving_models  # noqa: E402, F401
