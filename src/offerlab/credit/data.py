"""Feature preparation for credit applications.

`application_features` turns a canonical `applications` table (plus, when there is one, the
customers' purchase history) into one feature row per application: the application's own fields
and behaviour features computed from transactions strictly up to `applied_at` (point in time, so no
purchase after the application leaks into its features). `FeatureEncoder` learns, on training rows
only, how to feed those features to the network and the linear baselines:

- categorical fields: a vocabulary (index 0 = unseen / missing) for embeddings and one-hot columns;
Where the data have them, returns and payment behaviour join as features at applied_at too (strictly before it:
a return or a repayment recorded at or after the application does not count, nor does an instalment due then):
`ret_*` from `offerlab.data.returns.return_features_at` (return rates, net spend, days to return, the payment-method
mix; the mix needs `payment_method` on the transactions, the rates a returns table) and `rep_*` from
`repayment_features_at` (days past due, late instalments in 3/6/12 months, share repaid).

- numeric fields: skewed non-negative amounts go through log1p, then a robust standardisation
  (median / IQR, clipped) for the continuous input, plus quantile-bin one-hot columns and a
  piecewise-linear encoding over the same quantiles, so both the linear part and the MLP can bend
  (e.g. risk that is U-shaped in age) without a scale problem from long-tailed amounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NON_FEATURES = ("application_id", "customer_id", "applied_at", "default")
BEHAVIOUR_PREFIX = "beh_"
RETURN_PREFIX, REPAYMENT_PREFIX = "ret_", "rep_"
RETURN_RATES = ("returned_value", "net_spend", "return_rate_count", "return_rate_value", "n_returns",
                "days_to_return_mean")  # the return features kept (n_orders and spend are in beh_*)
WINDOWS = (30, 90, 180, 365)  # days of purchase history counted before the application
AMOUNT_SHAPE = ("log_amount_mean", "log_amount_sd")  # the shape statistics that need amounts


def needs_amount(column: str) -> bool:
    """Whether a feature column is built from purchase amounts (absent for a log without amounts)."""
    from offerlab.data.features import is_amount_feature

    if not column.startswith(BEHAVIOUR_PREFIX):
        return False
    name = column.removeprefix(BEHAVIOUR_PREFIX)
    return name in AMOUNT_SHAPE or is_amount_feature(name)


def application_features(
    applications: pd.DataFrame,
    transactions: pd.DataFrame | None = None,
    *,
    drop: tuple[str, ...] = (),
    categories: list[str] | None = None,
    returns: pd.DataFrame | None = None,
    repayments: pd.DataFrame | None = None,
    methods: list[str] | None = None,
) -> pd.DataFrame:
    """One feature row per application (same order/index): application fields + behaviour at applied_at.

    `categories` fixes the purchase-category vocabulary (the trained model's), so new batches get the
    same `beh_cat_share_*` columns as the training data; `methods` the payment methods of `ret_pay_share_*`.
    `returns` / `repayments`: the canonical tables, for the `ret_*` / `rep_*` features (see the module docstring).
    """
    keep = [c for c in applications.columns if c not in NON_FEATURES and c not in drop]
    X = applications[keep].copy()
    if transactions is not None:
        X = X.join(behaviour_at_application(applications, transactions, categories))
        X = X.join(history_shape_statistics(applications, transactions))
        if returns is not None or "payment_method" in transactions.columns:
            X = X.join(returns_at_application(applications, transactions, returns, methods))
    if repayments is not None:
        X = X.join(repayments_at_application(applications, repayments))
    return X


def _anchors(applications: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": applications["customer_id"].to_numpy(),
                         "as_of": applications["applied_at"].to_numpy()}, index=applications.index)


def returns_at_application(applications: pd.DataFrame, transactions: pd.DataFrame, returns: pd.DataFrame | None,
                           methods: list[str] | None = None) -> pd.DataFrame:
    """`ret_*`: return rates (with a returns table) and the payment-method mix (with `payment_method`) of each
    applicant's orders and returns strictly before applied_at."""
    from offerlab.data.returns import return_features_at

    f = return_features_at(transactions, returns, _anchors(applications), methods=methods, inclusive=False)
    cols = [c for c in f.columns if (returns is not None and c in RETURN_RATES)
            or c.startswith("pay_share_") or c == "instalment_share"]
    return f[cols].add_prefix(RETURN_PREFIX)


def repayments_at_application(applications: pd.DataFrame, repayments: pd.DataFrame) -> pd.DataFrame:
    """`rep_*`: each applicant's repayment record as it stood just before applied_at."""
    from offerlab.data.returns import repayment_features_at

    return repayment_features_at(repayments, _anchors(applications), inclusive=False).add_prefix(REPAYMENT_PREFIX)


def behaviour_at_application(
    applications: pd.DataFrame, transactions: pd.DataFrame, categories: list[str] | None = None
) -> pd.DataFrame:
    """Behaviour features from each applicant's purchases strictly before `applied_at`, prefixed `beh_`.

    Without an ``amount`` column the amount features are left out (`offerlab.data.features`)."""
    from offerlab.data.features import behaviour_features_at

    anchors = pd.DataFrame(
        {"customer_id": applications["customer_id"].to_numpy(), "as_of": applications["applied_at"].to_numpy()}
    )
    bf = behaviour_features_at(transactions, anchors, windows=WINDOWS, categories=categories, inclusive=False)
    bf = bf.drop(columns=[c for c in ("customer_id", "as_of") if c in bf.columns])
    bf = bf.select_dtypes(include=["number", "bool"]).astype("float64")
    bf.columns = [BEHAVIOUR_PREFIX + str(c) for c in bf.columns]
    bf.index = applications.index
    return bf


def history_shape_statistics(applications: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Distribution-shape statistics of each applicant's purchases strictly before `applied_at`.

    Why: the spend level and the regularity of purchases are the behaviour traits behind credit risk,
    and their efficient summaries are on the log scale: the mean and spread of log amounts (amounts are
    multiplicative), the mean log gap between purchases (exact times, not whole days) and
    log(mean gap) - mean(log gap), the sufficient statistic for the shape of gamma-distributed gaps
    (small = regular buyer). NaN where undefined (no purchase, fewer than two gaps for the shape).
    Without an ``amount`` column the two amount statistics are left out; the gap statistics stay.
    Vectorised: one sort of the events, cumulative sums, two searchsorted look-ups per application.
    """
    from offerlab.data.sequences import event_columns, factorize_ids, timestamps_ns

    ids, ts, amount, _ = event_columns(transactions)
    codes, uniques = factorize_ids(ids)
    app_code = pd.Index(uniques).get_indexer(applications["customer_id"].astype(str).to_numpy())
    when = timestamps_ns(applications["applied_at"], "applications", "applied_at")
    return pd.DataFrame(shape_arrays(codes, ts, amount, app_code, when), index=applications.index)


def shape_arrays(codes: np.ndarray, ts: np.ndarray, amount: np.ndarray | None, app_code: np.ndarray,
                 when: np.ndarray) -> dict[str, np.ndarray]:
    """`history_shape_statistics` on arrays: event customer codes, int64-ns times and amounts (None: no
    amount statistics); per application its customer's code (-1 = no events) and instant (int64 ns).
    Keys carry the `beh_` prefix."""
    from offerlab.data.sequences import EventIndex

    index = EventIndex(codes, ts)
    o = index.order
    c, t = codes[o], ts[o]
    logamt = np.log(np.maximum(amount[o], 1e-2)) if amount is not None else np.zeros(len(c))
    same = np.zeros(len(c), dtype=bool)
    same[1:] = c[1:] == c[:-1]
    gap = np.where(same, np.diff(t, prepend=t[:1]) / 8.64e13, 0.0)  # days since the customer's previous purchase
    pos_gap = same & (gap > 0)
    loggap = np.where(pos_gap, np.log(np.where(pos_gap, gap, 1.0)), 0.0)

    def csum(x: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])

    cums = [csum(x) for x in (np.ones(len(c)), logamt, logamt**2, pos_gap, gap * pos_gap, loggap)]
    known = app_code >= 0
    code = np.where(known, app_code, 0)
    end = np.where(known, index.position(code, when, inclusive=False), 0)
    first = np.where(known, index.position(code, np.full(len(code), np.iinfo(np.int64).min // 2)), 0)
    # the first visible event's gap points before the history: exclude it from the gap sums
    first_gap = np.minimum(first + 1, np.maximum(end, first))
    n, s1, s2 = (cs[end] - cs[first] for cs in cums[:3])
    m, sg, slg = (cs[end] - cs[first_gap] for cs in cums[3:])
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log = np.where(n > 0, s1 / n, np.nan)
        sd_log = np.where(n > 1, np.sqrt(np.maximum(s2 / n - mean_log**2, 0.0)), np.nan)
        mean_loggap = np.where(m > 0, slg / m, np.nan)
        shape_stat = np.where(m > 1, np.log(sg / m) - mean_loggap, np.nan)
    out = {"log_amount_mean": mean_log, "log_amount_sd": sd_log} if amount is not None else {}
    out.update({"log_gap_mean": mean_loggap, "gap_shape_stat": shape_stat, "n_gaps": m})
    return {BEHAVIOUR_PREFIX + k: v for k, v in out.items()}


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) or isinstance(
        s.dtype, pd.CategoricalDtype
    )


@dataclass
class Encoded:
    """Arrays the models consume: category indices, numeric bin indices, continuous numerics, PLE.

    The linear ("wide") design is one-hot categories and one-hot numeric bins; it is kept as indices
    (`cat`, `bins`) and expanded only on request (`wide`), so a quarter of a million rows stay small.
    """

    cat: np.ndarray  # (n, n_cat) int64, 0 = unseen
    num: np.ndarray  # (n, n_num) float32
    bins: np.ndarray  # (n, n_num) int64: quantile bin of each numeric (0 .. len(edges))
    ple: np.ndarray  # (n, n_ple) float32: piecewise-linear encoding of the numerics
    cat_sizes: tuple[int, ...] = ()  # vocabulary size per categorical field (one-hot width)
    bin_sizes: tuple[int, ...] = ()  # bins per numeric field

    def __len__(self) -> int:
        return len(self.cat)

    def subset(self, idx: np.ndarray) -> Encoded:
        return Encoded(self.cat[idx], self.num[idx], self.bins[idx], self.ple[idx], self.cat_sizes, self.bin_sizes)

    @property
    def wide(self) -> np.ndarray:
        """(n, sum of widths) float32: one-hot categories (unseen = all zero), then one-hot numeric bins."""
        n, sizes = len(self), (*self.cat_sizes, *self.bin_sizes)
        out = np.zeros((n, sum(sizes)), dtype=np.float32)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        codes = np.concatenate([self.cat - 1, self.bins], axis=1)  # -1: an unseen level
        rows = np.repeat(np.arange(n), codes.shape[1])
        cols = (codes + offsets).ravel()
        seen = codes.ravel() >= 0
        out[rows[seen], cols[seen]] = 1.0
        return out


@dataclass
class FeatureEncoder:
    """Learned on training rows: vocabularies, log flags, robust scales and bin edges per feature."""

    n_bins: int = 5
    skew_threshold: float = 1.0
    clip: float = 5.0
    ple: bool = True  # also the piecewise-linear encoding (off: `Encoded.ple` has no columns)
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    log_cols: list[str] = field(default_factory=list)
    center: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    ple_edges: dict[str, np.ndarray] = field(default_factory=dict)
    reference: dict[str, object] = field(default_factory=dict)

    def fit(self, X: pd.DataFrame) -> FeatureEncoder:
        if len(X) == 0:
            raise ValueError("cannot fit the feature encoder on an empty table")
        self.categorical = [c for c in X.columns if _is_categorical(X[c])]
        self.numeric = [c for c in X.columns if c not in self.categorical]
        for c in self.categorical:
            s = X[c].astype("string").fillna("<missing>")
            counts = s.value_counts()
            self.vocab[c] = sorted(counts.index.tolist())
            self.reference[c] = counts.index[0]  # the most common level: the "typical applicant"
        for c in self.numeric:
            x = X[c].to_numpy(dtype="float64")
            finite = x[np.isfinite(x)]
            if len(finite) == 0:
                finite = np.zeros(1)
            skew = pd.Series(finite).skew() if len(finite) > 2 else 0.0
            if finite.min() >= 0 and np.nan_to_num(skew) > self.skew_threshold:
                self.log_cols.append(c)
            t = self._transform_num(c, finite)
            grid = np.linspace(0, 1, self.n_bins + 1)
            q = np.quantile(t, np.concatenate([[0.25, 0.5, 0.75], grid]))  # one partition pass per column
            q25, med, q75 = (float(v) for v in q[:3])
            sd = float(np.std(t))
            self.center[c] = med
            self.scale[c] = float(q75 - q25) / 1.349 if q75 > q25 else (sd if sd > 0 else 1.0)
            self.fill[c] = med
            self.reference[c] = float(np.median(finite)) if c in self.log_cols else med
            self.edges[c] = np.unique(q[4:-1])
            self.ple_edges[c] = np.unique(q[3:])
        return self

    def _transform_num(self, c: str, x: np.ndarray) -> np.ndarray:
        return np.log1p(np.maximum(x, 0.0)) if c in self.log_cols else x

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) for c in self.categorical]

    @property
    def wide_names(self) -> list[str]:
        names = [f"{c}={v}" for c in self.categorical for v in self.vocab[c]]
        for c in self.numeric:
            names += [f"{c}:bin{j}" for j in range(len(self.edges[c]) + 1)]
        return names

    def feature_index(self) -> dict[str, np.ndarray]:
        """Which feature (categoricals first, then numerics) each encoded column belongs to."""
        n_cat = len(self.categorical)
        wide = [np.full(len(self.vocab[c]), j) for j, c in enumerate(self.categorical)]
        wide += [np.full(len(self.edges[c]) + 1, n_cat + j) for j, c in enumerate(self.numeric)]
        ple = [np.full(max(len(self.ple_edges[c]) - 1, 0) if self.ple else 0, n_cat + j)
               for j, c in enumerate(self.numeric)]
        cat_idx = np.arange(n_cat)
        num_idx = n_cat + np.arange(len(self.numeric))
        empty = np.zeros(0, dtype=np.int64)
        return {"cat": cat_idx, "num": num_idx, "wide": np.concatenate(wide) if wide else empty,
                "ple": np.concatenate(ple) if ple else empty}

    def check_columns(self, X: pd.DataFrame) -> None:
        from offerlab.data.schema import DataValidationError

        missing = [c for c in self.categorical + self.numeric if c not in X.columns]
        if missing and all(needs_amount(c) for c in missing):
            raise DataValidationError(
                "transactions", "amount", f"the credit model was trained with purchase-amount features {missing[:10]}; "
                "the transactions to score have no 'amount' column")
        if missing:
            raise ValueError(f"application features are missing column(s) the model was trained on: {missing[:10]}")

    def transform(self, X: pd.DataFrame) -> Encoded:
        self.check_columns(X)
        n = len(X)
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            s = X[c].astype("string").fillna("<missing>")
            cat[:, j] = pd.Index(self.vocab[c]).get_indexer(s) + 1  # 0 for unseen
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        bins = np.zeros((n, len(self.numeric)), dtype=np.int64)
        ple_parts = []
        for j, c in enumerate(self.numeric):
            x = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype="float64")
            t = self._transform_num(c, x)
            t = np.where(np.isfinite(t), t, self.fill[c])
            num[:, j] = np.clip((t - self.center[c]) / self.scale[c], -self.clip, self.clip)
            bins[:, j] = np.searchsorted(self.edges[c], t, side="right")
            q = self.ple_edges[c]
            if self.ple and len(q) > 1:  # component k rises from 0 to 1 across the k-th quantile interval
                ple_parts.append(np.clip((t[:, None] - q[:-1]) / np.diff(q), 0.0, 1.0).astype(np.float32))
        ple = np.concatenate(ple_parts, axis=1) if ple_parts else np.zeros((n, 0), np.float32)
        return Encoded(cat, num, bins, ple, self.cat_sizes, self.bin_sizes)

    @property
    def cat_sizes(self) -> tuple[int, ...]:
        return tuple(len(self.vocab[c]) for c in self.categorical)

    @property
    def bin_sizes(self) -> tuple[int, ...]:
        return tuple(len(self.edges[c]) + 1 for c in self.numeric)

    def reference_row(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The typical applicant (mode / median per feature): the baseline reasons are measured against."""
        cols = columns or (self.categorical + self.numeric)
        return pd.DataFrame({c: [self.reference[c]] for c in cols})
