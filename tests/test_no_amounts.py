"""Purchase logs without amounts (date-only repeat-purchase data) work end to end.

Timing trains, scores and benches on dates alone; amount features of uplift / credit are left out with
one logged line; a model that needs amounts refuses a log without them, naming the `amount` column.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offerlab.credit.data import FeatureEncoder, application_features
from offerlab.credit.explain import reason_groups
from offerlab.data.features import NO_AMOUNTS, behaviour_features, behaviour_features_at, is_amount_feature
from offerlab.data.schema import DataValidationError
from offerlab.data.sequences import build_sequences, event_columns, sequences_from_arrays
from offerlab.data.synth import generate
from offerlab.timing.baselines import BGNBD, ParetoNBD
from offerlab.timing.data import FeatureStats, build_examples
from offerlab.timing.predict import TimingPredictor, load_predictor, save_predictor
from serving_models import serving_models  # noqa: F401

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CUTOFF = "2024-06-30"
MONETARY = {"monetary_total", "monetary_mean", "amount_std", "last_amount", "spend_30d", "spend_90d", "spend_365d"}
TINY = {"training": {"seeds": [0], "max_epochs": 2, "validation_days": 0},
        "model": {"hidden": 8, "n_components": 2, "category_dim": 4},
        "counts": {"steps": 20, "windows": [56, 91]}, "data": {"same_day": "merge"},
        "trainer": {"enable_progress_bar": False}}


@pytest.fixture(scope="module")
def synth():
    return generate(2000, seed=0)


@pytest.fixture(scope="module")
def tx(synth):
    return synth.transactions


@pytest.fixture(scope="module")
def dates_only(tx):
    return tx.drop(columns="amount")


@pytest.fixture(scope="module")
def dates_model(dates_only):
    import torch

    from offerlab.timing.train import fit_timing, load_config

    torch.set_num_threads(1)
    calib = dates_only[dates_only["timestamp"] <= pd.Timestamp(CUTOFF) + pd.Timedelta(days=1)]
    predictor, info = fit_timing(calib, CUTOFF, load_config(None, TINY), progress=False)
    return predictor, info


def _untrained_predictor(seqs, as_of, same_day: str = "merge") -> TimingPredictor:
    """A predictor with random weights on `seqs`' preprocessing: enough to check what it reads."""
    from offerlab.timing.train import _new_model, load_config

    ex, stats = build_examples(seqs, as_of, use_calendar=False)
    cfg = load_config(None, TINY)
    return TimingPredictor([_new_model(cfg, ex, stats)], stats, seqs.categories, same_day, False)


# ------------------------------------------------------------------------------------------ data
def test_event_columns_amount_is_optional_but_still_checked(tx, dates_only):
    assert event_columns(dates_only)[2] is None
    assert event_columns(tx)[2].dtype == np.float64
    bad = tx.head(3).assign(amount=[1.0, -2.0, 3.0])
    with pytest.raises(DataValidationError, match="amount.*negative"):
        event_columns(bad)


def test_sequences_without_amounts_keep_everything_but_amounts(tx, dates_only):
    with_amt = build_sequences(tx, CUTOFF)
    seqs = build_sequences(dates_only, CUTOFF)
    assert with_amt.has_amount and not seqs.has_amount and not seqs.subset([0, 1]).has_amount
    assert seqs.n_events == with_amt.n_events > 10_000
    assert not seqs.log_amount.any() and with_amt.log_amount.min() > 0
    for key in ("offsets", "gap_days", "category", "event_time_days", "censored_gap_days"):
        np.testing.assert_array_equal(getattr(seqs, key), getattr(with_amt, key))
    merged = build_sequences(dates_only, CUTOFF, same_day="merge")
    assert not merged.has_amount and not merged.log_amount.any()
    assert merged.n_events == build_sequences(tx, CUTOFF, same_day="merge").n_events


def test_same_day_merge_without_amounts_keeps_the_first_purchase_category():
    t = pd.to_datetime(["2024-01-01 09:00", "2024-01-01 12:00", "2024-01-01 18:00", "2024-01-05 10:00"])
    tx = pd.DataFrame({"customer_id": ["a"] * 4, "timestamp": t, "amount": [1.0, 9.0, 2.0, 5.0],
                       "category": ["x", "y", "z", "y"]})
    by_amount = build_sequences(tx, "2024-02-01", same_day="merge")
    by_date = build_sequences(tx.drop(columns="amount"), "2024-02-01", same_day="merge")
    names = np.array(["", "x", "y", "z"])
    assert names[by_amount.category].tolist() == ["y", "y"]  # the day's largest purchase
    assert names[by_date.category].tolist() == ["x", "y"]  # the day's first purchase
    np.testing.assert_array_equal(by_date.gap_days, by_amount.gap_days)
    np.testing.assert_allclose(np.expm1(by_amount.log_amount), [12.0, 5.0], rtol=1e-6)
    assert by_date.log_amount.tolist() == [0.0, 0.0]
    # the numpy core takes amount=None alike (the serving fast path)
    core = sequences_from_arrays(np.zeros(4, dtype=np.int64), np.array(["a"], dtype=object),
                                 t.as_unit("ns").asi8, None, np.array([1, 2, 3, 2]), ["x", "y", "z"],
                                 int(pd.Timestamp("2024-02-01").value), same_day="merge")
    assert not core.has_amount and core.category.tolist() == [1, 2]


def test_behaviour_features_leave_out_exactly_the_monetary_columns(tx, dates_only, caplog):
    full = behaviour_features(tx, CUTOFF)
    with caplog.at_level(logging.INFO, logger="offerlab.data.features"):
        got = behaviour_features(dates_only, CUTOFF)
    assert set(full.columns) - set(got.columns) == MONETARY
    assert set(got.columns) < set(full.columns)
    assert not any(is_amount_feature(c) for c in got.columns)
    pd.testing.assert_frame_equal(got, full[got.columns])  # recency, frequency, counts, gaps, shares: equal
    assert [r.getMessage() for r in caplog.records].count(NO_AMOUNTS) == 1
    assert {"recency_days", "frequency", "count_30d", "mean_gap_days", "cv_gap", "trend"} <= set(got.columns)
    assert any(c.startswith("cat_share_") for c in got.columns)


def test_point_in_time_features_without_amounts(tx, dates_only, caplog):
    anchors = pd.DataFrame({"customer_id": tx["customer_id"].drop_duplicates().head(2).tolist() + ["nobody"],
                            "as_of": pd.to_datetime(["2024-03-01", "2024-09-01", "2024-06-01"])})
    full = behaviour_features_at(tx, anchors)
    with caplog.at_level(logging.INFO, logger="offerlab.data.features"):
        got = behaviour_features_at(dates_only, anchors)
    assert set(full.columns) - set(got.columns) == MONETARY
    pd.testing.assert_frame_equal(got, full[got.columns])
    assert [r.getMessage() for r in caplog.records].count(NO_AMOUNTS) == 1


# ------------------------------------------------------------------------------------------ credit
def test_credit_features_drop_amount_ones_and_keep_gap_ones(synth, tx, dates_only, caplog):
    apps = synth.applications
    full = application_features(apps, tx)
    with caplog.at_level(logging.INFO, logger="offerlab"):
        got = application_features(apps, dates_only)
    gone = set(full.columns) - set(got.columns)
    assert gone == {f"beh_{c}" for c in MONETARY | {"spend_180d", "log_amount_mean", "log_amount_sd"}}
    assert {"beh_log_gap_mean", "beh_gap_shape_stat", "beh_n_gaps", "beh_recency_days"} <= set(got.columns)
    pd.testing.assert_frame_equal(got, full[got.columns])
    assert [r.getMessage() for r in caplog.records].count(NO_AMOUNTS) == 1
    # the configured reason groups tolerate members that are absent ("spending" keeps nothing, so it goes)
    from offerlab.credit.config import load_config

    configured = load_config(CONFIGS / "credit" / "synth.yaml").decision_config().reasons.groups
    groups = reason_groups(list(got.columns), configured)
    assert "spending" not in groups and "beh_log_gap_mean" in groups["purchase_frequency"]
    assert sorted(c for g in groups.values() for c in g) == sorted(got.columns)


def test_credit_encoder_trained_with_amounts_refuses_features_without(synth, tx, dates_only):
    apps = synth.applications
    enc = FeatureEncoder().fit(application_features(apps, tx))
    with pytest.raises(DataValidationError, match=r"column 'amount'.*beh_monetary_total.*no 'amount' column"):
        enc.check_columns(application_features(apps, dates_only))
    FeatureEncoder().fit(application_features(apps, dates_only)).check_columns(application_features(apps, tx))


# ------------------------------------------------------------------------------------------ timing
def test_feature_stats_on_dates_alone():
    assert FeatureStats.fit(np.zeros(5)) == FeatureStats(0.0, 1.0, False, True)
    assert FeatureStats.fit(np.array([1.0, 3.0]), uses_amount=False) == FeatureStats(0.0, 1.0, False, False)


def test_timing_model_refuses_scoring_without_amounts_when_trained_with_them(tx, dates_only):
    as_of = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1)
    predictor = _untrained_predictor(build_sequences(tx, as_of, same_day="merge"), as_of)
    assert predictor.uses_amount
    with pytest.raises(DataValidationError, match="trained with amounts.*no 'amount' column"):
        predictor.encode(dates_only, as_of)
    from offerlab.timing.pyfunc import prepare_input

    with pytest.raises(DataValidationError, match="'amount'"):
        prepare_input(dates_only.head(10), predictor.categories, predictor.uses_amount)


def test_timing_fits_and_predicts_on_dates_alone(dates_model, dates_only, tmp_path):
    predictor, info = dates_model
    assert not predictor.uses_amount and info["uses_amount"] is False
    assert (predictor.stats.amount_mean, predictor.stats.amount_std) == (0.0, 1.0)
    assert predictor.count_head is not None
    as_of = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1)
    base = predictor.predict_frame(dates_only, as_of, n_samples=10)
    assert len(base) == dates_only.loc[dates_only["timestamp"] <= as_of, "customer_id"].nunique()
    assert np.isfinite(base["p_within_30d"]).all() and (base["expected_purchases_90d"] >= 0).all()
    # random amounts in the scoring input change nothing: the model was trained on dates alone
    rng = np.random.default_rng(1)
    noisy = dates_only.assign(amount=rng.lognormal(3.0, 1.5, len(dates_only)))
    pd.testing.assert_frame_equal(predictor.predict_frame(noisy, as_of, n_samples=10), base)
    state = predictor.encode(noisy, as_of)
    assert not state.log_amount.any()
    # the flag survives a save / load; a file saved before the flag existed means "trained with amounts"
    again = load_predictor(save_predictor(predictor, tmp_path / "p.pt"))
    assert not again.uses_amount
    pd.testing.assert_frame_equal(again.predict_frame(noisy, as_of, n_samples=10), base)
    import torch

    blob = torch.load(tmp_path / "p.pt", weights_only=False)
    del blob["stats"]["uses_amount"]
    torch.save(blob, tmp_path / "old.pt")
    assert load_predictor(tmp_path / "old.pt").uses_amount


def test_timing_fast_path_ignores_amounts_for_a_dates_only_model(dates_model):
    from offerlab.serving.fastpath import HistoryArrays
    from offerlab.serving.timing_fast import timing_state

    predictor, _ = dates_model
    ts = pd.to_datetime(["2024-01-03", "2024-02-01", "2024-03-04"]).as_unit("ns").asi8
    cats = np.array([predictor.categories[0]] * 3, dtype=object)
    as_of = np.array([pd.Timestamp("2024-04-01").value], dtype=np.int64)
    import torch

    bare, priced = (timing_state(predictor, HistoryArrays(np.zeros(3, dtype=np.int64), ts, amt, cats, as_of, ["r000000"]))
                    for amt in (None, np.array([5.0, 500.0, 50.0])))
    assert torch.equal(bare.h, priced.h) and not priced.log_amount.any()
    frame = HistoryArrays(np.zeros(3, dtype=np.int64), ts, None, cats, as_of, ["r000000"]).frame()
    assert "amount" not in frame.columns
    library = predictor.encode(frame, pd.Timestamp(int(as_of[0])))
    torch.testing.assert_close(library.h, bare.h)


def test_btyd_peers_fit_on_dates_alone(tx, dates_only):
    for peer in (BGNBD(), ParetoNBD()):
        with_amt = type(peer)().fit(tx, CUTOFF).predict(90.0, 30.0)
        got = peer.fit(dates_only, CUTOFF).predict(90.0, 30.0)
        pd.testing.assert_frame_equal(got, with_amt, rtol=1e-3)  # Pareto/NBD's optimiser varies ~1e-5 run to run
        assert np.isfinite(got["expected_count"]).all()


# ------------------------------------------------------------------------------------------ batch scoring
def test_score_timing_on_a_transactions_file_without_amounts(dates_model, dates_only, tmp_path, monkeypatch):
    import mlflow

    from offerlab.serving.score import run_score
    from offerlab.timing.pyfunc import log_pyfunc
    from offerlab.tracking import start_run

    predictor, _ = dates_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with start_run("timing", "dates-only") as _:
        info = log_pyfunc(predictor, tmp_path)
    amount_col = [c for c in info.signature.inputs.inputs if c.name == "amount"]
    assert len(amount_col) == 1 and not amount_col[0].required
    some = dates_only["customer_id"].drop_duplicates().head(30)
    part = dates_only[dates_only["customer_id"].isin(some) & (dates_only["timestamp"] <= CUTOFF)]
    part.to_parquet(tmp_path / "tx.parquet")
    summary = run_score("timing", tmp_path / "tx.parquet", tmp_path / "out.parquet", model_uri=info.model_uri,
                        progress=False, n_samples=8)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["customers"] == len(out) == 30 and out["p_within_30d"].between(0, 1).all()
    # a file with amounts scores the same (they are ignored)
    part.assign(amount=7.0).to_parquet(tmp_path / "tx_amt.parquet")
    run_score("timing", tmp_path / "tx_amt.parquet", tmp_path / "out2.parquet", model_uri=info.model_uri,
              progress=False, n_samples=8)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out2.parquet"), out)


def test_score_refuses_a_file_without_amounts_for_models_that_need_them(serving_models, tmp_path):  # noqa: F811
    """The serving champions were trained with amounts: timing, discount and credit each name the column."""
    from offerlab.serving.score import run_score

    s = serving_models.synth
    some = s.customers["customer_id"].head(20)
    tx = s.transactions[s.transactions["customer_id"].isin(some)].drop(columns="amount")
    tx.to_parquet(tmp_path / "tx.parquet")
    s.applications[s.applications["customer_id"].isin(some)].to_parquet(tmp_path / "apps.parquet")
    for command, args in (("timing", {}), ("discount", {}),
                          ("credit", {"transactions": tmp_path / "tx.parquet"})):
        src = tmp_path / ("apps.parquet" if command == "credit" else "tx.parquet")
        with pytest.raises(DataValidationError, match=r"column 'amount'.*no 'amount' column") as err:
            run_score(command, src, tmp_path / f"{command}.parquet", progress=False, n_samples=4, **args)
        assert f"the {'uplift' if command == 'discount' else command} model was trained with" in str(err.value)
        assert str(tmp_path / "tx.parquet") in str(err.value)
        assert not (tmp_path / f"{command}.parquet").exists()
    # the per-family scorers refuse alike when called on their own
    from offerlab.serving.score import load_model, score_credit, score_discount, score_timing

    as_of = pd.Timestamp("2025-01-01")
    apps = s.applications[s.applications["customer_id"].isin(some)]
    for call in (lambda: score_timing(load_model("timing"), tx, as_of, 4),
                 lambda: score_discount(load_model("discount"), tx, None, as_of),
                 lambda: score_credit(load_model("credit"), apps, tx)):
        with pytest.raises(DataValidationError, match=r"column 'amount'.*trained with.*no 'amount' column"):
            call()
