"""Synthetic marketplace with ground truth: the project's embedded default data set (DESIGN.md "Data sets").

Customers carry latent traits (purchase regularity, mean gap, drop-out, spend, price sensitivity, risk);
their purchase histories come from a known renewal process with drop-out, a randomised multi-level
discount campaign has a known per-customer effect, and credit applications have a known default
probability. The ground truth is written beside the tables so every model can be scored against the
oracle. With `campaign_assignment="targeted"` the previous campaign was not randomised: the CRM chose the level
from what its tables show (recent, frequent buyers and the west region got deeper discounts more often), so a
naive comparison of the arms flatters the discounts; the campaign log then carries no propensity column (a CRM
does not know them) and the truth records each customer's assignment probabilities. The customers, histories,
applications and outcome model are the same as the randomised campaign's for the same seed, and the default
(randomised) output is byte-identical to earlier versions. Everything is vectorised over customers and events;
the only Python loop is over customer chunks, each with its own random generator spawned from
`np.random.SeedSequence(seed)`, so the same (seed, n_customers, start, end, chunk_size) always gives
byte-identical files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import special, stats

from offerlab.data import synth_items, synth_returns

GENERATOR_VERSION = 4  # 2: truth_credit gains true_pd_observable; 3: order lines (items) and their truth;
# 4: returns, payment methods and repayments (synth_returns), campaign.returned_revenue and their truth
DAY_NS = 86_400 * 10**9

# --- observable customer attributes -------------------------------------------------------------------
REGIONS = ("north", "south", "east", "west", "central")
REGION_P = np.array([0.22, 0.20, 0.20, 0.18, 0.20])
REGION_PRICE_SENS = np.array([-0.35, 0.45, 0.10, -0.20, 0.0])  # shifts latent price sensitivity
REGION_CONV = np.array([0.10, -0.10, 0.0, 0.15, -0.05])  # shifts baseline campaign conversion (logit)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_P = np.array([0.12, 0.24, 0.22, 0.18, 0.14, 0.10])
AGE_LO = np.array([18, 25, 35, 45, 55, 65])
AGE_HI = np.array([24, 34, 44, 54, 64, 79])
CHANNELS = ("web", "app", "store", "referral")
CHANNEL_P = np.array([0.40, 0.30, 0.20, 0.10])
CHANNEL_DROP = np.array([1.0, 0.8, 1.1, 0.7])  # multiplies the drop-out probability

# --- categories ----------------------------------------------------------------------------------------
CATEGORIES = (
    "grocery", "household", "personal_care", "baby", "pet",
    "beauty", "fashion", "electronics", "home", "books",
)  # fmt: skip
CAT_POP = np.array([0.20, 0.13, 0.11, 0.05, 0.07, 0.09, 0.13, 0.07, 0.08, 0.07])
CAT_REPLENISH = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)  # favoured by regular buyers
CAT_DEAL = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)  # favoured by price-sensitive buyers
CAT_PRICE = np.array([0.8, 0.9, 0.7, 1.0, 0.9, 1.0, 1.4, 2.5, 1.6, 0.6])  # amount multiplier
CAT_EXTRA_QTY = np.array([2.0, 1.0, 1.0, 1.5, 1.0, 0.5, 0.3, 0.1, 0.3, 0.4])  # quantity = 1 + Poisson(.)
ITEM_CATALOGUE = synth_items.catalogue(CATEGORIES, CAT_REPLENISH)  # fixed: the same items for every seed
PREF_CONCENTRATION = 3.0
SEASON = np.array([0.9, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.3])  # amount factor by month
AMOUNT_NOISE_SD = 0.4
SPEND_BASE, SPEND_SLOPE = 35.0, 0.55  # spend_level = 35 exp(0.55 z_spend)
# priors of the latent traits (the posterior credit oracle conditions on them): mean = a + b app + c age_c
Z_SPEND_AGE, Z_SPEND_SD = 0.2, 0.98
LOG_K_APP, LOG_K_AGE, LOG_K_SD, SHAPE_MIN, SHAPE_MAX = 0.35, 0.15, 0.6, 0.6, 9.0
GAP_MEAN, GAP_APP, GAP_AGE, GAP_SD = 24.0, -0.1, 0.08, 0.45

# --- campaign ------------------------------------------------------------------------------------------
LEVELS = ("control", "discount_05", "discount_10", "discount_15")
CONTROL = "control"
DISCOUNTS = {"control": 0.0, "discount_05": 0.05, "discount_10": 0.10, "discount_15": 0.15}
ASSIGN_P = {"control": 0.25, "discount_05": 0.25, "discount_10": 0.25, "discount_15": 0.25}
CONTACT_COST = 0.10
MARGIN = 0.40
RETURN_HANDLING_COST = 3.0  # per returned campaign purchase (shipping back, processing): the economics' figure
CAMPAIGN_WINDOW_DAYS = 30.0
ASSIGNMENTS = ("randomised", "targeted")
# targeted campaign: score = 0.5 (log 30 - log1p(days since the last purchase)) + 0.3 (log1p(purchases) - log 10)
# + region term; logit of level l = TARGET_SLOPE[l] score + TARGET_BIAS[l], and two CRM rules shift one logit by
# -TARGET_RULE_SHIFT: VIPs (>= 30 purchases, the last within 30 days) almost never go without a discount, lapsed
# customers (no purchase for 450 days) almost never get the deepest one. Those ~7% sit outside the common support
# (a level's probability ~0.1-0.5%); the softmax tails put another ~7% just below 2% for some level.
TARGET_RECENCY, TARGET_FREQUENCY = 0.5, 0.3
TARGET_REGION = np.array([0.0, -0.3, 0.0, 0.4, 0.0])  # by REGIONS
TARGET_SLOPE = np.array([0.0, 0.7, 1.4, 2.1])  # by LEVELS: the deeper the discount, the more it follows the score
TARGET_BIAS = np.array([0.0, 0.35, 0.3, 0.15])
TARGET_VIP_PURCHASES, TARGET_VIP_DAYS, TARGET_LAPSED_DAYS, TARGET_RULE_SHIFT = 30, 30.0, 450.0, 4.0
BASKET_UPLIFT_PER_DISCOUNT = 1.5  # expected basket x (1 + 1.5 * discount)
BASKET_NOISE_SD = 0.4
# campaign response: logit p_control = C_BASE + C_ACT act + ... - C_DEAD dead; treated adds
# resp (d / 0.15) ** curv - dog, resp = softplus(C_R0 + C_R1 price_sens), curv = C_EXP exp(0.6 z_spend),
# dog = C_DOG sigmoid(C_DS (act - C_DA)) sigmoid(-C_DP price_sens)
C_BASE, C_ACT, C_DEAD = -3.3, 3.4, 0.8
C_R0, C_R1, C_EXP = 0.6, 1.2, 0.6
C_DOG, C_DS, C_DA, C_DP = 0.6, 10.0, 0.75, 3.0

# --- credit --------------------------------------------------------------------------------------------
APPLY_RATE = 0.25
TERMS = np.array([3, 6, 12, 24])
HOUSING = ("own", "rent", "free")
PURPOSES = ("electronics", "furniture", "appliances", "fashion", "travel", "education", "other")
PURPOSE_P = np.array([0.25, 0.18, 0.17, 0.12, 0.10, 0.06, 0.12])
PURPOSE_RISK = np.array([0.0, -0.1, -0.15, 0.25, 0.35, -0.2, 0.1])
RISK_NOISE_SD = 0.8  # the idiosyncratic part of the latent risk: no table carries it
RISK_WEIGHT = 0.6  # weight of the latent risk in the logit of the true PD
B_Z_SPEND = -(RISK_WEIGHT * 0.3 + 0.25)  # total logit slope in z_spend (through risk and directly)
B_LOG_SHAPE = -(RISK_WEIGHT * 0.35 / LOG_K_SD + 0.3)  # total logit slope in log(shape) (regular = safer)
INCOME_BASE, INCOME_Z, INCOME_AGE2, INCOME_SD = 38_000.0, 0.25, 0.0006, 0.45
REQUEST_BASE, REQUEST_Z, REQUEST_SD = 1_200.0, 0.3, 0.8
N_QUADRATURE = 12  # Gauss-Hermite nodes for marginalising a PD over normal noise
N_SHAPE_GRID, N_GAP_NODES = 64, 6  # posterior grid over log(shape); adaptive quadrature over log(mean gap)

FILES = {
    "transactions": "transactions.parquet",
    "customers": "customers.parquet",
    "campaign": "campaign.parquet",
    "applications": "applications.parquet",
    "truth_timing": "truth/timing.parquet",
    "truth_campaign": "truth/campaign.parquet",
    "truth_credit": "truth/credit.parquet",
    "lines": "lines.parquet",
    "truth_items": "truth/items.parquet",
    "returns": "returns.parquet",
    "repayments": "repayments.parquet",
    "truth_returns": "truth/returns.parquet",
}
META_FILE = "meta.json"

_TS = pa.timestamp("ns")
SCHEMAS: dict[str, pa.Schema] = {
    "transactions": pa.schema(
        [
            ("customer_id", pa.string()),
            ("timestamp", _TS),
            ("amount", pa.float64()),
            ("category", pa.string()),
            ("quantity", pa.int64()),
            ("order_id", pa.string()),
            ("payment_method", pa.string()),
        ]
    ),
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("region", pa.string()),
            ("age_band", pa.string()),
            ("signup_channel", pa.string()),
            ("acquired_at", _TS),
        ]
    ),
    "campaign": pa.schema(
        [
            ("customer_id", pa.string()),
            ("treatment", pa.string()),
            ("conversion", pa.int64()),
            ("revenue", pa.float64()),
            ("cost", pa.float64()),
            ("propensity", pa.float64()),
            ("returned_revenue", pa.float64()),
        ]
    ),
    "applications": pa.schema(
        [
            ("application_id", pa.string()),
            ("customer_id", pa.string()),
            ("applied_at", _TS),
            ("requested_amount", pa.float64()),
            ("income", pa.float64()),
            ("term_months", pa.int64()),
            ("age", pa.int64()),
            ("employment_years", pa.float64()),
            ("housing", pa.string()),
            ("purpose", pa.string()),
            ("existing_credits", pa.int64()),
            ("default", pa.int64()),
        ]
    ),
    "truth_timing": pa.schema(
        [
            ("customer_id", pa.string()),
            ("shape", pa.float64()),
            ("scale", pa.float64()),
            ("mean_gap_days", pa.float64()),
            ("p_drop", pa.float64()),
            *[(f"p_cat_{c}", pa.float64()) for c in CATEGORIES],
            ("p_repeat_cat", pa.float64()),
            ("spend_level", pa.float64()),
            ("n_purchases_total", pa.int64()),
            ("alive_at_end", pa.int64()),
        ]
    ),
    "truth_campaign": pa.schema(
        [("customer_id", pa.string())]
        + [(f"{q}_{lv}", pa.float64()) for lv in LEVELS for q in ("p_conv", "exp_revenue", "exp_cost")]
        + [(f"{q}_{lv}", pa.float64()) for lv in LEVELS for q in ("p_return", "exp_returned")]
    ),
    "truth_credit": pa.schema(
        [
            ("application_id", pa.string()),
            ("true_pd", pa.float64()),
            ("true_pd_observable", pa.float64()),
            ("true_pd_traits", pa.float64()),
            ("true_pd_observable_payments", pa.float64()),
        ]
    ),
    "lines": synth_items.LINES_SCHEMA,
    "truth_items": synth_items.TRUTH_SCHEMA,
    "returns": synth_returns.RETURNS_SCHEMA,
    "repayments": synth_returns.REPAYMENTS_SCHEMA,
    "truth_returns": synth_returns.TRUTH_SCHEMA,
}
_RETURN_TRUTH = [f"{q}_{lv}" for lv in LEVELS for q in ("p_return", "exp_returned")]



def table_schema(name: str, campaign_assignment: str = "randomised") -> pa.Schema:
    """The Arrow schema of table `name`: a targeted campaign's log has no propensity column, and its truth adds
    the true assignment probability of every level (`assign_p_<level>`)."""
    schema = SCHEMAS[name]
    if campaign_assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown campaign_assignment {campaign_assignment!r}; expected one of {ASSIGNMENTS}")
    if campaign_assignment == "targeted":
        if name == "campaign":
            return schema.remove(schema.get_field_index("propensity"))
        if name == "truth_campaign":  # the level triples, the assignment probabilities, then the returns' truth
            base = [f for f in schema if f.name not in _RETURN_TRUTH]
            return pa.schema(base + [(f"assign_p_{lv}", pa.float64()) for lv in LEVELS]
                             + [schema.field(c) for c in _RETURN_TRUTH])
    return schema


PROCESS = {
    "customers": (
        "Observable attributes region, age_band, signup_channel; acquired_at = first purchase, uniform in the "
        "first min(365, span/2) days. Latent traits (in truth tables only where noted): gamma shape k "
        "(lognormal around 2, clipped to [0.6, 9]; higher for the app channel), mean gap (lognormal around "
        "24 days), p_drop ~ Beta(2, 32) x channel factor, spend_level (lognormal around 35), price sensitivity "
        "(region, low spend, taste for beauty/fashion/electronics), risk (irregular, low-spend, young)."
    ),
    "timing": (
        "Renewal process with drop-out: after each purchase the customer stops for good with probability "
        "p_drop, otherwise the next gap (days, continuous) ~ Gamma(shape, scale), scale = mean_gap_days/shape. "
        "Events at or after observation_end are cut. Timing has no seasonality."
    ),
    "categories": (
        "Per-customer preferences p_cat_* ~ Dirichlet(3 x popularity, tilted to replenishment categories for "
        "regular buyers). The first purchase draws from p_cat_*; each later one repeats the previous "
        "category with probability p_repeat_cat, else draws afresh from p_cat_*."
    ),
    "amounts": (
        "amount = spend_level x category_price_factor x season_factor[month] x LogNormal(mean 1, sd-log 0.4), "
        "rounded to cents; quantity = 1 + Poisson(category_extra_quantity)."
    ),
    "items": " ".join((synth_items.__doc__ or "").split("\n\n")[1].split()),
    "returns": " ".join(" ".join((synth_returns.__doc__ or "").split("\n\n")[1:]).split()),
    "campaign": (
        "All customers acquired before campaign_date, assigned at random to the levels with assignment_probs. "
        "act = P(purchase within 30 days | alive, time since last purchase) under the true gamma process, 0 if "
        "the customer has dropped out (dead). logit p_control = -3.3 + 3.4 act + 0.25 z_spend + region effect "
        "- 0.8 dead; a treated level with discount d adds resp (d/0.15)^curv - dog, where resp = softplus(0.6 + "
        "1.2 price_sens) (1 - 0.75 dead), curv = clip(0.6 exp(0.6 z_spend), 0.25, 2.5) (big spenders need deep "
        "discounts) and dog = 0.6 sigmoid(10 (act - 0.75)) sigmoid(-3 price_sens) (sleeping dogs: about to buy "
        "anyway, price-insensitive, put off by the contact). basket = 1.1 spend_level (1 + 1.5 d) x "
        "LogNormal(mean 1, sd-log 0.4); revenue = basket (1 - d) if converted else 0; cost = basket d if "
        "converted + contact_cost if treated. truth: exp_revenue = p E[basket] (1 - d), exp_cost = p E[basket] d "
        "+ contact_cost 1[treated]."
    ),
    "campaign_targeted": (
        "campaign_assignment = targeted (replaces the random assignment; all else as in 'campaign'): the CRM "
        "scores each customer on its tables, score = 0.5 (log 30 - log1p(days since the last purchase before "
        "campaign_date)) + 0.3 (log1p(purchases before campaign_date) - log 10) + region term (south -0.3, west "
        "+0.4), and draws the level with P(l) = softmax_l(slope_l score + bias_l), slopes 0 / 0.7 / 1.4 / 2.1 and "
        "biases 0 / 0.35 / 0.3 / 0.15 for control / 5% / 10% / 15%: active buyers, who convert anyway, get deep "
        "discounts. Two rules subtract 4 from one logit: VIPs (>= 30 purchases, the last within 30 days) from "
        "control's, the lapsed (no purchase for 450 days) from the 15% level's (outside the common support). The "
        "log has no propensity column; truth_campaign adds assign_p_<level>."
    ),
    "credit": (
        "25% of customers apply once, uniformly between acquisition and observation_end. true_pd = sigmoid("
        "-1.95 + 0.6 risk + 0.45 log(requested/monthly income) + 0.02 term + 0.0009 (age-40)^2 "
        "- 0.35 log1p(employment_years) + 0.35 rent + 0.2 free + 0.25 existing_credits + purpose effect "
        "- 0.3 log(shape/2) - 0.25 z_spend - 0.25 log1p(purchases in the 180 days before applied_at) "
        "+ 0.4 [no purchase in those 180 days]); default ~ Bernoulli(true_pd). risk = -0.35 zk - 0.3 z_spend "
        "+ 0.25 [age 18-24] + N(0, 0.8). Oracles: true_pd_traits = E[true_pd] over the risk noise only (knows "
        "the latent shape and spend level: an upper bound no model on the tables can reach); "
        "true_pd_observable = E[true_pd | application, customer attributes, purchases before applied_at]: "
        "posterior of z_spend (normal, from amounts, income, requested), of log shape (grid, from the gaps) "
        "and the noise, so the best PD the tables support (up to weak evidence it ignores)."
    ),
}


@dataclass
class SynthData:
    """Generated tables, ground truth and metadata (see `FILES` and DESIGN.md)."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    campaign: pd.DataFrame
    applications: pd.DataFrame
    truth_timing: pd.DataFrame
    truth_campaign: pd.DataFrame
    truth_credit: pd.DataFrame
    lines: pd.DataFrame | None = None  # order lines (items); None for a folder written before generator version 3
    truth_items: pd.DataFrame | None = None
    returns: pd.DataFrame | None = None  # returns, repayments and their truth: None before generator version 4
    repayments: pd.DataFrame | None = None
    truth_returns: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return special.expit(x)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _ids(prefix: str, nums: np.ndarray, width: int = 7) -> pa.Array:
    """Zero-padded string identifiers such as 'c0000001' (vectorised in Arrow)."""
    s = pc.cast(pa.array(np.asarray(nums, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(s, width, "0"), "")


def _take_str(values: tuple[str, ...], idx: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(np.asarray(idx, dtype=np.int64)))


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row from the row-wise categorical distributions `probs` (n, K)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def _days_to_ns(t_days: np.ndarray, start_ns: int) -> np.ndarray:
    return start_ns + np.round(t_days * DAY_NS).astype(np.int64)


def _window(start: str, end: str) -> dict:
    """Observation window in days: [start 00:00, end + 1 day 00:00), i.e. `end` is the last whole day."""
    t0 = pd.Timestamp(start).normalize()
    t_end = pd.Timestamp(end).normalize() + pd.Timedelta(days=1)
    span = (t_end - t0) / pd.Timedelta(days=1)
    if span < 60:
        raise ValueError(f"the window {start}..{end} is too short (need at least 60 days)")
    acq_days = min(365.0, span / 2)
    campaign = t0 + pd.Timedelta(days=math.floor(0.75 * (span - 1)))
    return {
        "t0": t0,
        "t_end": t_end,
        "start_ns": int(t0.value),
        "horizon": float(span),
        "acq_days": float(acq_days),
        "campaign_date": campaign,
        "t_campaign": float((campaign - t0) / pd.Timedelta(days=1)),
    }


def build_meta(n_customers: int, seed: int, start: str, end: str, chunk_size: int,
               campaign_assignment: str = "randomised") -> dict:
    """The meta.json content: parameters, levels and costs, categories and the process description.
    A targeted campaign adds `campaign_assignment` and `targeting` and has no `assignment_probs` (a randomised
    campaign's meta is unchanged: no key added, so its bytes stay those of earlier versions)."""
    w = _window(start, end)
    meta = {
        "generator": "offerlab.data.synth",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "n_customers": int(n_customers),
        "chunk_size": int(chunk_size),
        "start": str(w["t0"].date()),
        "end": str((w["t_end"] - pd.Timedelta(days=1)).date()),
        "observation_end": w["t_end"].isoformat(),
        "acquisition_window_days": w["acq_days"],
        "campaign_date": str(w["campaign_date"].date()),
        "campaign_window_days": CAMPAIGN_WINDOW_DAYS,
        "levels": list(LEVELS),
        "control": CONTROL,
        "discounts": dict(DISCOUNTS),
        "assignment_probs": dict(ASSIGN_P),
        "contact_cost": CONTACT_COST,
        "margin": MARGIN,
        "return_handling_cost": RETURN_HANDLING_COST,
        "profit": "margin * (revenue + discount paid) - cost: the margin is on the list-price basket; revenue is "
        "net of the discount; cost = discount paid + contact (the discount is charged once)",
        "categories": list(CATEGORIES),
        "category_price_factor": dict(zip(CATEGORIES, CAT_PRICE.tolist(), strict=True)),
        "category_extra_quantity": dict(zip(CATEGORIES, CAT_EXTRA_QTY.tolist(), strict=True)),
        "season_factor_by_month": {str(m + 1): float(f) for m, f in enumerate(SEASON)},
        "regions": list(REGIONS),
        "age_bands": list(AGE_BANDS),
        "signup_channels": list(CHANNELS),
        "housing": list(HOUSING),
        "purposes": list(PURPOSES),
        "terms_months": TERMS.tolist(),
        "files": dict(FILES),
        "items": ITEM_CATALOGUE.drop(columns=["category_code"]).to_dict(orient="list"),
        "process": {k: v for k, v in PROCESS.items() if k != "campaign_targeted"},
    }
    table_schema("campaign", campaign_assignment)  # refuses an unknown assignment
    if campaign_assignment == "targeted":
        meta["campaign_assignment"] = "targeted"
        meta["assignment_probs"] = None
        meta["targeting"] = {
            "recency": TARGET_RECENCY, "frequency": TARGET_FREQUENCY,
            "region": dict(zip(REGIONS, TARGET_REGION.tolist(), strict=True)),
            "slope": dict(zip(LEVELS, TARGET_SLOPE.tolist(), strict=True)),
            "bias": dict(zip(LEVELS, TARGET_BIAS.tolist(), strict=True)),
            "vip": {"min_purchases": TARGET_VIP_PURCHASES, "max_days_since_last": TARGET_VIP_DAYS,
                    "control_logit_shift": -TARGET_RULE_SHIFT},
            "lapsed": {"min_days_since_last": TARGET_LAPSED_DAYS, "deepest_logit_shift": -TARGET_RULE_SHIFT},
        }
        meta["process"]["campaign_targeted"] = PROCESS["campaign_targeted"]
    return meta


# ----------------------------------------------------------------------------------------------------------
# oracle helpers
# ----------------------------------------------------------------------------------------------------------
def _truth_arrays(truth: pd.DataFrame | Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(truth["shape"], dtype=float),
        np.asarray(truth["scale"], dtype=float),
        np.asarray(truth["p_drop"], dtype=float),
    )


def true_prob_purchase_within(
    truth: pd.DataFrame | Mapping, elapsed_days: np.ndarray | float, k_days: np.ndarray | float
) -> np.ndarray:
    """Oracle P(next purchase within `k_days` | no purchase for `elapsed_days` since the last one).

    (1-p)(F(e+k) - F(e)) / (p + (1-p)(1 - F(e))) with F the Gamma(shape, scale) cdf; row-wise over `truth`
    (columns shape, scale, p_drop), broadcast against `elapsed_days` and `k_days`.
    """
    k, theta, p = _truth_arrays(truth)
    e = np.asarray(elapsed_days, dtype=float)
    kd = np.asarray(k_days, dtype=float)
    sf_e = stats.gamma.sf(e, k, scale=theta)
    sf_ek = stats.gamma.sf(e + kd, k, scale=theta)
    num = (1 - p) * (sf_e - sf_ek)
    den = p + (1 - p) * sf_e
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def true_gap_logpdf(truth: pd.DataFrame | Mapping, gaps: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """Oracle log-likelihood of observed gaps (days), row-wise over `truth`.

    Observed gap g: log((1-p) f(g)); censored at g (no purchase seen for g days): log(p + (1-p)(1 - F(g))).
    """
    k, theta, p = _truth_arrays(truth)
    g = np.asarray(gaps, dtype=float)
    cens = np.asarray(censored, dtype=bool)
    with np.errstate(divide="ignore"):
        ev = np.log1p(-p) + stats.gamma.logpdf(g, k, scale=theta)
        ce = np.logaddexp(np.log(p), np.log1p(-p) + stats.gamma.logsf(g, k, scale=theta))
    return np.where(cens, ce, ev)


def logit_normal_mean(logit: np.ndarray, sd: np.ndarray | float, n_nodes: int = N_QUADRATURE) -> np.ndarray:
    """E[sigmoid(logit + e)] for e ~ N(0, sd^2), row-wise, by Gauss-Hermite quadrature (exact as nodes grow)."""
    x, w = np.polynomial.hermite_e.hermegauss(n_nodes)  # weight exp(-x^2 / 2): standard normal nodes
    vals = _sigmoid(np.asarray(logit, dtype=float)[..., None] + np.asarray(sd, dtype=float)[..., None] * x)
    return vals @ (w / w.sum())


def _log_income_mean(age: np.ndarray) -> np.ndarray:
    return np.log(INCOME_BASE) - INCOME_AGE2 * (age - 48) ** 2


def _credit_logit_observed(age, requested, income, term, emp, housing, purpose, existing, n180) -> np.ndarray:
    """The part of the true PD's logit that the tables show (all but the latent shape, spend and noise)."""
    return (
        -1.95
        + RISK_WEIGHT * 0.25 * (age < AGE_LO[1])  # the risk trait's 18-24 term
        + 0.45 * np.log(requested / (income / 12.0))
        + 0.02 * term
        + 0.0009 * (age - 40.0) ** 2
        - 0.35 * np.log1p(emp)
        + 0.35 * (housing == 1)
        + 0.2 * (housing == 2)
        + 0.25 * existing
        + PURPOSE_RISK[purpose]
        - 0.25 * np.log1p(n180)
        + 0.4 * (n180 == 0)
    )


def _history_sums(ev: dict, app: np.ndarray, pos: np.ndarray, spend_signal: np.ndarray) -> dict[str, np.ndarray]:
    """Per applicant, sums over the purchases before applied_at (events start..pos): the oracle's data."""
    gap = np.where(ev["seq"] > 0, np.diff(ev["t"], prepend=0.0), 0.0)
    ok = gap > 0

    def window_sum(x: np.ndarray) -> np.ndarray:
        cs = np.concatenate([[0.0], np.cumsum(x)])
        return cs[pos] - cs[ev["starts"][app]]

    return {
        "n": window_sum(np.ones(len(gap))),
        "spend_signal": window_sum(spend_signal),
        "m": window_sum(ok.astype(float)),
        "gap": window_sum(np.where(ok, gap, 0.0)),
        "log_gap": window_sum(np.log(np.where(ok, gap, 1.0))),
    }


def _log_shape_prior(n_grid: int, app_channel: np.ndarray, age_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid of log shape, log prior mass per row and grid point): the generator's clipped normal on log
    shape, its tails as point masses at the clip bounds (shared by the credit and campaign oracles)."""
    lo, hi = np.log(SHAPE_MIN), np.log(SHAPE_MAX)
    grid = np.linspace(lo, hi, n_grid)
    mu_k = np.log(2.0) + LOG_K_APP * app_channel + LOG_K_AGE * age_c
    log_w = stats.norm.logpdf(grid[None, :], mu_k[:, None], LOG_K_SD) + np.log(grid[1] - grid[0])
    log_w[:, 0] = np.logaddexp(log_w[:, 0], stats.norm.logcdf(lo, mu_k, LOG_K_SD))
    log_w[:, -1] = np.logaddexp(log_w[:, -1], stats.norm.logsf(hi, mu_k, LOG_K_SD))
    return grid, log_w


def _gap_setup(hist: dict, app_channel: np.ndarray, age_c: np.ndarray) -> dict[str, np.ndarray]:
    """What `_gap_loglik` needs at every grid point: Gauss-Hermite nodes and log weights, the prior mean of the
    log mean gap, the gap sums (count m, sum, sum of logs) and the likelihood mode of the log mean gap."""
    x, wq = np.polynomial.hermite_e.hermegauss(N_GAP_NODES)
    m, sg, slg = (hist[c][:, None] for c in ("m", "gap", "log_gap"))
    return {"x": x, "log_wq": np.log(wq / wq.sum())[None, :],
            "mu_g": (np.log(GAP_MEAN) + GAP_APP * app_channel + GAP_AGE * age_c)[:, None],
            "m": m, "sg": sg, "slg": slg, "u_hat": np.log(np.where(m > 0, sg, 1.0) / np.maximum(m, 1.0))}


def _gap_loglik(g: dict, lk: float) -> tuple[np.ndarray, np.ndarray]:
    """(u, log f) at one log shape `lk`: gamma gaps with the log mean gap u integrated by adaptive
    Gauss-Hermite, nodes centred on its (normal-approximated) posterior; per customer and node."""
    k = np.exp(lk)
    m, sg, slg, mu_g, x = g["m"], g["sg"], g["slg"], g["mu_g"], g["x"]
    prec = m * k + 1.0 / GAP_SD**2
    c = (m * k * g["u_hat"] + mu_g / GAP_SD**2) / prec
    u = c + x[None, :] / np.sqrt(prec)
    log_f = (m * (k * lk - k * u - special.gammaln(k)) + (k - 1.0) * slg - k * sg * np.exp(-u)
             - 0.5 * ((u - mu_g) / GAP_SD) ** 2 + 0.5 * x[None, :] ** 2 - 0.5 * np.log(prec * GAP_SD**2))  # fmt: skip
    return u, log_f


def _log_shape_posterior(hist: dict, app_channel: np.ndarray, age_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid of log shape, posterior weights per applicant) given the gaps before applied_at.

    Prior: the generator's clipped normal on log shape (tails as point masses at the clip bounds);
    likelihood: gamma gaps with the mean gap integrated over its lognormal prior (adaptive Gauss-Hermite;
    the generator's clip of the mean gap to [4, 240] days is ignored: it binds 4 prior sds out).
    """
    grid, log_w = _log_shape_prior(N_SHAPE_GRID, app_channel, age_c)
    g = _gap_setup(hist, app_channel, age_c)
    for j, lk in enumerate(grid):  # a loop over grid points; each step is vectorised over applicants
        _, log_f = _gap_loglik(g, lk)
        log_w[:, j] += special.logsumexp(log_f + g["log_wq"], axis=1)
    return grid, special.softmax(log_w, axis=1)


def _posterior_pd(logit_seen, hist: dict, band, channel, age, income, requested,
                  noise: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """E[true PD | everything observable at application]: the best PD any model can reach on these tables.

    The latent spend level has a conjugate normal posterior (its prior, the spend signal of each past
    purchase, income and requested amount); the shape (regularity) a grid posterior from the gaps; the
    risk noise its prior. Ignored, as weak: what category choices, the days since the last purchase and
    drop-out say about the traits (so this is, if anything, a slightly low ceiling).

    `noise`: (nodes, weights) per row of the standardised risk noise's posterior (from repayments,
    `synth_returns.noise_posterior`); None: its prior, folded into the spend level's normal.
    """
    age_c = (band - 2.3) / 1.5
    li, lr = np.log(income) - _log_income_mean(age), np.log(requested / REQUEST_BASE)
    prec = (1 / Z_SPEND_SD**2 + hist["n"] * SPEND_SLOPE**2 / AMOUNT_NOISE_SD**2
            + INCOME_Z**2 / INCOME_SD**2 + REQUEST_Z**2 / REQUEST_SD**2)  # fmt: skip
    z_mean = (Z_SPEND_AGE * age_c / Z_SPEND_SD**2 + SPEND_SLOPE * hist["spend_signal"] / AMOUNT_NOISE_SD**2
              + INCOME_Z * li / INCOME_SD**2 + REQUEST_Z * lr / REQUEST_SD**2) / prec  # fmt: skip
    sd = np.sqrt(B_Z_SPEND**2 / prec + (RISK_WEIGHT * RISK_NOISE_SD) ** 2)
    grid, weights = _log_shape_posterior(hist, (channel == CHANNELS.index("app")).astype(float), age_c)
    base = logit_seen + B_Z_SPEND * z_mean
    out = np.zeros(len(base))
    if noise is not None:
        nodes, nw = noise
        sd_z = np.abs(B_Z_SPEND) / np.sqrt(prec)
        shift = RISK_WEIGHT * RISK_NOISE_SD * nodes
        for j, lk in enumerate(grid):
            lg = (base + B_LOG_SHAPE * (lk - np.log(2.0)))[:, None] + shift
            out += weights[:, j] * (nw * logit_normal_mean(lg, sd_z[:, None])).sum(axis=1)
        return out
    for j, lk in enumerate(grid):
        out += weights[:, j] * logit_normal_mean(base + B_LOG_SHAPE * (lk - np.log(2.0)), sd)
    return out


def true_expected_profit(truth_campaign: pd.DataFrame, meta: Mapping | None = None) -> pd.DataFrame:
    """Expected profit per customer and level, margin * exp_gross - exp_cost (columns = levels), where
    exp_gross = exp_revenue / (1 - d) is the list-price basket: the margin is earned on the list price and
    the discount, inside exp_cost, is paid once (margin * net revenue - cost would charge it twice)."""
    margin = MARGIN if meta is None else float(meta["margin"])
    levels = list(LEVELS) if meta is None else list(meta["levels"])
    disc = DISCOUNTS if meta is None else meta["discounts"]
    return pd.DataFrame(
        {lv: margin * truth_campaign[f"exp_revenue_{lv}"] / (1.0 - float(disc.get(lv, 0.0)))
         - truth_campaign[f"exp_cost_{lv}"] for lv in levels},
        index=truth_campaign.index,
    )


# ----------------------------------------------------------------------------------------------------------
# one chunk
# ----------------------------------------------------------------------------------------------------------
def _traits(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    region = rng.choice(len(REGIONS), size=n, p=REGION_P)
    age = rng.choice(len(AGE_BANDS), size=n, p=AGE_P)
    channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_P)
    app = (channel == CHANNELS.index("app")).astype(float)
    age_c = (age - 2.3) / 1.5
    log_k = np.log(2.0) + LOG_K_APP * app + LOG_K_AGE * age_c + rng.normal(0.0, LOG_K_SD, n)
    shape = np.clip(np.exp(log_k), SHAPE_MIN, SHAPE_MAX)
    mean_gap = np.clip(np.exp(np.log(GAP_MEAN) + GAP_APP * app + GAP_AGE * age_c + rng.normal(0.0, GAP_SD, n)), 4.0, 240.0)
    p_drop = np.clip(rng.beta(2.0, 32.0, n) * CHANNEL_DROP[channel], 0.004, 0.6)
    z_spend = Z_SPEND_AGE * age_c + rng.normal(0.0, Z_SPEND_SD, n)
    spend = SPEND_BASE * np.exp(SPEND_SLOPE * z_spend)
    zk = (np.log(shape) - np.log(2.0)) / LOG_K_SD
    tilt = np.exp(np.where(CAT_REPLENISH, 0.5, -0.5)[None, :] * zk[:, None])
    alpha = PREF_CONCENTRATION * CAT_POP[None, :] * tilt
    g = rng.standard_gamma(alpha)
    prefs = g / g.sum(axis=1, keepdims=True)
    prefs = np.maximum(prefs, 1e-12)
    prefs /= prefs.sum(axis=1, keepdims=True)
    deal_share = prefs[:, CAT_DEAL].sum(axis=1)
    price_sens = REGION_PRICE_SENS[region] - 0.45 * z_spend + 1.5 * (deal_share - 0.29) + rng.normal(0.0, 0.6, n)
    p_repeat = rng.beta(2.0, 5.0, n)
    risk_mean = -0.35 * zk - 0.3 * z_spend + 0.25 * (age == 0)
    risk = risk_mean + rng.normal(0.0, RISK_NOISE_SD, n)
    return {
        "region": region, "age": age, "channel": channel, "shape": shape, "mean_gap": mean_gap,
        "p_drop": p_drop, "z_spend": z_spend, "spend": spend, "prefs": prefs, "price_sens": price_sens,
        "p_repeat": p_repeat, "risk": risk, "risk_mean": risk_mean,
    }  # fmt: skip


def _events(rng: np.random.Generator, tr: dict, w: dict) -> dict[str, np.ndarray]:
    """Purchase times (days since start) as flat arrays sorted by customer then time."""
    n = len(tr["shape"])
    acq = rng.random(n) * w["acq_days"]
    n_total = rng.geometric(tr["p_drop"])  # purchases before drop-out, >= 1 (may run past the window)
    rem = w["horizon"] - acq
    m = rem / tr["mean_gap"]
    cap = np.ceil(2.0 * m + 12.0 * np.sqrt(m / tr["shape"]) + 10.0).astype(np.int64)
    scale = tr["mean_gap"] / tr["shape"]
    for _ in range(10):
        n_gaps = np.minimum(n_total - 1, cap)
        lengths = n_gaps + 1
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        cust = np.repeat(np.arange(n), lengths)
        v = rng.gamma(tr["shape"][cust], scale[cust])
        v[starts] = 0.0
        cs = np.cumsum(v)  # segmented cumsum: subtract each customer's running total at its first event
        t = np.maximum(np.repeat(acq - cs[starts], lengths) + cs, np.repeat(acq, lengths))
        t[starts] = acq  # exact first event; rounding elsewhere stays monotone and >= acq
        last = t[starts + lengths - 1]
        truncated = (n_gaps == cap) & (n_total - 1 > cap) & (last < w["horizon"])
        if not truncated.any():
            break
        cap = cap * 2  # extend: the cap bit for some customer, draw again with more room
    else:  # pragma: no cover - needs ~10 failures in a row
        raise RuntimeError("could not generate enough events per customer")
    keep = t < w["horizon"]
    cust, t = cust[keep], t[keep]
    counts = np.bincount(cust, minlength=n)
    kstarts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    seq = np.arange(len(t)) - np.repeat(kstarts, counts)
    return {"acq": acq, "n_total": n_total, "cust": cust, "t": t, "counts": counts, "starts": kstarts, "seq": seq}


def _transactions(
    rng: np.random.Generator, tr: dict, ev: dict, w: dict, cid: pa.Array, num: np.ndarray
) -> tuple[pa.Table, np.ndarray]:
    """The transactions table, plus per event log(amount / expected amount at z_spend 0) for the credit oracle."""
    cust, seq = ev["cust"], ev["seq"]
    n_ev = len(cust)
    fresh = _categorical(rng, tr["prefs"][cust])
    repeat = (rng.random(n_ev) < tr["p_repeat"][cust]) & (seq > 0)
    src = np.maximum.accumulate(np.where(repeat, 0, np.arange(n_ev)))
    cat = fresh[src]
    ts = _days_to_ns(ev["t"], w["start_ns"])
    month = ts.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64) % 12
    noise = np.exp(rng.normal(-0.5 * AMOUNT_NOISE_SD**2, AMOUNT_NOISE_SD, n_ev))
    amount = np.round(tr["spend"][cust] * CAT_PRICE[cat] * SEASON[month] * noise, 2)
    amount = np.maximum(amount, 0.01)
    qty = 1 + rng.poisson(CAT_EXTRA_QTY[cat])
    spend_signal = np.log(amount / (SPEND_BASE * CAT_PRICE[cat] * SEASON[month])) + 0.5 * AMOUNT_NOISE_SD**2
    cust_arr = pa.array(cust.astype(np.int64))
    prefix = pc.binary_join_element_wise(_ids("o", num), pa.scalar("-"), "")
    seq_str = pc.utf8_lpad(pc.cast(pa.array(seq.astype(np.int64)), pa.string()), 4, "0")
    return pa.Table.from_arrays(
        [
            cid.take(cust_arr),
            pa.array(ts, _TS),
            pa.array(amount),
            _take_str(CATEGORIES, cat),
            pa.array(qty.astype(np.int64)),
            pc.binary_join_element_wise(prefix.take(cust_arr), seq_str, ""),
        ],
        schema=SCHEMAS["transactions"].remove(SCHEMAS["transactions"].get_field_index("payment_method")),
    ), spend_signal, cat


def _before(cust: np.ndarray, t: np.ndarray, key: np.ndarray, stride: float) -> np.ndarray:
    """Index (global, flat) one past the customer's last event strictly before time t."""
    return np.searchsorted(key, cust * stride + t, side="left")


def targeted_assignment_probs(days_since_last: np.ndarray, n_purchases: np.ndarray, region: np.ndarray
                              ) -> np.ndarray:
    """(n, L) probabilities with which the CRM of a targeted campaign picks each level (LEVELS order), from what
    its tables show: days since the last purchase, purchases so far and the region code (index into REGIONS)."""
    score = (TARGET_RECENCY * (np.log(30.0) - np.log1p(days_since_last))
             + TARGET_FREQUENCY * (np.log1p(n_purchases) - np.log(10.0)) + TARGET_REGION[region])
    logits = score[:, None] * TARGET_SLOPE[None, :] + TARGET_BIAS[None, :]
    vip = (n_purchases >= TARGET_VIP_PURCHASES) & (days_since_last <= TARGET_VIP_DAYS)
    logits[:, 0] -= TARGET_RULE_SHIFT * vip  # VIPs always get something
    logits[:, -1] -= TARGET_RULE_SHIFT * (days_since_last > TARGET_LAPSED_DAYS)  # the lapsed never the deepest
    return special.softmax(logits, axis=1)


def _campaign(rng: np.random.Generator, tr: dict, ev: dict, w: dict, cid: pa.Array, key: np.ndarray, stride: float,
              campaign_assignment: str = "randomised"):
    tc = w["t_campaign"]
    elig = np.flatnonzero(ev["acq"] < tc)
    if len(elig) == 0:
        return None, None, None
    pos = _before(elig, np.full(len(elig), tc), key, stride)
    n_before = pos - ev["starts"][elig]
    last_t = ev["t"][pos - 1]
    elapsed = tc - last_t
    alive = n_before < ev["n_total"][elig]
    k, mg = tr["shape"][elig], tr["mean_gap"][elig]
    th = mg / k
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = -np.expm1(
            stats.gamma.logsf(elapsed + CAMPAIGN_WINDOW_DAYS, k, scale=th) - stats.gamma.logsf(elapsed, k, scale=th)
        )
    cond = np.nan_to_num(cond, nan=1.0)
    act = np.where(alive, cond, 0.0)
    dead = (~alive).astype(float)
    ps = tr["price_sens"][elig]
    lin0 = C_BASE + C_ACT * act + 0.25 * tr["z_spend"][elig] + REGION_CONV[tr["region"][elig]] - C_DEAD * dead
    resp = _softplus(C_R0 + C_R1 * ps) * (1.0 - 0.75 * dead)
    curv = np.clip(C_EXP * np.exp(0.6 * tr["z_spend"][elig]), 0.25, 2.5)  # big spenders need deep discounts
    dog = C_DOG * _sigmoid(C_DS * (act - C_DA)) * _sigmoid(-C_DP * ps)
    base_basket = 1.1 * tr["spend"][elig]
    truth_cols, p_conv, e_basket = {}, [], []
    for lv in LEVELS:
        d = DISCOUNTS[lv]
        treated = d > 0
        p = _sigmoid(lin0 + (resp * (d / 0.15) ** curv - dog if treated else 0.0))
        eb = base_basket * (1.0 + BASKET_UPLIFT_PER_DISCOUNT * d)
        p_conv.append(p)
        e_basket.append(eb)
        truth_cols[f"p_conv_{lv}"] = p
        truth_cols[f"exp_revenue_{lv}"] = p * eb * (1.0 - d)
        truth_cols[f"exp_cost_{lv}"] = p * eb * d + (CONTACT_COST if treated else 0.0)
    targeted = campaign_assignment == "targeted"
    if targeted:  # one uniform per customer, as rng.choice below draws: the rest of the stream stays aligned
        assign_p = targeted_assignment_probs(elapsed, n_before, tr["region"][elig])
        arm = _categorical(rng, assign_p)
        for j, lv in enumerate(LEVELS):
            truth_cols[f"assign_p_{lv}"] = assign_p[:, j]
    else:
        probs = np.array([ASSIGN_P[lv] for lv in LEVELS])
        arm = rng.choice(len(LEVELS), size=len(elig), p=probs)
    rows = np.arange(len(elig))
    p_arm = np.stack(p_conv, axis=1)[rows, arm]
    eb_arm = np.stack(e_basket, axis=1)[rows, arm]
    disc = np.array([DISCOUNTS[lv] for lv in LEVELS])[arm]
    conv = (rng.random(len(elig)) < p_arm).astype(np.int64)
    basket = eb_arm * np.exp(rng.normal(-0.5 * BASKET_NOISE_SD**2, BASKET_NOISE_SD, len(elig)))
    revenue = np.round(conv * basket * (1.0 - disc), 2)
    cost = np.round(conv * basket * disc + np.where(disc > 0, CONTACT_COST, 0.0), 2)
    ids = cid.take(pa.array(elig.astype(np.int64)))
    cols = [ids, _take_str(LEVELS, arm), pa.array(conv), pa.array(revenue), pa.array(cost)]
    camp_schema = table_schema("campaign", campaign_assignment)
    camp = pa.Table.from_arrays(cols if targeted else [*cols, pa.array(probs[arm])],
                                schema=camp_schema.remove(camp_schema.get_field_index("returned_revenue")))
    truth_schema = table_schema("truth_campaign", campaign_assignment)
    truth = pa.Table.from_arrays(
        [ids] + [pa.array(truth_cols[f.name]) for f in list(truth_schema)[1:] if f.name not in _RETURN_TRUTH],
        schema=pa.schema([f for f in truth_schema if f.name not in _RETURN_TRUTH]),
    )
    info = {"elig": elig, "arm": arm, "conv": conv, "revenue": revenue, "discounts": dict(DISCOUNTS),
            "p_conv": {lv: truth_cols[f"p_conv_{lv}"] for lv in LEVELS},
            "exp_revenue": {lv: truth_cols[f"exp_revenue_{lv}"] for lv in LEVELS}}
    return camp, truth, info


def _applications(
    rng: np.random.Generator, tr: dict, ev: dict, w: dict, cid: pa.Array, num: np.ndarray, key, stride, spend_signal
):
    n = len(num)
    app = np.flatnonzero(rng.random(n) < APPLY_RATE)
    m = len(app)
    if m == 0:
        return None, None, None
    acq = ev["acq"][app]
    ta = acq + rng.random(m) * (w["horizon"] - acq)
    pos = _before(app, ta, key, stride)
    pos180 = _before(app, np.maximum(ta - 180.0, 0.0), key, stride)
    n180 = pos - pos180
    zs = tr["z_spend"][app]
    band = tr["age"][app]
    age = AGE_LO[band] + np.floor(rng.random(m) * (AGE_HI[band] - AGE_LO[band] + 1)).astype(np.int64)
    income = np.round(np.exp(_log_income_mean(age) + INCOME_Z * zs + rng.normal(0.0, INCOME_SD, m)), -1)
    requested = np.round(np.exp(np.log(REQUEST_BASE) + REQUEST_Z * zs + rng.normal(0.0, REQUEST_SD, m)), -1)
    requested = np.maximum(requested, 50.0)
    term_idx = np.clip(np.round((np.log(requested) - np.log(1_200)) / 0.8 + 1.5 + rng.normal(0.0, 0.8, m)), 0, 3)
    term = TERMS[term_idx.astype(np.int64)]
    emp = np.round(np.minimum(rng.gamma(1.6, 4.0, m), np.maximum(age - 17, 0.0)), 1)
    p_own = _sigmoid(-1.2 + 0.08 * (age - 30))
    u = rng.random(m)
    housing = np.where(u < p_own, 0, np.where(u < p_own + 0.1 * (1 - p_own), 2, 1))
    purpose = rng.choice(len(PURPOSES), size=m, p=PURPOSE_P)
    existing = np.minimum(rng.poisson(0.5 + 0.012 * (age - 18)), 6)
    logit_seen = _credit_logit_observed(age, requested, income, term, emp, housing, purpose, existing, n180)
    lk = np.log(tr["shape"][app])
    logit_traits = logit_seen + B_LOG_SHAPE * (lk - np.log(2.0)) + B_Z_SPEND * zs
    noise = tr["risk"][app] - tr["risk_mean"][app]
    pd_true = _sigmoid(logit_traits + RISK_WEIGHT * noise)
    pd_traits = logit_normal_mean(logit_traits, RISK_WEIGHT * RISK_NOISE_SD)
    hist = _history_sums(ev, app, pos, spend_signal)
    pd_observable = _posterior_pd(logit_seen, hist, tr["age"][app], tr["channel"][app], age, income, requested)
    default = (rng.random(m) < pd_true).astype(np.int64)
    app_id = _ids("a", num[app])
    apps = pa.Table.from_arrays(
        [
            app_id,
            cid.take(pa.array(app.astype(np.int64))),
            pa.array(_days_to_ns(ta, w["start_ns"]), _TS),
            pa.array(requested),
            pa.array(income),
            pa.array(term.astype(np.int64)),
            pa.array(age.astype(np.int64)),
            pa.array(emp),
            _take_str(HOUSING, housing),
            _take_str(PURPOSES, purpose),
            pa.array(existing.astype(np.int64)),
            pa.array(default),
        ],
        schema=SCHEMAS["applications"],
    )
    truth = pa.Table.from_arrays(
        [app_id, pa.array(pd_true), pa.array(pd_observable), pa.array(pd_traits)],
        schema=SCHEMAS["truth_credit"].remove(SCHEMAS["truth_credit"].get_field_index("true_pd_observable_payments")),
    )
    info = {"app": app, "ta": ta, "logit_seen": logit_seen, "hist": hist, "band": tr["age"][app],
            "channel": tr["channel"][app], "age": age, "income": income, "requested": requested,
            "pd_observable": pd_observable}
    return apps, truth, info


def _chunk(rng: np.random.Generator, offset: int, n: int, w: dict, campaign_assignment: str = "randomised",
           items_rng: np.random.Generator | None = None, returns_rng: np.random.Generator | None = None
           ) -> dict[str, pa.Table]:
    num = np.arange(offset + 1, offset + n + 1, dtype=np.int64)
    cid = _ids("c", num)
    tr = _traits(rng, n)
    ev = _events(rng, tr, w)
    stride = w["horizon"] + 1.0
    key = ev["cust"] * stride + ev["t"]  # sorted: customer then time
    transactions, spend_signal, cat = _transactions(rng, tr, ev, w, cid, num)
    out = {"transactions": transactions}
    out["customers"] = pa.Table.from_arrays(
        [
            cid,
            _take_str(REGIONS, tr["region"]),
            _take_str(AGE_BANDS, tr["age"]),
            _take_str(CHANNELS, tr["channel"]),
            pa.array(_days_to_ns(ev["acq"], w["start_ns"]), _TS),
        ],
        schema=SCHEMAS["customers"],
    )
    out["campaign"], out["truth_campaign"], camp_info = _campaign(rng, tr, ev, w, cid, key, stride,
                                                                   campaign_assignment)
    out["applications"], out["truth_credit"], app_info = _applications(rng, tr, ev, w, cid, num, key, stride,
                                                                       spend_signal)
    timing = {
        "shape": tr["shape"],
        "scale": tr["mean_gap"] / tr["shape"],
        "mean_gap_days": tr["mean_gap"],
        "p_drop": tr["p_drop"],
        **{f"p_cat_{c}": tr["prefs"][:, j] for j, c in enumerate(CATEGORIES)},
        "p_repeat_cat": tr["p_repeat"],
        "spend_level": tr["spend"],
        "n_purchases_total": ev["n_total"].astype(np.int64),
        "alive_at_end": (ev["counts"] < ev["n_total"]).astype(np.int64),
    }
    out["truth_timing"] = pa.Table.from_arrays(
        [cid] + [pa.array(timing[f.name]) for f in list(SCHEMAS["truth_timing"])[1:]], schema=SCHEMAS["truth_timing"]
    )
    if items_rng is not None:  # a stream of its own: the tables above keep their bytes
        out["lines"], truth = synth_items.item_lines(items_rng, tr, ev, w, transactions, ITEM_CATALOGUE)
        out["truth_items"] = synth_items.truth_table(truth, cid)
    if returns_rng is not None:  # a stream of its own too
        _returns_and_payments(returns_rng, out, tr, ev, w, cid, cat, camp_info, app_info)
    return out


def _returns_and_payments(rng: np.random.Generator, out: dict, tr: dict, ev: dict, w: dict, cid: pa.Array,
                          cat: np.ndarray, camp_info: dict | None, app_info: dict | None) -> None:
    """Payment methods, returns, repayments and their truth (`synth_returns`), added to the chunk's tables."""
    R = synth_returns
    orders = out["transactions"]
    amount = orders.column("amount").to_numpy()
    rt = R.traits(rng, tr, RISK_NOISE_SD)
    method = R.payment_methods(rng, rt, tr, ev["cust"], cat, amount, CATEGORIES)
    out["transactions"] = orders.append_column(SCHEMAS["transactions"].field("payment_method"),
                                               _take_str(R.METHODS, method))
    out["returns"] = R.order_returns(rng, rt, ev, w, cat, amount, orders, CATEGORIES)
    out["repayments"], rep = R.repayments(rng, rt, ev, w, method, amount, orders)
    out["truth_returns"] = R.truth_table(rt, cid)
    if camp_info is not None:
        returned, truth = R.campaign_returns(rng, rt, tr, camp_info, CATEGORIES)
        out["campaign"] = out["campaign"].append_column(SCHEMAS["campaign"].field("returned_revenue"),
                                                        pa.array(returned))
        for c in _RETURN_TRUTH:
            out["truth_campaign"] = out["truth_campaign"].append_column(SCHEMAS["truth_campaign"].field(c),
                                                                        pa.array(truth[c]))
    if app_info is not None:
        n_due, n_late = R.late_counts(rep, app_info["app"], app_info["ta"], w["horizon"])
        pd_pay = app_info["pd_observable"].copy()
        seen = n_due > 0  # without instalments due before the application the posterior is the prior
        if seen.any():
            i = app_info
            pd_pay[seen] = _posterior_pd(i["logit_seen"][seen], {k: v[seen] for k, v in i["hist"].items()},
                                         i["band"][seen], i["channel"][seen], i["age"][seen], i["income"][seen],
                                         i["requested"][seen], noise=R.noise_posterior(n_due[seen], n_late[seen]))
        out["truth_credit"] = out["truth_credit"].append_column(
            SCHEMAS["truth_credit"].field("true_pd_observable_payments"), pa.array(pd_pay))


def iter_chunks(
    n_customers: int, seed: int = 0, start: str = "2023-01-01", end: str = "2024-12-31", chunk_size: int = 100_000,
    campaign_assignment: str = "randomised",
) -> Iterator[dict[str, pa.Table | None]]:
    """Yield one dict of Arrow tables (None where a chunk has no rows) per chunk of customers."""
    if n_customers < 1 or chunk_size < 1:
        raise ValueError("n_customers and chunk_size must be positive")
    table_schema("campaign", campaign_assignment)  # refuses an unknown assignment before any work
    w = _window(start, end)
    n_chunks = -(-n_customers // chunk_size)
    for i, ss in enumerate(np.random.SeedSequence(seed).spawn(n_chunks)):
        offset = i * chunk_size
        yield _chunk(np.random.default_rng(ss), offset, min(chunk_size, n_customers - offset), w, campaign_assignment,
                     synth_items.item_rng(seed, i), synth_returns.returns_rng(seed, i))


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def generate(
    n_customers: int, seed: int = 0, start: str = "2023-01-01", end: str = "2024-12-31", chunk_size: int = 100_000,
    campaign_assignment: str = "randomised",
) -> SynthData:
    """Generate the synthetic marketplace in memory (use `synth_to_dir` for very large runs).
    `campaign_assignment`: "randomised" (the default) or "targeted" (see the module docstring)."""
    parts: dict[str, list[pa.Table]] = {name: [] for name in FILES}
    for chunk in iter_chunks(n_customers, seed, start, end, chunk_size, campaign_assignment):
        for name, tab in chunk.items():
            if tab is not None and tab.num_rows:
                parts[name].append(tab)
    frames = {
        name: (pa.concat_tables(tabs) if tabs else table_schema(name, campaign_assignment).empty_table()).to_pandas()
        for name, tabs in parts.items()
    }
    meta = build_meta(n_customers, seed, start, end, chunk_size, campaign_assignment)
    meta["rows"] = {name: len(df) for name, df in frames.items()}
    return SynthData(**frames, meta=meta)


def _write_meta(meta: dict, out: Path) -> Path:
    path = out / META_FILE
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def write(data: SynthData, out_dir: str | Path) -> dict[str, Path]:
    """Write `data` as parquet files (plus truth/ and meta.json) under `out_dir`; returns name -> path."""
    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    assignment = data.meta.get("campaign_assignment", "randomised")
    for name, rel in FILES.items():
        df = getattr(data, name)
        tab = pa.Table.from_pandas(df, schema=table_schema(name, assignment),
                                   preserve_index=False).replace_schema_metadata(None)
        paths[name] = out / rel
        pq.write_table(tab, paths[name], compression="zstd")
    paths["meta"] = _write_meta(data.meta, out)
    return paths


def synth_to_dir(n_customers: int, seed: int, out_dir: str | Path, **kw) -> dict[str, Path]:
    """Generate chunk by chunk and stream to parquet (one row group per chunk); memory stays per chunk.

    `kw`: start, end, chunk_size, campaign_assignment as in `generate`. Returns name -> path (tables, truth
    tables, "meta").
    """
    start = kw.pop("start", "2023-01-01")
    end = kw.pop("end", "2024-12-31")
    chunk_size = kw.pop("chunk_size", 100_000)
    assignment = kw.pop("campaign_assignment", "randomised")
    if kw:
        raise TypeError(f"unexpected arguments: {sorted(kw)}")
    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    paths = {name: out / rel for name, rel in FILES.items()}
    meta = build_meta(n_customers, seed, start, end, chunk_size, assignment)  # refuses a bad assignment first
    writers = {name: pq.ParquetWriter(paths[name], table_schema(name, assignment), compression="zstd")
               for name in FILES}
    rows = dict.fromkeys(FILES, 0)
    try:
        for chunk in iter_chunks(n_customers, seed, start, end, chunk_size, assignment):
            for name, tab in chunk.items():
                if tab is not None and tab.num_rows:
                    writers[name].write_table(tab, row_group_size=tab.num_rows)
                    rows[name] += tab.num_rows
    finally:
        for wr in writers.values():
            wr.close()
    meta["rows"] = rows
    paths["meta"] = _write_meta(meta, out)
    return paths


def load_synth(out_dir: str | Path) -> SynthData:
    """Read back the tables, the ground truth and meta.json written by `write` or `synth_to_dir`."""
    out = Path(out_dir)
    frames = {name: pq.read_table(out / rel).to_pandas() for name, rel in FILES.items() if (out / rel).is_file()}
    meta = json.loads((out / META_FILE).read_text())
    return SynthData(**frames, meta=meta)


# ----------------------------------------------------------------------------------------------------------
# campaign oracle from observable data (added; the generated tables and truth are unchanged)
# ----------------------------------------------------------------------------------------------------------
N_DROP_NODES, N_ACT_BINS, N_CAMPAIGN_NODES = 8, 24, 8


def _campaign_history(data: SynthData) -> dict[str, np.ndarray]:
    """Per campaign customer (campaign row order), the sums of the purchases before the campaign date that the
    posterior needs: counts, spend signal, gaps, the open gap, and fresh/same-as-previous category counts."""
    t0 = pd.Timestamp(data.meta["start"])
    tc = float((pd.Timestamp(data.meta["campaign_date"]) - t0) / pd.Timedelta(days=1))
    ids = pd.Index(data.campaign["customer_id"].astype(str))
    tx = data.transactions
    tx = tx[tx["timestamp"] < pd.Timestamp(data.meta["campaign_date"])]
    cust = ids.get_indexer(tx["customer_id"].astype(str))
    tx, cust = tx[cust >= 0], cust[cust >= 0]
    t = ((tx["timestamp"] - t0) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    order = np.lexsort((t, cust))
    cust, t = cust[order], t[order]
    cat = pd.Categorical(tx["category"].to_numpy()[order], categories=CATEGORIES).codes.astype(np.int64)
    month = tx["timestamp"].dt.month.to_numpy()[order] - 1
    amount = tx["amount"].to_numpy(dtype=float)[order]
    signal = np.log(amount / (SPEND_BASE * CAT_PRICE[cat] * SEASON[month])) + 0.5 * AMOUNT_NOISE_SD**2
    n = len(ids)
    first = np.r_[True, cust[1:] != cust[:-1]]
    gap = np.where(first, 0.0, np.diff(t, prepend=t[:1]))
    ok = gap > 0
    last_t = np.full(n, np.nan)
    last_t[cust] = t  # sorted by time within customer: the last write is the last purchase
    same = ~first & (cat == np.r_[-1, cat[:-1]])
    cat_counts = np.bincount(cust * len(CATEGORIES) + cat, minlength=n * len(CATEGORIES))
    same_counts = np.bincount(cust[same] * len(CATEGORIES) + cat[same], minlength=n * len(CATEGORIES))
    return {
        "n": np.bincount(cust, minlength=n).astype(float),
        "spend_signal": np.bincount(cust, weights=signal, minlength=n),
        "m": np.bincount(cust, weights=ok.astype(float), minlength=n),
        "gap": np.bincount(cust, weights=np.where(ok, gap, 0.0), minlength=n),
        "log_gap": np.bincount(cust, weights=np.log(np.where(ok, gap, 1.0)), minlength=n),
        "elapsed": tc - last_t,
        "n_same": same_counts.reshape(n, -1).astype(float),
        "n_fresh": (cat_counts - same_counts).reshape(n, -1).astype(float),
    }


def _activity_posterior(h: dict, app: np.ndarray, age_c: np.ndarray, channel: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior of the campaign's activity term given the gaps, the open gap and the purchase count.

    Joint over log shape (grid), log mean gap (adaptive Gauss-Hermite, as in the credit oracle), drop-out
    probability (prior quantile nodes) and alive/dead: gamma gaps, no drop-out after the first n-1 purchases,
    then either dropped out or the next gap exceeds the open one. Returns per customer the probability mass
    of act = P(purchase within the campaign window | alive, open gap) in `N_ACT_BINS` bins (mass, mean act)
    plus the dead mass (act 0, dead), and the posterior mean of the standardised log shape."""
    grid, log_prior = _log_shape_prior(N_SHAPE_GRID // 2, app, age_c)
    g = _gap_setup(h, app, age_c)
    m, log_wq = g["m"], g["log_wq"]
    e, n = (h[c][:, None] for c in ("elapsed", "n"))
    p = np.clip(stats.beta.ppf((np.arange(N_DROP_NODES) + 0.5) / N_DROP_NODES, 2.0, 32.0)[None, :]
                * CHANNEL_DROP[channel][:, None], 0.004, 0.6)[:, None, :]  # (n, 1, R)
    log_w, acts, alive, zk_w = [], [], [], []
    for lk, lp in zip(grid, log_prior.T, strict=True):  # a loop over grid points, vectorised over customers
        k = np.exp(lk)
        u, log_f = _gap_loglik(g, lk)
        scale = np.exp(u) / k
        with np.errstate(divide="ignore", invalid="ignore"):  # survival: the regularised upper incomplete gamma
            s = special.gammaincc(k, e / scale)
            cond = np.nan_to_num(1.0 - special.gammaincc(k, (e + CAMPAIGN_WINDOW_DAYS) / scale) / s, nan=1.0)
        s = s[:, :, None]
        keep = (1.0 - p) * s  # alive: no drop-out after the last purchase and no purchase since
        lw = (lp[:, None, None] + log_f[:, :, None] + log_wq[:, :, None] + (n[:, :, None] - 1.0) * np.log1p(-p)
              + np.log(p + keep))
        log_w.append(lw.reshape(len(m), -1))
        alive.append((keep / (p + keep)).reshape(len(m), -1))
        acts.append(np.repeat(cond, N_DROP_NODES, axis=1))
        zk_w.append(np.full(lw.shape[1] * lw.shape[2], (lk - np.log(2.0)) / LOG_K_SD))
    w = special.softmax(np.concatenate(log_w, axis=1), axis=1)
    a, act, zk = np.concatenate(alive, axis=1), np.concatenate(acts, axis=1), np.concatenate(zk_w)
    bins = np.minimum((act * N_ACT_BINS).astype(np.int64), N_ACT_BINS - 1)
    rows = np.repeat(np.arange(len(m)), act.shape[1])
    flat = rows * N_ACT_BINS + bins.ravel()
    mass = np.bincount(flat, weights=(w * a).ravel(), minlength=len(m) * N_ACT_BINS).reshape(len(m), -1)
    act_sum = np.bincount(flat, weights=(w * a * act).ravel(), minlength=len(m) * N_ACT_BINS).reshape(len(m), -1)
    act_mean = np.where(mass > 0, act_sum / np.maximum(mass, 1e-300), 0.0)
    dead = 1.0 - mass.sum(axis=1, keepdims=True)
    return (np.concatenate([mass, np.clip(dead, 0.0, 1.0)], axis=1),
            np.concatenate([act_mean, np.zeros((len(m), 1))], axis=1), w @ zk)


def _deal_share_posterior(h: dict, zk: np.ndarray, iters: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the share of deal categories in the preferences, given the category sequence.

    The preferences are Dirichlet (popularity tilted by regularity, at the posterior mean of the shape); a
    purchase repeats the previous category with probability p_repeat ~ Beta(2, 5), else draws afresh. Which
    same-as-previous purchases were fresh draws is unknown: EM-style expected fresh counts, then the
    Dirichlet aggregation property gives a Beta for the deal share. An approximation (plug-in EM rather
    than the exact mixture posterior)."""
    alpha = PREF_CONCENTRATION * CAT_POP[None, :] * np.exp(np.where(CAT_REPLENISH, 0.5, -0.5)[None, :] * zk[:, None])
    fresh, same = h["n_fresh"], h["n_same"]
    p_rep = np.full(len(zk), 2.0 / 7.0)[:, None]
    counts = fresh + same * 0.5
    for _ in range(iters):
        pi = (alpha + counts) / (alpha + counts).sum(axis=1, keepdims=True)
        f = (1.0 - p_rep) * pi / (p_rep + (1.0 - p_rep) * pi)
        counts = fresh + same * f
        p_rep = ((2.0 + (same * (1.0 - f)).sum(axis=1)) / (7.0 + np.maximum(h["n"] - 1.0, 0.0)))[:, None]
    post = alpha + counts
    a, b = post[:, CAT_DEAL].sum(axis=1), post[:, ~CAT_DEAL].sum(axis=1)
    return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1.0))


def campaign_truth_observable(data: SynthData, chunk: int = 4000) -> pd.DataFrame:
    """E[truth | what the tables show] per campaign customer: the campaign truth columns (p_conv, exp_revenue,
    exp_cost per level, as in `truth_campaign`) averaged over the posterior of the latent traits given the
    customer's attributes and purchases before the campaign date. The best a model on these tables can do
    (up to the approximations named in the helpers); `truth_campaign` itself knows the traits.

    Spend level: conjugate normal posterior from the purchase amounts; activity: `_activity_posterior`;
    price sensitivity: its prior given region and spend level, the deal-category share from
    `_deal_share_posterior` and the idiosyncratic noise, integrated by Gauss-Hermite nodes."""
    camp_ids = data.campaign["customer_id"].astype(str)
    cust = data.customers.set_index(data.customers["customer_id"].astype(str)).reindex(camp_ids)
    region = pd.Categorical(cust["region"], categories=REGIONS).codes
    age = pd.Categorical(cust["age_band"], categories=AGE_BANDS).codes
    channel = pd.Categorical(cust["signup_channel"], categories=CHANNELS).codes
    hist = _campaign_history(data)
    x, wq = np.polynomial.hermite_e.hermegauss(N_CAMPAIGN_NODES)
    wq = wq / wq.sum()
    disc = np.array([DISCOUNTS[lv] for lv in LEVELS])
    out = {f"{q}_{lv}": np.zeros(len(camp_ids)) for lv in LEVELS for q in ("p_conv", "exp_revenue", "exp_cost")}
    for s in range(0, len(camp_ids), chunk):
        sl = slice(s, s + chunk)
        h = {k: v[sl] for k, v in hist.items()}
        age_c = (age[sl] - 2.3) / 1.5
        app = (channel[sl] == CHANNELS.index("app")).astype(float)
        mass, act, zk = _activity_posterior(h, app, age_c, channel[sl])
        ds_mean, ds_var = _deal_share_posterior(h, zk)
        prec = 1.0 / Z_SPEND_SD**2 + h["n"] * SPEND_SLOPE**2 / AMOUNT_NOISE_SD**2
        z_mean = (Z_SPEND_AGE * age_c / Z_SPEND_SD**2 + SPEND_SLOPE * h["spend_signal"] / AMOUNT_NOISE_SD**2) / prec
        # axes: customer, activity bin (last = dead), spend-level node, price-sensitivity node
        z = (z_mean[:, None] + x[None, :] / np.sqrt(prec)[:, None])[:, None, :, None]
        ps_sd = np.sqrt(0.6**2 + 1.5**2 * ds_var)
        ps = (REGION_PRICE_SENS[region[sl]] + 1.5 * (ds_mean - 0.29))[:, None, None, None] - 0.45 * z + (
            ps_sd[:, None, None, None] * x[None, None, None, :])
        dead = np.zeros(mass.shape[1])
        dead[-1] = 1.0
        a, dd = act[:, :, None, None], dead[None, :, None, None]
        w = mass[:, :, None, None] * wq[None, None, :, None] * wq[None, None, None, :]
        lin0 = C_BASE + C_ACT * a + 0.25 * z + REGION_CONV[region[sl]][:, None, None, None] - C_DEAD * dd
        resp = _softplus(C_R0 + C_R1 * ps) * (1.0 - 0.75 * dd)
        curv = np.clip(C_EXP * np.exp(0.6 * z), 0.25, 2.5)
        dog = C_DOG * _sigmoid(C_DS * (a - C_DA)) * _sigmoid(-C_DP * ps)
        spend = SPEND_BASE * np.exp(SPEND_SLOPE * z)
        for lv, d in zip(LEVELS, disc, strict=True):
            p = _sigmoid(lin0 + (resp * (d / 0.15) ** curv - dog if d > 0 else 0.0))
            ep = (w * p).sum(axis=(1, 2, 3))
            e_basket = 1.1 * (1.0 + BASKET_UPLIFT_PER_DISCOUNT * d) * (w * p * spend).sum(axis=(1, 2, 3))
            out[f"p_conv_{lv}"][sl] = ep
            out[f"exp_revenue_{lv}"][sl] = e_basket * (1.0 - d)
            out[f"exp_cost_{lv}"][sl] = e_basket * d + (CONTACT_COST if d > 0 else 0.0)
    return pd.DataFrame({"customer_id": camp_ids.to_numpy(), **out})
