"""Timing family, training checks: the model learns a known process, answers from Python, logs to MLflow."""

import numpy as np
import pandas as pd
import pytest

from offerlab.data.synth import generate, synth_to_dir
from offerlab.timing.baselines import NaiveRate
from offerlab.timing.metrics import evaluate_predictions, holdout_truth, horizon_days
from offerlab.timing.train import CONFIG_DIR, NeuralTPP, load_config

CAL, END = "2024-06-30", "2024-12-31"
FAST = {"training": {"seeds": [0], "max_epochs": 5, "validation_days": 0},
        "prediction": {"n_samples": 40}, "trainer": {"enable_progress_bar": False}}


@pytest.fixture(scope="module")
def synth_small():
    return generate(1500, seed=3)


@pytest.fixture(scope="module")
def fitted(synth_small):
    cfg = load_config(CONFIG_DIR / "synth.yaml", FAST)
    tx = synth_small.transactions
    model = NeuralTPP(cfg, progress=False).fit(tx[tx["timestamp"] <= pd.Timestamp(CAL) + pd.Timedelta(days=1)], CAL)
    return model, tx


def test_model_beats_naive_rate_on_a_known_process(fitted):
    model, tx = fitted
    calib = tx[tx["timestamp"] < pd.Timestamp(CAL) + pd.Timedelta(days=1)]
    h = horizon_days(CAL, END)
    ours = model.predict(h, 30.0)
    naive = NaiveRate(same_day="keep").fit(calib, CAL).predict(h, 30.0)
    truth = holdout_truth(tx, CAL, END, ours.index, same_day="keep")
    m_ours, m_naive = evaluate_predictions(ours, truth, h), evaluate_predictions(naive, truth, h)
    assert m_ours["brier_30d"] < m_naive["brier_30d"] - 0.01
    assert m_ours["count_rmse"] < m_naive["count_rmse"]
    assert m_ours["auc_holdout"] > m_naive["auc_holdout"]
    assert 0.7 < m_ours["total_pred"] / m_ours["total_true"] < 1.3


def test_answers_for_every_customer(fitted):
    model, tx = fitted
    frame = model.predictor.predict_frame(tx, pd.Timestamp(END), horizon_days=90, n_samples=20)
    assert frame["customer_id"].is_unique and len(frame) == tx["customer_id"].nunique()
    p7, p30, p90 = frame["p_within_7d"], frame["p_within_30d"], frame["p_within_90d"]
    assert ((p7 <= p30 + 1e-6) & (p30 <= p90 + 1e-6)).all()
    np.testing.assert_allclose(frame["p_no_purchase_90d"], 1 - p90, atol=1e-6)
    fin = np.isfinite(frame["median_days"])
    assert (frame.loc[fin, "q10_days"] <= frame.loc[fin, "median_days"] + 1e-3).all()
    assert frame["top1_category"].isin(model.predictor.categories).all()
    assert (frame["top1_prob"] >= frame["top2_prob"]).all()
    assert (frame["expected_purchases_90d"] >= 0).all()


def test_count_head_survives_save_and_load(fitted, tmp_path):
    from offerlab.timing.predict import load_predictor, save_predictor

    model, _ = fitted
    assert model.predictor.count_head is not None
    again = load_predictor(save_predictor(model.predictor, tmp_path / "p.pt"))
    np.testing.assert_allclose(again.expected_counts(model.state, 184.0), model.predictor.expected_counts(model.state, 184.0),
                               rtol=1e-6)
    p_any = again.prob_any(model.state, 184.0)
    assert ((p_any > 0) & (p_any < 1)).all()
    assert np.all(again.prob_any(model.state, 30.0) <= p_any + 1e-6)


def test_gap_statistics_travel_with_the_predictor(fitted, tmp_path):
    """synth.yaml trains on gap statistics: a saved and loaded predictor builds them from its stats alone (the
    serving path calls build_examples without naming them), and simulation carries them forward."""
    from offerlab.serving.timing_fast import MixtureAnswers
    from offerlab.timing.data import build_examples
    from offerlab.timing.predict import load_predictor, save_predictor

    model, tx = fitted
    again = load_predictor(save_predictor(model.predictor, tmp_path / "p.pt"))
    assert again.stats.gap_stats and model.state.gap_sums is not None
    as_of = pd.Timestamp(END)
    seqs = again.sequences(tx, as_of)
    ex, _ = build_examples(seqs, as_of, again.stats, use_calendar=again.use_calendar, age_inputs=again.age_inputs)
    assert ex.inputs.shape[1] == again.models[0].hparams.n_inputs
    state = again.encode_examples(ex, np.asarray(seqs.log_amount, dtype=np.float64))
    want = model.predictor.expected_counts(model.predictor.encode(tx, as_of), 90.0)
    np.testing.assert_allclose(again.expected_counts(state, 90.0), want, rtol=1e-5)
    np.testing.assert_allclose(MixtureAnswers(again, state).expected_counts(90.0, 20), want, rtol=2e-3, atol=1e-4)
    sim = again.simulate_counts(state, 90.0, n_samples=20)
    assert np.isfinite(sim).all() and 0.5 < sim.sum() / want.sum() < 2.0


@pytest.mark.slow
def test_train_command_logs_pyfunc_that_serves(tmp_path, mlflow_store):
    import mlflow

    from offerlab.timing.train import run_training

    synth_to_dir(400, 1, tmp_path / "synth")
    cfg = load_config(CONFIG_DIR / "synth.yaml", {**FAST, "data": {"synth_dir": str(tmp_path / "synth")},
                                                    "training": {"seeds": [0], "max_epochs": 2, "validation_days": 30}})
    out = run_training(cfg, progress=False)
    run = mlflow.get_run(out["run_id"])
    assert "count_rmse" in run.data.metrics and "oracle.nll_gap_relative" in run.data.metrics
    assert run.data.params["model.hidden"] == "32"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(out["run_id"])}
    assert {"holdout_counts.png", "calibration_30d.png", "config.json"} <= arts
    served = mlflow.pyfunc.load_model(out["model_uri"])
    tx = pd.DataFrame({"customer_id": ["u1", "u1", "u2"], "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
                       "amount": [10.0, 12.0, 30.0], "category": ["grocery", "grocery", "books"]})
    res = served.predict(tx, params={"as_of": "2024-03-10", "n_samples": 10})
    assert list(res["customer_id"]) == ["u1", "u2"]
    assert res["days_since_last"].tolist() == pytest.approx([38.0 + 1, 9.0 + 1], abs=1e-3)  # as_of = end of 03-10
    with pytest.raises(Exception, match="amount"):
        served.predict(tx.drop(columns="amount"))
