"""Targeted (non-randomised) campaign logs: the synthetic targeted campaign, the doubly robust fit, its evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerlab.data import synth as S
from offerlab.uplift.data import from_synth

N = 4_000


@pytest.fixture(scope="module")
def pair() -> tuple[S.SynthData, S.SynthData]:
    """The same marketplace twice: randomised campaign and targeted campaign."""
    return S.generate(N, seed=5, chunk_size=2_000), S.generate(N, seed=5, chunk_size=2_000,
                                                                campaign_assignment="targeted")


def _assign_p(synth: S.SynthData) -> np.ndarray:
    truth = synth.truth_campaign.set_index("customer_id").loc[synth.campaign["customer_id"]]
    return truth[[f"assign_p_{lv}" for lv in S.LEVELS]].to_numpy()


# ------------------------------------------------------------------------------------------------------- data
def test_targeted_log_has_no_propensity_and_meta_says_targeted(pair):
    rand, targ = pair
    assert "propensity" in rand.campaign and "propensity" not in targ.campaign
    assert list(targ.campaign.columns) == S.table_schema("campaign", "targeted").names
    assert targ.meta["campaign_assignment"] == "targeted" and targ.meta["assignment_probs"] is None
    assert "campaign_assignment" not in rand.meta  # the randomised meta is that of earlier versions
    assert [c for c in targ.truth_campaign if c.startswith("assign_p_")] == [f"assign_p_{lv}" for lv in S.LEVELS]
    assert not any(c.startswith("assign_p_") for c in rand.truth_campaign)
    camp = from_synth(targ)
    assert camp.assignment == "targeted" and camp.propensity is None
    assert from_synth(rand).assignment == "randomised"


def test_only_the_campaign_assignment_differs(pair):
    """Same seed: same customers, histories, applications and outcome model; the arms (and so outcomes) differ."""
    rand, targ = pair
    for name in ("transactions", "customers", "applications", "truth_timing", "truth_credit"):
        pd.testing.assert_frame_equal(getattr(rand, name), getattr(targ, name))
    base = [c for c in S.SCHEMAS["truth_campaign"].names]
    pd.testing.assert_frame_equal(rand.truth_campaign[base], targ.truth_campaign[base])
    assert (rand.campaign["treatment"] != targ.campaign["treatment"]).mean() > 0.3


def test_assignment_probabilities_follow_the_crm_score(pair):
    _, targ = pair
    p = _assign_p(targ)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    # the logged arms are draws from them: each arm's share matches the mean probability
    arm = pd.Categorical(targ.campaign["treatment"], categories=S.LEVELS).codes
    shares = np.bincount(arm, minlength=len(S.LEVELS)) / len(arm)
    np.testing.assert_allclose(shares, p.mean(axis=0), atol=0.025)
    # recent buyers get the deepest discount more often, and probabilities match the documented formula
    feats = from_synth(targ).features
    recent = feats["recency_days"].to_numpy() < np.median(feats["recency_days"])
    assert p[recent, 3].mean() > 2 * p[~recent, 3].mean()
    region = pd.Categorical(feats["region"], categories=S.REGIONS).codes
    expect = S.targeted_assignment_probs(feats["recency_days"].to_numpy(), feats["frequency"].to_numpy(), region)
    np.testing.assert_allclose(p, expect, rtol=1e-6, atol=1e-9)
    # most customers can get every level; the CRM rules put some well outside the common support
    low = p.min(axis=1)
    assert (low >= 0.01).mean() > 0.85 and 0.03 < (low < 0.005).mean() < 0.15


def test_targeted_files_round_trip(tmp_path, pair):
    _, targ = pair
    S.synth_to_dir(600, 3, tmp_path / "d", chunk_size=300, campaign_assignment="targeted")
    back = S.load_synth(tmp_path / "d")
    assert back.meta["campaign_assignment"] == "targeted" and "propensity" not in back.campaign
    mem = S.generate(600, 3, chunk_size=300, campaign_assignment="targeted")
    for name in S.FILES:
        pd.testing.assert_frame_equal(getattr(mem, name), getattr(back, name))
    S.write(targ, tmp_path / "w")
    assert "assign_p_control" in S.load_synth(tmp_path / "w").truth_campaign
    with pytest.raises(ValueError, match="campaign_assignment"):
        S.generate(100, 0, campaign_assignment="quasi-random")


def test_randomisation_check_flags_the_targeted_log(pair):
    from offerlab.uplift.propensity import assignment_check

    rand, targ = pair
    for synth, verdict in ((rand, "randomised"), (targ, "targeted")):
        camp = from_synth(synth)
        check = assignment_check(camp.features, camp.treatment, camp.levels)
        assert check["verdict"] == verdict, (verdict, check["auc"], check["threshold"])
    assert check["auc"] > 0.6 and check["overlap_share"] < 1.0


def test_observable_oracle_ignores_the_assignment(pair):
    """It conditions on the tables, not on the arm: identical for both campaigns of one marketplace."""
    rand, targ = pair
    a = S.campaign_truth_observable(rand).set_index("customer_id")
    b = S.campaign_truth_observable(targ).set_index("customer_id")
    pd.testing.assert_frame_equal(a, b.loc[a.index])


# -------------------------------------------------------------------------------------------- fit and evaluation
def test_snipw_policy_value_by_hand():
    from offerlab.uplift.bench import snipw_policy_value

    choice = np.array([1, 1, 0, 1])
    t = np.array([1, 0, 0, 1])
    y = np.array([2.0, 1.0, 0.5, 4.0])
    e = np.array([[0.5, 0.5], [0.25, 0.75], [0.8, 0.2], [0.5, 0.5]])
    # followed the policy: rows 0 (w 2), 2 (w 1.25), 3 (w 2); control rows 1 (w 4), 2 (w 1.25)
    v_pi = (2 * 2.0 + 1.25 * 0.5 + 2 * 4.0) / (2 + 1.25 + 2)
    v_0 = (4 * 1.0 + 1.25 * 0.5) / (4 + 1.25)
    value, ci = snipw_policy_value(choice, t, y, e)
    assert value == pytest.approx(v_pi - v_0)
    assert ci[0] < value < ci[1]


def test_targeted_fit_trims_reports_and_round_trips(pair, tmp_path, caplog):
    from offerlab.uplift.bench import evaluation_propensity, score_split
    from offerlab.uplift.data import stratified_split
    from offerlab.uplift.model import UpliftModel
    from offerlab.uplift.policy import PolicyConfig

    _, targ = pair
    camp = from_synth(targ)
    tr, te = stratified_split(camp, 0.3, 0)
    train, test = camp.subset(tr), camp.subset(te)
    net = {"hidden": [16], "head_hidden": 8, "ensemble": 2, "batch_size": 512, "patience": 2}
    with caplog.at_level("INFO", logger="offerlab.uplift.model"):
        model = UpliftModel(net, {"max_epochs": 3}, seed=0).fit(train)
    rep = model.fit_report
    assert rep["assignment"] == "targeted" and rep["propensity"] == "estimated (cross-fitted, 5 folds)"
    assert 0 < rep["trimmed"]["rows"] < 0.25 * len(train) and "DR-learner" in rep["objective"]
    assert any("trimmed" in r.message for r in caplog.records)
    assert set(model.dr_correction) == {"conversion", "revenue"}
    e = model.predict_propensity(test.features)
    np.testing.assert_allclose(e.sum(axis=1), 1.0, rtol=1e-6)
    model.save(tmp_path / "m.pt")
    again = UpliftModel.load(tmp_path / "m.pt")
    a, b = model.predict_levels(test.features), again.predict_levels(test.features)
    np.testing.assert_allclose(a["revenue"], b["revenue"], rtol=1e-5)
    assert again.fit_report == rep
    # the bench's evaluation: estimated propensities, the overlap rows only, and the JSON says so
    truth = targ.truth_campaign.set_index("customer_id").loc[test.customer_id.astype(str)].reset_index()
    policy = PolicyConfig(margin=0.4, contact_cost=0.1)
    ev = evaluation_propensity(train, test)
    res = score_split(model, train, test, policy, "conversion", truth, targ.meta, propensity=ev)
    assert res["assignment"] == "targeted" and res["propensity"].startswith("estimated")
    assert res["trimmed"]["test_rows"] == int((~ev["inside_test"]).sum())
    assert res["trimmed"]["test_share"] == pytest.approx(1 - ev["inside_test"].mean())
    assert {"policy_value", "policy_value_dr", "policy_value_snipw"} <= set(res)
    assert "policy_value_true" in res["oracle"]
    assert evaluation_propensity(from_synth(pair[0]), from_synth(pair[0])) is None


def test_unknown_assignment_is_settled_by_the_randomisation_check(pair):
    from offerlab.uplift.model import UpliftModel

    rand, targ = pair
    net, trainer = {"hidden": [8], "head_hidden": 4, "ensemble": 2, "batch_size": 1024, "patience": 1}, {"max_epochs": 1}
    camp = from_synth(targ)
    camp.assignment = "unknown"
    assert UpliftModel(net, trainer).fit(camp).fit_report["assignment"] == "targeted"
    camp = from_synth(rand)
    camp.assignment, camp.propensity = "unknown", None
    report = UpliftModel(net, trainer).fit(camp).fit_report
    assert report["assignment"] == "randomised" and report["trimmed"]["rows"] == 0


# --------------------------------------------------------------------------------------------------- recovery
@pytest.mark.slow
def test_doubly_robust_fit_recovers_the_average_effects_the_naive_fit_misses():
    """12k customers, a small net, two data seeds: over the test rows inside the common support, the DR fit's error
    of the mean conversion uplift per level is well below the naive fit's (the log read as randomised: the net's
    shrinkage goes uncorrected), and the customers the fit trimmed are the ones truly outside the support."""
    from offerlab.uplift.bench import evaluation_propensity
    from offerlab.uplift.data import stratified_split
    from offerlab.uplift.model import UpliftModel

    net = {"hidden": [32], "head_hidden": 8, "ensemble": 3, "batch_size": 512, "patience": 3}
    errors: dict[str, list] = {"naive_fit": [], "ours": []}
    for seed in (11, 12):
        synth = S.generate(12_000, seed=seed, campaign_assignment="targeted")
        camp = from_synth(synth)
        truth = synth.truth_campaign.set_index("customer_id").loc[camp.customer_id.astype(str)].reset_index()
        tr, te = stratified_split(camp, 0.3, 0)
        train, test = camp.subset(tr), camp.subset(te)
        ev = evaluation_propensity(train, test)  # the fit's own propensities: same folds and seed
        true_conv = np.stack([truth[f"p_conv_{lv}"] for lv in camp.levels], axis=1)[te][ev["inside_test"]]
        true_up = (true_conv[:, 1:] - true_conv[:, :1]).mean(axis=0)
        naive_train = train.subset(np.arange(len(train)))
        naive_train.assignment = "randomised"
        naive_train.propensity = np.tile(np.bincount(train.treatment) / len(train), (len(train), 1))
        for name, data in (("naive_fit", naive_train), ("ours", train)):
            model = UpliftModel(net, {"max_epochs": 20}, seed=0).fit(data)
            up = model.uplift(test.features).to_numpy()[ev["inside_test"]].mean(axis=0)
            errors[name].append(np.abs(up - true_up))
        # trimming: the rows the fit dropped are mostly truly outside the support, the clearly inside ones kept
        out = ~ev["inside_train"]
        assert model.fit_report["trimmed"]["rows"] == out.sum() > 0.005 * len(train)
        p_min = np.stack([truth[f"assign_p_{lv}"] for lv in camp.levels], axis=1)[tr].min(axis=1)
        assert (p_min[out] < 0.02).mean() > 0.6
        assert out[p_min < 0.005].mean() > 20 * out[p_min >= 0.05].mean()
    ours, naive = np.mean(errors["ours"]), np.mean(errors["naive_fit"])
    assert ours < 0.5 * naive, errors
