import numpy as np
import pandas as pd
import pytest

from offerlab.credit.scorecard import GradeBands, ScoreScale, pd_to_grade, pd_to_score, score_to_pd
from offerlab.credit.terms import TermsPolicy, annuity_factor, credit_terms

POLICY = TermsPolicy(cutoff_pd=0.3, lgd=0.5, el_budget=60, affordability_share=0.3, max_limit=5000, min_limit=100,
                     limit_step=50, cost_of_funds=0.04, operating_cost=0.03, margin=0.03, max_rate=0.20)


def test_pdo_scale_by_hand():
    s = ScoreScale(base_score=600, base_odds=50, pdo=20)
    assert pd_to_score(np.array([1 / 51]), s)[0] == pytest.approx(600.0)  # odds 50:1
    assert pd_to_score(np.array([1 / 101]), s)[0] == pytest.approx(620.0)  # odds doubled: +20
    assert pd_to_score(np.array([1 / 26]), s)[0] == pytest.approx(580.0)
    assert score_to_pd(np.array([600.0]), s)[0] == pytest.approx(1 / 51)
    assert pd_to_grade(np.array([0.01, 0.02, 0.03, 0.5])).tolist() == ["A", "A", "B", "F"]
    with pytest.raises(ValueError, match="strictly increasing"):
        GradeBands(bands=[{"name": "A", "max_pd": 0.5}, {"name": "B", "max_pd": 0.2}])


def test_rate_limit_terms_by_hand():
    apps = pd.DataFrame({"income": [np.nan, 24_000.0, np.nan, np.nan, np.nan], "requested_amount": [800, 800, 800, 800, 800]})
    pd_ = np.array([0.02, 0.02, 0.10, 0.35, 0.29])
    t = credit_terms(pd_, POLICY, apps)
    # rate = 0.04 + PD x 0.5 + 0.03 + 0.03
    assert t["annual_rate"].iloc[0] == pytest.approx(0.11)
    assert t["annual_rate"].iloc[2] == pytest.approx(0.15)
    # EL budget: 60 / (0.02 x 0.5) = 6000 -> capped at max_limit 5000
    assert t["limit"].iloc[0] == 5000
    # affordability: 0.3 x 2000 per month over 12 months at 11% -> 600 x annuity factor, rounded down to 50
    afford = 600 * annuity_factor(np.array(0.11), np.array(12))
    assert afford == pytest.approx(6788.74, abs=0.01)  # (1 - (1 + r)^-12) / r, r = 0.11 / 12
    assert t["limit"].iloc[1] == 5000  # still the max limit
    # PD 0.10: 60 / 0.05 = 1200; terms [3, 6]; insurance offered (PD <= 0.2, limit >= 200)
    assert t["limit"].iloc[2] == 1200 and t["term_options"].iloc[2] == "3,6"
    assert t["term_options"].iloc[0] == "3,6,12"
    assert t["insurance_offered"].iloc[2] and t["insurance_monthly_premium"].iloc[2] == pytest.approx(4.8)
    # above the cut-off: declined, no limit
    assert t["decision"].iloc[3] == "decline" and t["decline_reason"].iloc[3] == "PD above cut-off"
    assert t["limit"].iloc[3] == 0 and t["term_options"].iloc[3] == ""
    # PD 0.29: 60 / 0.145 = 413.8 -> 400; rate 0.245 capped at 0.20
    assert t["limit"].iloc[4] == 400 and t["annual_rate"].iloc[4] == pytest.approx(0.20) and t["rate_capped"].iloc[4]
    assert t["covers_request"].tolist() == [True, True, True, False, False]


def test_affordability_binds_and_min_limit_declines():
    pol = POLICY.model_copy(update={"max_limit": 50_000, "el_budget": 10_000})
    t = credit_terms(np.array([0.01, 0.01]), pol, pd.DataFrame({"income": [12_000.0, 240.0]}))
    # 0.3 x 1000 per month over 12 months at 10.5%
    expected = np.floor(300 * annuity_factor(np.array(0.105), np.array(12)) / 50) * 50
    assert t["limit"].iloc[0] == expected
    # income 240/year: 6 per month affordable -> about 68 -> 50 < min_limit 100 -> decline
    assert t["decision"].iloc[1] == "decline" and t["decline_reason"].iloc[1] == "limit below minimum"


def test_policy_validation():
    with pytest.raises(ValueError, match="term_rules"):
        TermsPolicy(cutoff_pd=0.5, term_rules=[{"max_pd": 0.2, "terms": [3]}])
    with pytest.raises(ValueError):
        TermsPolicy(lgd=1.5)
