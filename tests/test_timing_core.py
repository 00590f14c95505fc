"""Timing family, fast checks: censored likelihood by hand, conditional probabilities, metrics, data, configs."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from offerlab.data.sequences import build_sequences
from offerlab.timing.baselines import NaiveRate, rfm_summary
from offerlab.timing.data import build_examples
from offerlab.timing.distributions import LogNormalMixture, censored_gap_nll
from offerlab.timing.metrics import concordance_index, timing_metrics
from offerlab.timing.train import load_config


def one_lognormal(mu: float, sigma: float, p_never: float, n: int = 1) -> LogNormalMixture:
    never_logit = math.log(p_never / (1 - p_never))
    return LogNormalMixture(torch.zeros(n, 1), torch.full((n, 1), mu), torch.full((n, 1), math.log(sigma)),
                            torch.full((n,), never_logit))


def test_censored_nll_matches_hand_computed_values():
    # mu = log 10, sigma = 0.5, p_never = 0.2
    d = one_lognormal(math.log(10), 0.5, 0.2, n=2)
    nll = censored_gap_nll(d, torch.tensor([8.0, 30.0]), torch.tensor([False, True]))
    z_obs = (math.log(8) - math.log(10)) / 0.5
    pdf = math.exp(-0.5 * z_obs**2) / (8 * 0.5 * math.sqrt(2 * math.pi))
    z_cens = (math.log(30) - math.log(10)) / 0.5
    sf = 0.5 * math.erfc(z_cens / math.sqrt(2))
    assert nll[0].item() == pytest.approx(-math.log(0.8 * pdf), rel=1e-5)
    assert nll[1].item() == pytest.approx(-math.log(0.2 + 0.8 * sf), rel=1e-5)
    assert nll[0].item() == pytest.approx(2.62796, abs=1e-4)  # log(0.8)/0.5 = -0.4463; pdf = 0.09028


def test_left_truncated_nll_conditions_on_the_empty_start():
    d = one_lognormal(math.log(10), 0.5, 0.2)
    full = censored_gap_nll(d, torch.tensor([12.0]), torch.tensor([False]))
    trunc = censored_gap_nll(d, torch.tensor([12.0]), torch.tensor([False]), torch.tensor([5.0]))
    assert (trunc - full).item() == pytest.approx(d.log_survival(torch.tensor([5.0])).item(), abs=1e-5)


def test_mixture_nll_against_scipy():
    logits, mu, ls = torch.tensor([[0.3, -0.5]]), torch.tensor([[1.0, 3.5]]), torch.tensor([[-0.3, 0.2]])
    d = LogNormalMixture(logits, mu, ls)  # no never-mass
    w = torch.softmax(logits, -1)[0].numpy()
    comps = [stats.lognorm(s=math.exp(ls[0, k]), scale=math.exp(mu[0, k])) for k in range(2)]
    g = 17.0
    want_obs = -math.log(sum(w[k] * comps[k].pdf(g) for k in range(2)))
    want_cens = -math.log(sum(w[k] * comps[k].sf(g) for k in range(2)))
    got = censored_gap_nll(d.__class__(logits.expand(2, 2), mu.expand(2, 2), ls.expand(2, 2)),
                           torch.tensor([g, g]), torch.tensor([False, True]))
    assert got[0].item() == pytest.approx(want_obs, rel=1e-5)
    assert got[1].item() == pytest.approx(want_cens, rel=1e-5)


def test_conditional_probability_and_quantile():
    d = one_lognormal(math.log(20), 0.7, 0.3)
    ln = stats.lognorm(s=0.7, scale=20)
    e, k = 25.0, 30.0
    s = lambda t: 0.3 + 0.7 * ln.sf(t)  # noqa: E731
    want = (s(e) - s(e + k)) / s(e)
    got = d.prob_within(torch.tensor([e]), k).item()
    assert got == pytest.approx(want, rel=1e-5)
    assert d.log_p_never_given(torch.tensor([e])).exp().item() == pytest.approx(0.3 / s(e), rel=1e-5)
    q = d.quantile_after(torch.tensor([e]), 0.2).item()
    assert (s(e) - s(e + q)) / s(e) == pytest.approx(0.2, abs=1e-4)
    # beyond P(any further purchase | elapsed) the level is unreachable: +inf
    assert math.isinf(d.quantile_after(torch.tensor([e]), 0.9).item())
    # the posterior drop-out belief grows with the open gap
    p_never = d.log_p_never_given(torch.tensor([0.0, 10.0, 50.0, 200.0])).exp()
    assert torch.all(p_never.diff() > 0)


def test_sample_after_follows_the_conditional_distribution():
    torch.manual_seed(0)
    n = 100_000
    d = one_lognormal(math.log(20), 0.7, 0.3, n=n)
    draws = d.sample_after(torch.full((n,), 25.0))
    for k in (5.0, 30.0, 120.0):
        assert (draws <= k).float().mean().item() == pytest.approx(d.prob_within(torch.tensor([25.0]), k)[0].item(),
                                                                   abs=0.006)


def test_concordance_index_equals_pairwise_definition():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 8, 120).astype(float)
    e = rng.random(120) < 0.6
    r = rng.integers(0, 4, 120).astype(float)
    num = den = 0.0
    for i in np.flatnonzero(e):
        later = t > t[i]
        den += later.sum()
        num += (r[i] > r[later]).sum() + 0.5 * (r[i] == r[later]).sum()
    assert concordance_index(t, e, r) == pytest.approx(num / den, abs=1e-12)
    assert concordance_index([1, 2, 3], [1, 1, 0], [3, 2, 1]) == 1.0


def test_timing_metrics_hand_values():
    m = timing_metrics(true_counts=np.array([0, 2, 1, 0]), pred_counts=np.array([0.5, 1.0, 1.0, 0.0]),
                       p_any=np.array([0.2, 0.9, 0.6, 0.1]), p_30d=np.array([0.1, 0.5, 0.2, 0.0]),
                       bought_30d=np.array([0, 1, 0, 0]), first_time=np.array([np.inf, 10.0, 50.0, np.inf]),
                       risk_score=np.array([0.2, 0.9, 0.6, 0.1]), horizon_days=100)
    assert m["count_mae"] == pytest.approx(0.375)
    assert m["count_rmse"] == pytest.approx(math.sqrt(1.25 / 4))
    assert m["brier_holdout"] == pytest.approx((0.04 + 0.01 + 0.16 + 0.01) / 4)
    assert m["auc_holdout"] == 1.0 and m["c_index"] == 1.0
    assert m["total_pred"] == 2.5 and m["total_true"] == 3


@pytest.fixture()
def tiny_tx():
    return pd.DataFrame({
        "customer_id": ["a", "a", "a", "b", "c", "c"],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-11", "2024-01-31", "2024-01-21", "2024-01-05",
                                     "2024-02-20"]),
        "amount": [10.0, 20.0, 5.0, 8.0, 3.0, 4.0],
    })


def test_examples_targets_and_censoring(tiny_tx):
    as_of = pd.Timestamp("2024-02-10")
    ex, _ = build_examples(build_sequences(tiny_tx, as_of), as_of, use_calendar=False)
    assert list(ex.customer_ids) == ["a", "b", "c"]
    np.testing.assert_allclose(ex.target_gap, [10, 20, 10, 20, 36], atol=1e-4)
    assert ex.censored.tolist() == [False, False, True, True, True]
    # validation from 2024-01-15: a's first gap (ends 01-11) drops out, its second is left-truncated by 4 days
    ex_v, _ = build_examples(build_sequences(tiny_tx, as_of), as_of, use_calendar=False, validation_start="2024-01-15")
    assert ex_v.weight.tolist() == [0, 1, 1, 1, 1]
    np.testing.assert_allclose(ex_v.elapsed_start, [0, 4, 0, 0, 10], atol=1e-4)


def test_gap_statistics_by_hand_and_as_simulation_carries_them(tiny_tx):
    as_of = pd.Timestamp("2024-02-10")
    ex, stats = build_examples(build_sequences(tiny_tx, as_of), as_of, use_calendar=False, gap_stats=True)
    assert stats.gap_stats and ex.inputs.shape[1] == 6
    # a: gaps 10 and 20 days -> after its third purchase n = 2, mean log1p = (log 11 + log 21) / 2
    m = (math.log(11) + math.log(21)) / 2
    sd = abs(math.log(21) - math.log(11)) / 2
    np.testing.assert_allclose(ex.inputs[2, 2:], [1 / 3, m, sd, math.log1p(15.0)], rtol=1e-5)
    np.testing.assert_allclose(ex.inputs[0, 2:], [1.0, 0.0, 0.0, 0.0])  # no gap closed yet
    np.testing.assert_allclose(ex.inputs[3, 2:], [1.0, 0.0, 0.0, 0.0])  # b: one purchase
    # the predictor's simulation step builds the same inputs from the state's running sums
    from offerlab.timing.predict import TimingPredictor
    from offerlab.timing.train import _new_model

    pred = TimingPredictor([_new_model(load_config(None, {"model": {"gap_stats": True}}), ex, stats)], stats, [],
                           "merge", False)
    state = pred.encode(tiny_tx[tiny_tx["customer_id"] == "a"].iloc[:2], pd.Timestamp("2024-01-20"))
    gap = torch.tensor([20.0], dtype=torch.float64)
    lg = torch.log1p(gap)
    sums = state.gap_sums.double() + torch.stack([torch.ones_like(gap), lg, lg**2, gap], -1)
    x = pred._step_inputs(gap, torch.zeros(1, dtype=torch.float64), None, None, None, sums)
    np.testing.assert_allclose(x.numpy()[0, [0, 2, 3, 4, 5]], ex.inputs[2, [0, 2, 3, 4, 5]], rtol=1e-5)


def test_batch_nll_on_used_steps_equals_the_padded_sum(tiny_tx):
    """The loss runs its heads on weighted steps only and skips an all-zero truncation: same sums as the
    plain padded computation (every step, pads weighted 0, the truncation term always)."""
    from offerlab.timing.train import _new_model

    torch.manual_seed(0)
    as_of = pd.Timestamp("2024-02-10")
    tiny_tx = tiny_tx.assign(category=["x", "y", "x", "y", "x", "x"])
    seqs = build_sequences(tiny_tx, as_of)
    for start in (None, "2024-01-15"):
        ex, stats = build_examples(seqs, as_of, use_calendar=False, validation_start=start)
        model = _new_model(load_config(None), ex, stats)
        b = ex.padded(np.arange(ex.n_customers))
        assert ("elapsed_start" in b) == (start is not None)
        got = model.batch_nll(b)
        h, _ = model.encode(b["inputs"], b["category"])
        e0 = torch.from_numpy(ex.elapsed_start[np.where(b["mask"].numpy(), ex.offsets[:-1, None]
                                                        + np.arange(b["mask"].shape[1]), 0)])
        full = censored_gap_nll(model.gap_distribution(h), b["target_gap"], b["censored"], e0)
        assert got["gap_nll_sum"].item() == pytest.approx((full * b["weight"]).sum().item(), rel=1e-6)
        known = (b["target_category"] > 0) & (b["weight"] > 0) & ~b["censored"]
        ce = torch.nn.functional.cross_entropy(model.category_logits(h)[known], b["target_category"][known] - 1,
                                               reduction="sum")
        assert got["cat_nll_sum"].item() == pytest.approx(ce.item(), rel=1e-6)


def test_rfm_summary_and_naive_rate(tiny_tx):
    rfm = rfm_summary(tiny_tx, "2024-02-09", unit_days=1.0)  # c's second purchase is after the cutoff
    assert rfm.loc["a"].tolist() == pytest.approx([2.0, 30.0, 40.0], abs=1e-6)
    assert rfm.loc["c", "frequency"] == 0
    p = NaiveRate().fit(tiny_tx, "2024-02-09").predict(100.0, 30.0)
    assert p.loc["a", "expected_count"] == pytest.approx(2 / 40 * 100, rel=1e-6)
    assert p.loc["b", "p_any"] == 0.0


def test_config_rejects_unknown_key_and_bad_dates(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiddn: 8\n")
    with pytest.raises(ValueError, match="hiddn"):
        load_config(bad)
    with pytest.raises(ValueError, match="holdout_end"):
        load_config(None, {"data": {"calibration_end": "2024-06-30", "holdout_end": "2024-01-01"}})
    with pytest.raises(ValueError, match="trainer.profile 'tpu'"):
        load_config(None, {"trainer": {"profile": "tpu"}, "trainer_profiles": {"cpu": {}}})
    cfg = load_config("configs/timing/cdnow.yaml", {"trainer": {"profile": "gpu"}})
    assert cfg.trainer.accelerator == "gpu" and cfg.data.same_day == "merge"


def test_bench_cli_refuses_bad_input(tmp_path):
    from offerlab.cli import main

    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["bench", "timing", "--dataset", "cdnow", "--out", str(out), "--models", "magic"])
    assert r.exit_code == 2 and "unknown model(s) ['magic']" in r.output
    csv = tmp_path / "tx.csv"
    pd.DataFrame({"cid": ["x"], "ts": ["2024-01-01"], "amt": [1.0]}).to_csv(csv, index=False)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("table: transactions\ncolumns: {customer_id: cid, timestamp: ts, amount: amt}\n")
    r = CliRunner().invoke(main, ["bench", "timing", "--dataset", "mine", "--data-path", str(csv), "--mapping",
                                  str(mapping), "--out", str(out)])
    assert r.exit_code == 2 and "--calibration-end" in r.output
    assert not out.exists()
