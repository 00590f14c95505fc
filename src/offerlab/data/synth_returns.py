"""Returns and payment behaviour in the synthetic marketplace: what comes back, how orders are paid, who pays on time.

The orders, the campaign and the applications come from `offerlab.data.synth` unchanged; this module adds, from a
random stream of its own (per chunk), so the other tables keep their bytes:

Return propensity. Each customer has a return trait zr = 0.45 (price_sens / 0.8) + 0.89 N(0, 1) (deal seekers
return more) and a base return probability per order, return_propensity = sigmoid(-2.3 + 0.9 zr). An order of
category c is returned with probability sigmoid(logit(return_propensity) + CAT_RETURN[c]) (fashion +1.3,
electronics +0.6, beauty and home +0.3, books -0.3, baby -0.5, pet -0.8, household -1.0, personal care -1.2,
grocery -1.5), the whole order with probability 0.6, else a share U(0.2, 0.8) of it (to the cent), 1 + Gamma(2, 4)
days after the purchase (a return not made by the end of the window is not in the table), with a reason.

Discount depth. The campaign's purchase (a basket of the customer's usual categories: category term
sum_c p_cat_c CAT_RETURN[c]) bought at discount d is returned with probability r_d = sigmoid(logit(return_propensity)
+ category term + slope (d / 0.15)), slope = 0.9 exp(0.5 zr): deep discounts attract returners, and the more so the
more prone the customer. `campaign.returned_revenue` = the share sent back (as above) of the revenue, 0 without a
return; truth: p_return_<level> = P(convert) r_d and exp_returned_<level> = exp_revenue_<level> r_d 0.8 (0.8 = the
mean share returned).

Payment. Each order is paid by card, instalments, bnpl (pay later) or invoice: softmax of card 0, instalments
-1.9 + u + 0.8 log(amount / 60), bnpl -2.0 + u + 0.6 [age under 35] + 0.5 [fashion or beauty], invoice
-2.2 + 0.4 [age 55+], with a per-customer taste u ~ N(0, 1) for paying later (independent of the credit risk).

Repayments. An instalments order is due in 3 monthly instalments (6 from an amount of 150), a bnpl order in one
payment 30 days after. Each instalment is late with probability p_late = sigmoid(-2.0 + 1.3 x), x = the
idiosyncratic part of the customer's credit risk (the noise of `synth`'s risk trait, standardised): the part of
the true default probability that no purchase table shows, so repayment discipline (repay_discipline = 1 - p_late)
is the strongest signal at checkout. On time: paid up to 10 days before the due date; late: 1 + Gamma(1.5, 8) days
after it, or (12%) never; a payment not made by the end of the window has no paid_at and amount_paid 0.
truth_credit gains true_pd_observable_payments = E[true PD | what the tables show, repayments included]: the
`true_pd_observable` posterior with the risk noise's posterior given how many of the applicant's instalments due
(a day or more) before applied_at were late (adaptive Gauss-Hermite around its mode).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import special

RETURN_STREAM = 20_261_214  # spawn-key prefix of the returns stream: distinct from the chunks' and the items'
RET_BASE, RET_SD, RET_PRICE_SENS = -2.3, 0.9, 0.45
CAT_RETURN = {"grocery": -1.5, "household": -1.0, "personal_care": -1.2, "baby": -0.5, "pet": -0.8, "beauty": 0.3,
              "fashion": 1.3, "electronics": 0.6, "home": 0.3, "books": -0.3}
RET_FULL_P, RET_SHARE_LO, RET_SHARE_HI = 0.6, 0.2, 0.8
RET_MEAN_SHARE = RET_FULL_P + (1.0 - RET_FULL_P) * (RET_SHARE_LO + RET_SHARE_HI) / 2.0
RET_DAYS_SHAPE, RET_DAYS_SCALE = 2.0, 4.0
RET_DISCOUNT_SLOPE, RET_DISCOUNT_PRONE = 0.9, 0.5
REASONS = ("size_fit", "damaged", "not_as_described", "changed_mind")
REASON_P_FASHION = np.array([0.55, 0.10, 0.15, 0.20])
REASON_P_OTHER = np.array([0.10, 0.20, 0.30, 0.40])

METHODS = ("card", "instalments", "bnpl", "invoice")
PAY_INSTAL, PAY_BNPL, PAY_INVOICE = -1.9, -2.0, -2.2
INSTALMENT_DAYS, BIG_ORDER, BNPL_DAYS = 30.0, 150.0, 30.0
LATE_BASE, LATE_SLOPE = -2.0, 1.3
ON_TIME_EARLY_DAYS, LATE_SHAPE, LATE_SCALE, NEVER_P = 10.0, 1.5, 8.0, 0.12
N_LATE_NODES = 10

_TS = pa.timestamp("ns")
RETURNS_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("order_id", pa.string()), ("returned_at", _TS), ("amount", pa.float64()),
    ("reason", pa.string()),
])
REPAYMENTS_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("credit_id", pa.string()), ("issued_at", _TS), ("due_date", _TS),
    ("paid_at", _TS), ("amount_due", pa.float64()), ("amount_paid", pa.float64()),
])
TRUTH_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("return_propensity", pa.float64()), ("discount_return_slope", pa.float64()),
    ("repay_discipline", pa.float64()),
])


def returns_rng(seed: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(RETURN_STREAM, chunk)))


def traits(rng: np.random.Generator, tr: dict, noise_sd: float) -> dict[str, np.ndarray]:
    """Per customer: the return trait, base return log-odds, discount slope, lateness and the taste for paying
    later. `noise_sd`: the sd of the risk noise (`synth.RISK_NOISE_SD`)."""
    n = len(tr["shape"])
    zr = RET_PRICE_SENS * tr["price_sens"] / 0.8 + np.sqrt(1.0 - RET_PRICE_SENS**2) * rng.normal(0.0, 1.0, n)
    x = (tr["risk"] - tr["risk_mean"]) / noise_sd
    return {"zr": zr, "logit_ret": RET_BASE + RET_SD * zr,
            "slope": RET_DISCOUNT_SLOPE * np.exp(RET_DISCOUNT_PRONE * zr),
            "p_late": special.expit(LATE_BASE + LATE_SLOPE * x), "taste": rng.normal(0.0, 1.0, n)}


def payment_methods(rng: np.random.Generator, rt: dict, tr: dict, cust: np.ndarray, cat: np.ndarray,
                    amount: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    """The payment method (index into METHODS) of every order."""
    taste, age = rt["taste"][cust], tr["age"][cust]
    style = np.isin(cat, [categories.index("fashion"), categories.index("beauty")])
    logits = np.stack([
        np.zeros(len(cust)),
        PAY_INSTAL + taste + 0.8 * np.log(np.maximum(amount, 0.01) / 60.0),
        PAY_BNPL + taste + 0.6 * (age <= 1) + 0.5 * style,
        PAY_INVOICE + 0.4 * (age >= 4),
    ], axis=1)
    from offerlab.data.synth import _categorical

    return _categorical(rng, special.softmax(logits, axis=1))


def _ns(t_days: np.ndarray, start_ns: int) -> np.ndarray:
    return start_ns + np.round(t_days * 86_400e9).astype(np.int64)


def order_returns(rng: np.random.Generator, rt: dict, ev: dict, w: dict, cat: np.ndarray, amount: np.ndarray,
                  orders: pa.Table, categories: tuple[str, ...]) -> pa.Table:
    """The returns of the chunk's orders (those made before the end of the window)."""
    n = len(cat)
    cust = ev["cust"]
    cat_ret = np.array([CAT_RETURN[c] for c in categories])
    p = special.expit(rt["logit_ret"][cust] + cat_ret[cat])
    u, full, share = rng.random(n), rng.random(n) < RET_FULL_P, rng.uniform(RET_SHARE_LO, RET_SHARE_HI, n)
    days = 1.0 + rng.gamma(RET_DAYS_SHAPE, RET_DAYS_SCALE, n)
    fashion = cat == categories.index("fashion")
    reason = np.where(fashion, (rng.random(n)[:, None] >= np.cumsum(REASON_P_FASHION)).sum(axis=1),
                      (rng.random(n)[:, None] >= np.cumsum(REASON_P_OTHER)).sum(axis=1))
    t_ret = ev["t"] + days
    keep = np.flatnonzero((u < p) & (t_ret < w["horizon"]))
    refunded = np.where(full[keep], amount[keep], np.maximum(np.round(amount[keep] * share[keep], 2), 0.01))
    refunded = np.minimum(refunded, amount[keep])
    idx = pa.array(keep.astype(np.int64))
    return pa.Table.from_arrays([
        orders.column("customer_id").take(idx), orders.column("order_id").take(idx),
        pa.array(_ns(t_ret[keep], w["start_ns"]), _TS), pa.array(refunded),
        pa.array(REASONS, pa.string()).take(pa.array(np.minimum(reason[keep], len(REASONS) - 1).astype(np.int64))),
    ], schema=RETURNS_SCHEMA)


def repayments(rng: np.random.Generator, rt: dict, ev: dict, w: dict, method: np.ndarray, amount: np.ndarray,
               orders: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The instalments of the chunk's instalment and bnpl orders, and per instalment (customer, due day, late) for
    the oracle."""
    credit = np.flatnonzero((method == METHODS.index("instalments")) | (method == METHODS.index("bnpl")))
    k = np.where(method[credit] == METHODS.index("bnpl"), 1, np.where(amount[credit] >= BIG_ORDER, 6, 3))
    o = np.repeat(credit, k)
    starts = np.concatenate([[0], np.cumsum(k)[:-1]])
    j = np.arange(len(o)) - np.repeat(starts, k) + 1
    kk = np.repeat(k, k)
    issued = ev["t"][o]
    due = issued + j * np.where(kk == 1, BNPL_DAYS, INSTALMENT_DAYS)
    per = np.round(amount[o] / kk, 2)
    amount_due = np.where(j == kk, np.round(amount[o] - (kk - 1) * per, 2), per)
    n = len(o)
    cust = ev["cust"][o]
    late = rng.random(n) < rt["p_late"][cust]
    early = rng.random(n) * np.minimum(ON_TIME_EARLY_DAYS, due - issued)
    days_late = 1.0 + rng.gamma(LATE_SHAPE, LATE_SCALE, n)
    never = rng.random(n) < NEVER_P
    paid = np.where(late, np.where(never, np.inf, due + days_late), due - early)
    seen = paid < w["horizon"]
    paid_ns = np.where(seen, _ns(np.where(seen, paid, 0.0), w["start_ns"]), 0)
    idx = pa.array(o.astype(np.int64))
    table = pa.Table.from_arrays([
        orders.column("customer_id").take(idx), orders.column("order_id").take(idx),
        pa.array(_ns(issued, w["start_ns"]), _TS), pa.array(_ns(due, w["start_ns"]), _TS),
        pa.array(paid_ns, _TS, mask=~seen), pa.array(amount_due), pa.array(np.where(seen, amount_due, 0.0)),
    ], schema=REPAYMENTS_SCHEMA)
    return table, {"cust": cust, "due": due, "late": late}


def late_counts(rep: dict[str, np.ndarray], app: np.ndarray, ta: np.ndarray, horizon: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per applicant: instalments due a day or more before applied_at, and how many of them were late (what the
    repayments table shows at the application: a late one is unpaid at its due date)."""
    stride = horizon + 400.0  # due dates run up to 180 days past the window
    key = rep["cust"] * stride + rep["due"]
    order = np.argsort(key, kind="stable")
    key, late = key[order], rep["late"][order]
    cum = np.concatenate([[0], np.cumsum(late)])
    lo = np.searchsorted(key, app * stride - 1.0, side="left")
    hi = np.searchsorted(key, app * stride + ta - 1.0, side="right")
    return (hi - lo).astype(float), (cum[hi] - cum[lo]).astype(float)


def noise_posterior(n_due: np.ndarray, n_late: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (rows: applicants, N_LATE_NODES columns) of the posterior of the standardised risk noise x
    ~ N(0, 1) given n_late of n_due instalments late with P(late) = sigmoid(LATE_BASE + LATE_SLOPE x): adaptive
    Gauss-Hermite around the posterior mode (Newton on the concave log posterior)."""
    a, b = LATE_BASE, LATE_SLOPE
    nd, nl = n_due[:, None], n_late[:, None]
    x = np.zeros((len(n_due), 1))
    for _ in range(iters):
        s = special.expit(a + b * x)
        x = x + (-x + b * (nl - nd * s)) / (1.0 + b * b * nd * s * (1.0 - s))
    s = special.expit(a + b * x)
    sd = 1.0 / np.sqrt(1.0 + b * b * nd * s * (1.0 - s))
    t, wq = np.polynomial.hermite_e.hermegauss(N_LATE_NODES)
    nodes = x + sd * t[None, :]
    z = a + b * nodes
    log_w = (np.log(wq / wq.sum())[None, :] + 0.5 * t[None, :] ** 2 - 0.5 * nodes**2
             + nl * -np.logaddexp(0.0, -z) + (nd - nl) * -np.logaddexp(0.0, z))
    return nodes, special.softmax(log_w, axis=1)


def campaign_returns(rng: np.random.Generator, rt: dict, tr: dict, info: dict, categories: tuple[str, ...]
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`returned_revenue` of the campaign rows and the truth columns p_return_<level>, exp_returned_<level>."""
    elig = info["elig"]
    cat_ret = np.array([CAT_RETURN[c] for c in categories])
    base = rt["logit_ret"][elig] + tr["prefs"][elig] @ cat_ret
    slope = rt["slope"][elig]
    n = len(elig)
    u, full, share = rng.random(n), rng.random(n) < RET_FULL_P, rng.uniform(RET_SHARE_LO, RET_SHARE_HI, n)
    r = {lv: special.expit(base + slope * d / 0.15) for lv, d in info["discounts"].items()}
    truth = {}
    for lv in info["discounts"]:
        truth[f"p_return_{lv}"] = info["p_conv"][lv] * r[lv]
        truth[f"exp_returned_{lv}"] = info["exp_revenue"][lv] * r[lv] * RET_MEAN_SHARE
    levels = list(info["discounts"])
    r_arm = np.stack([r[lv] for lv in levels], axis=1)[np.arange(n), info["arm"]]
    revenue = info["revenue"]
    back = (info["conv"] == 1) & (u < r_arm)
    returned = np.where(back, np.where(full, revenue, np.minimum(np.round(revenue * share, 2), revenue)), 0.0)
    return returned, truth


def truth_table(rt: dict, cid: pa.Array) -> pa.Table:
    return pa.Table.from_arrays([cid, pa.array(special.expit(rt["logit_ret"])), pa.array(rt["slope"]),
                                 pa.array(1.0 - rt["p_late"])], schema=TRUTH_SCHEMA)
