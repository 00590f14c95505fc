"""`offerlab bench credit` / `offerlab train credit` end to end on tiny data and configs."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "credit"
TINY = "net: {members: 2, hidden: [4], patience: 3, batch_size: 256, lr: 0.03, select_from: []}\ntrainer: {max_epochs: 8}\n"


def _tiny_config(tmp_path: Path, base: str, extra: str = "") -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(f"base: {CONFIGS / base}\n{TINY}{extra}")
    return p


def _own_applications(tmp_path: Path, n: int = 400) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    income = rng.lognormal(10, 0.5, n)
    amount = rng.lognormal(7, 1, n)
    logit = -1.0 + 1.5 * (np.log(amount) - np.log(income / 12))
    df = pd.DataFrame({
        "ref": [f"r{i}" for i in range(n)], "client": [f"c{i}" for i in range(n)],
        "date": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
        "amount": amount, "income": income, "job": rng.choice(["a", "b"], n),
        "bad": np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no"),
    })  # fmt: skip
    df.to_csv(tmp_path / "apps.csv", index=False)
    (tmp_path / "map.yaml").write_text(
        "table: applications\ncolumns: {application_id: ref, customer_id: client, applied_at: date, default: bad}\n"
        'label_values: {"yes": 1, "no": 0}\nkeep: [amount, income, job]\n'
    )
    return tmp_path / "apps.csv", tmp_path / "map.yaml"


def test_bench_on_own_file_writes_design_json(tmp_path, caplog):
    caplog.set_level("INFO", logger="offerlab")
    data, mapping = _own_applications(tmp_path)
    cfg = _tiny_config(tmp_path, "default.yaml", "evaluation: {peers: [woe_logistic, logistic]}\n")
    out = tmp_path / "res.json"
    r = CliRunner().invoke(main, ["bench", "credit", "--data-path", str(data), "--mapping", str(mapping),
                                  "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["task"] == "credit" and res["dataset"] == "apps" and res["rows"] == 400
    assert set(res["models"]) == {"offerlab", "woe_logistic", "logistic"}
    ours = res["models"]["offerlab"]
    assert {"auc", "gini", "ks", "brier", "ece", "citl", "auc_fold"} <= set(ours)
    assert ours["gini"] == pytest.approx(2 * ours["auc"] - 1)
    assert ours["auc"] > 0.75, res["models"]  # strong signal; a broken pipeline would sit near 0.5
    assert res["oracle"] is None and set(res["seconds"]) == set(res["models"])
    # fold-level evidence beside the pooled figures: each fold's AUC, and ours paired with each peer
    assert len(ours["auc_fold"]["values"]) == 5 and ours["auc_fold"]["mean"] == pytest.approx(
        np.mean(ours["auc_fold"]["values"]))
    paired = res["paired"]["logistic"]
    assert paired["auc_difference"] == pytest.approx(ours["auc"] - res["models"]["logistic"]["auc"])
    assert paired["ci95"][0] < paired["auc_difference"] < paired["ci95"][1] and 0 <= paired["p_value"] <= 1
    assert paired["fold_differences"] == pytest.approx(np.subtract(ours["auc_fold"]["values"],
                                                                   res["models"]["logistic"]["auc_fold"]["values"]), abs=1e-5)
    assert [f["fold"] for f in res["fit"]] == list(range(5)) and res["fit"][0]["candidates"][0]["members"] == 2
    assert res["machine"]["peak_rss_gb"] > 0 and len(res["machine"]["load_avg_before"]) == 3
    assert "credit bench on apps (400 applications)" in r.output and "woe_logistic" in r.output  # summary table
    assert "offerlab fold 1/5: AUC" in caplog.text and "logistic fold 5/5: AUC" in caplog.text  # a line per fold


def test_bench_bad_input_is_refused_and_keeps_old_results(tmp_path):
    data, mapping = _own_applications(tmp_path)
    out = tmp_path / "res.json"
    out.write_text('{"old": true}')
    (tmp_path / "badmap.yaml").write_text("table: applications\ncolumns: {application_id: nope, customer_id: client, applied_at: date}\n")
    r = CliRunner().invoke(main, ["bench", "credit", "--data-path", str(data), "--mapping", str(tmp_path / "badmap.yaml"),
                                  "--out", str(out)])
    assert r.exit_code == 2
    assert "column 'nope'" in r.output
    assert json.loads(out.read_text()) == {"old": True}
    r = CliRunner().invoke(main, ["bench", "credit", "--dataset", "mapped", "--out", str(out)])
    assert r.exit_code == 2 and "needs --mapping" in r.output


@pytest.mark.slow
def test_train_german_logs_run_and_serves_pyfunc(tmp_path, mlflow_store):
    cfg = _tiny_config(tmp_path, "german.yaml", "tracking: {reason_examples: 5}\n")
    r = CliRunner().invoke(main, ["train", "credit", "--config", str(cfg), "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{"):])
    run = mlflow.get_run(summary["run_id"])
    assert run.data.metrics["eval_auc"] > 0.65 and "eval_ece" in run.data.metrics
    client = mlflow.MlflowClient()
    arts = {a.path for a in client.list_artifacts(summary["run_id"], "plots")}
    arts |= {a.path for a in client.list_artifacts(summary["run_id"], "tables")}
    assert {"plots/reliability.png", "tables/reason_code_examples.json"} <= arts
    table = mlflow.load_table("tables/reason_code_examples.json", run_ids=[summary["run_id"]])
    assert len(table) == 5 and table["applicant"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert not table["applicant"].str.startswith("g").any()  # pseudonyms, not the raw ids
    from offerlab.data.loaders import load_german

    model = mlflow.pyfunc.load_model(f"runs:/{summary['run_id']}/model")
    out = model.predict(load_german().head(2).drop(columns="default"))
    assert len(out) == 2 and {"pd", "score", "grade", "reason_1", "decision", "limit", "annual_rate"} <= set(out.columns)
    from offerlab.registry import promote

    decision = promote("credit", summary["run_id"])
    assert decision.promoted and decision.candidate_value == pytest.approx(run.data.metrics["eval_auc"])


def _german_as_lender_export(tmp_path: Path) -> tuple[Path, Path]:
    """German credit re-shaped as an unfamiliar lender's export: other names, ';' CSV, amounts in cents,
    shuffled rows, its own ids, dates and label words. (The only public application table we hold is
    German credit, so "data the model has never seen" is shown with this disguised copy of it.)"""
    from offerlab.data.loaders import load_german

    g = load_german().sample(frac=1.0, random_state=3).reset_index(drop=True)
    feats = [c for c in g.columns if c not in ("application_id", "customer_id", "applied_at", "default")]
    short = {c: f"f{j:02d}_{c[:6]}" for j, c in enumerate(feats)}
    df = g[feats].rename(columns=short)
    df[short["credit_amount"]] = (g["credit_amount"] * 100).astype("int64")  # cents
    df.insert(0, "loan_ref", [f"L-{i:05d}" for i in range(len(g))])
    df.insert(1, "borrower", [f"B{i % 997:04d}x{i}" for i in range(len(g))])
    df.insert(2, "opened", (pd.Timestamp("2021-03-01") + pd.to_timedelta(np.arange(len(g)) % 365, unit="D")).strftime("%d.%m.%Y"))
    df["outcome"] = np.where(g["default"] == 1, "charged_off", "repaid")
    df.to_csv(tmp_path / "lender_export.csv", sep=";", index=False)
    (tmp_path / "lender_map.yaml").write_text(
        "table: applications\ncolumns: {application_id: loan_ref, customer_id: borrower, applied_at: opened, default: outcome}\n"
        'label_values: {"charged_off": 1, "repaid": 0}\ntimestamp_format: "%d.%m.%Y"\nread_options: {sep: ";"}\n'
        f"keep: {list(short.values())}\n"
    )
    return tmp_path / "lender_export.csv", tmp_path / "lender_map.yaml"


@pytest.mark.slow
def test_bench_on_unfamiliar_real_applications_file(tmp_path):
    data, mapping = _german_as_lender_export(tmp_path)
    cfg = _tiny_config(tmp_path, "default.yaml", "evaluation: {peers: [logistic]}\n")
    out = tmp_path / "lender.json"
    r = CliRunner().invoke(main, ["bench", "credit", "--data-path", str(data), "--mapping", str(mapping),
                                  "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["dataset"] == "lender_export" and res["rows"] == 1000 and res["features"] == 20
    ours, peer = res["models"]["offerlab"], res["models"]["logistic"]
    # real signal found through renamed columns and a cent-scaled amount, calibrated, near the peer
    assert ours["auc"] > 0.74 and ours["auc"] > peer["auc"] - 0.03, res["models"]
    assert ours["ece"] < 0.06 and abs(ours["citl"]) < 0.02
