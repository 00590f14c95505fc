"""The synthetic campaign's observable oracle (E[truth | the tables]) and the bench's oracle block."""

import numpy as np
import pandas as pd
import pytest

from offerlab.data.synth import LEVELS, campaign_truth_observable, generate


@pytest.fixture(scope="module")
def synth_and_oracle():
    synth = generate(1500, seed=3)
    return synth, campaign_truth_observable(synth)


def test_observable_oracle_is_a_calibrated_expectation_of_the_truth(synth_and_oracle):
    synth, obs = synth_and_oracle
    truth = synth.truth_campaign.set_index("customer_id").loc[obs["customer_id"]]
    assert list(obs["customer_id"]) == list(synth.campaign["customer_id"].astype(str))
    for lv in LEVELS:
        for q in ("p_conv", "exp_revenue"):
            a, b = obs[f"{q}_{lv}"].to_numpy(), truth[f"{q}_{lv}"].to_numpy()
            # law of total expectation: the same mean; and it tracks the truth it averages
            assert a.mean() == pytest.approx(b.mean(), rel=0.04), (lv, q)
            assert np.corrcoef(a, b)[0, 1] > 0.75, (lv, q)
    up = obs["p_conv_discount_15"] - obs["p_conv_control"]
    true_up = truth["p_conv_discount_15"].to_numpy() - truth["p_conv_control"].to_numpy()
    assert np.corrcoef(up, true_up)[0, 1] > 0.65
    assert np.polyfit(up, true_up, 1)[0] == pytest.approx(1.0, abs=0.15)  # not over- or under-confident


def test_bench_reports_shares_of_both_oracles(synth_and_oracle):
    from offerlab.uplift.bench import OBSERVABLE, oracle_gap
    from offerlab.uplift.data import from_synth
    from offerlab.uplift.policy import PolicyConfig

    synth, obs = synth_and_oracle
    camp = from_synth(synth)
    truth = synth.truth_campaign.set_index("customer_id").loc[camp.customer_id.astype(str)].reset_index()
    truth = pd.concat([truth, obs.drop(columns="customer_id").add_prefix(OBSERVABLE)], axis=1)
    policy = PolicyConfig(margin=0.4, contact_cost=0.1)
    d = policy.discount_rates(camp.levels, camp.discounts)

    def pred_from(prefix: str) -> dict:
        return {"conversion": np.stack([truth[f"{prefix}p_conv_{lv}"] for lv in camp.levels], axis=1),
                "revenue": np.stack([truth[f"{prefix}exp_revenue_{lv}"] for lv in camp.levels], axis=1)}

    as_observable = oracle_gap(pred_from(OBSERVABLE), camp, truth, policy, d)["profit_share"]
    as_oracle = oracle_gap(pred_from(""), camp, truth, policy, d)["profit_share"]
    for b in ("0.1", "0.3", "1"):
        # a model that predicts the observable oracle's expectations is that oracle; the true one is the oracle
        assert as_observable[b]["share_of_observable_oracle"] == pytest.approx(1.0)
        assert as_oracle[b]["share_of_oracle"] == pytest.approx(1.0)
        ratio = as_oracle[b]["observable_oracle_share_of_oracle"]
        assert 0.6 < ratio < 1.0  # latent traits are worth something, but the tables carry most of it
        assert as_oracle[b]["share_of_observable_oracle"] == pytest.approx(1 / ratio)


def test_targets_name_both_oracle_shares():
    from offerlab.uplift.bench import check_targets

    def stat(v: float) -> dict:
        return {"mean": v, "std": 0.0}

    def model(q: float) -> dict:
        return {"qini": {"a": stat(q)}, "policy_value": stat(0.2), "treat_none_value": stat(0.0),
                "best_single_value": stat(0.1), "policy_value_ci": [0.1, 0.3], "policy_minus_best_single_ci": [0.0, 0.2]}

    def block(share: float, observable: float) -> dict:
        return {"profit_share": {b: {"share_of_oracle": stat(share), "share_of_observable_oracle": stat(observable)}
                                 for b in ("0.1", "1")}}

    result = {"models": {"offerlab": model(0.2), "t_learner": model(0.1)},
              "oracle": {"offerlab": block(0.8, 0.96), "t_learner": block(0.5, 0.6)}}
    t = check_targets(result)
    assert t["oracle_share"] == {"0.1": 0.8, "1": 0.8} and not t["oracle_target_met"]
    assert t["observable_oracle_share"] == {"0.1": 0.96, "1": 0.96} and t["observable_oracle_target_met"]
    assert t["observable_oracle_share_t_learner"] == {"0.1": 0.6, "1": 0.6}
    assert t["qini_target_met"]  # 0.2 >= 1.1 x 0.1
