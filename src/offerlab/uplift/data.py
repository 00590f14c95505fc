"""Campaign data for the uplift family: features, treatment codes, outcomes and propensities.

Features come from what the campaign log carries: Hillstrom's own pre-campaign columns, a user's kept
columns, or, for the synthetic (transaction-backed) campaign, behaviour features computed from the
transactions strictly before the campaign date plus the customers' static attributes (no leakage of
the campaign window into the features). A `FeatureEncoder` learned on the training rows turns a raw
feature frame into a float matrix (standardised numbers, one-hot categories) and travels with the
model, so serving applies the same preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError

HILLSTROM_NUMERIC = ["recency", "history", "mens", "womens", "newbie", "history_segment_rank"]
HILLSTROM_CATEGORICAL = ["zip_code", "channel"]
HILLSTROM_OUTCOMES = ("visit", "conversion", "spend")
MAX_CATEGORIES = 50


@dataclass
class FeatureEncoder:
    """Standardise numeric columns (log1p first where skewed and non-negative), one-hot categoricals.

    Learned state is plain lists and floats, so it serialises to JSON for the pyfunc model.
    """

    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    log_columns: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> FeatureEncoder:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
                   and not pd.api.types.is_bool_dtype(frame[c])]
        numeric += [c for c in frame.columns if pd.api.types.is_bool_dtype(frame[c])]
        categorical = {}
        for c in frame.columns:
            if c in numeric:
                continue
            levels = frame[c].astype(str).value_counts()
            categorical[c] = sorted(levels.index[:MAX_CATEGORIES].tolist())
        values = frame[numeric].astype(float)
        skew = values.skew().fillna(0.0)
        log_columns = [c for c in numeric if values[c].min() >= 0 and skew[c] > 2.0]
        enc = cls(numeric=numeric, categorical=categorical, log_columns=log_columns)
        x = enc._numeric_matrix(frame, standardise=False)
        enc.mean = np.nanmean(x, axis=0).tolist() if x.shape[1] else []
        sd = np.nanstd(x, axis=0) if x.shape[1] else np.zeros(0)
        enc.std = np.where(sd > 1e-9, sd, 1.0).tolist()
        return enc

    @property
    def feature_names(self) -> list[str]:
        return self.numeric + [f"{c}={v}" for c, vs in self.categorical.items() for v in vs]

    def _numeric_matrix(self, frame: pd.DataFrame, standardise: bool = True) -> np.ndarray:
        cols = []
        for c in self.numeric:
            v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
            if c in self.log_columns:
                v = np.log1p(np.clip(v, 0, None))
            cols.append(v)
        x = np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))
        if standardise and x.shape[1]:
            x = (x - np.asarray(self.mean)) / np.asarray(self.std)
            x = np.nan_to_num(x, nan=0.0)  # a missing number sits at the training mean
        return x

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in list(self.numeric) + list(self.categorical) if c not in frame.columns]
        if missing:
            raise DataValidationError("features", missing[0], "feature column missing from the input")
        parts = [self._numeric_matrix(frame)]
        for c, levels in self.categorical.items():
            codes = pd.Categorical(frame[c].astype(str), categories=levels).codes
            onehot = np.zeros((len(frame), len(levels)))
            known = codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def to_dict(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical, "log_columns": self.log_columns,
                "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureEncoder:
        return cls(**d)

    @property
    def raw_columns(self) -> list[str]:
        return list(self.numeric) + list(self.categorical)


@dataclass
class CampaignData:
    """One campaign, model-ready: raw features, treatment codes (0 = control), outcomes, propensities."""

    customer_id: np.ndarray
    features: pd.DataFrame  # raw feature columns, one row per customer (encoded by a FeatureEncoder)
    treatment: np.ndarray  # int codes into `levels`
    conversion: np.ndarray  # 0/1 outcome the uplift metrics use when outcome == "conversion"
    revenue: np.ndarray  # revenue net of the discount (the value the policy counts)
    levels: list[str]  # control first
    propensity: np.ndarray | None = None  # (n, L) known assignment probabilities, or None
    cost: np.ndarray | None = None  # observed campaign cost (discount paid + contact), if logged
    discounts: dict[str, float] = field(default_factory=dict)
    # how the levels were assigned: "randomised" (an RCT: known or constant propensities), "targeted" (chosen
    # by the CRM from customer traits: propensities must be estimated), or "unknown" (not yet checked)
    assignment: str = "unknown"
    # the logs stacked into this data (`campaign.logs.combine_logs`): per log its rows, probabilities and support
    sources: list[dict] | None = None
    # what the customer sent back of the campaign-window purchase (0 <= returned <= revenue), if logged: an outcome
    # the return model learns from (`uplift.returns`), never a feature
    returned_revenue: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.treatment)

    @property
    def control(self) -> str:
        return self.levels[0]

    @property
    def treatment_names(self) -> np.ndarray:
        return np.asarray(self.levels, dtype=object)[self.treatment]

    def subset(self, idx: np.ndarray) -> CampaignData:
        return CampaignData(
            customer_id=self.customer_id[idx], features=self.features.iloc[idx].reset_index(drop=True),
            treatment=self.treatment[idx], conversion=self.conversion[idx], revenue=self.revenue[idx],
            levels=self.levels, propensity=None if self.propensity is None else self.propensity[idx],
            cost=None if self.cost is None else self.cost[idx], discounts=self.discounts,
            assignment=self.assignment, sources=self.sources,
            returned_revenue=None if self.returned_revenue is None else self.returned_revenue[idx],
        )

    def outcome(self, kind: str) -> np.ndarray:
        if kind == "conversion":
            return self.conversion
        if kind == "revenue":
            return self.revenue
        raise ValueError(f"unknown outcome {kind!r}; expected 'conversion' or 'revenue'")


def _treatment_codes(treatment: pd.Series, levels: list[str]) -> np.ndarray:
    codes = pd.Categorical(treatment.astype(str), categories=levels).codes
    if (codes < 0).any():
        bad = treatment.astype(str)[codes < 0].iloc[0]
        raise DataValidationError("campaign", "treatment", f"level not in {levels}", repr(bad))
    return codes.astype(np.int64)


def _returned(campaign: pd.DataFrame) -> np.ndarray | None:
    """The campaign's `returned_revenue` outcome, checked against its revenue; None when not logged."""
    if "returned_revenue" not in campaign:
        return None
    r = pd.to_numeric(campaign["returned_revenue"], errors="coerce").to_numpy(dtype=float)
    rev = campaign["revenue"].to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(r) | (r < 0) | (r > rev + 1e-9 * np.maximum(1.0, np.abs(rev))))
    if len(bad):
        i = int(bad[0])
        raise DataValidationError("campaign", "returned_revenue", "must be a number in [0, revenue] (what the "
                                  f"customer sent back of the purchase); {len(bad)} rows are not",
                                  repr({"customer_id": campaign["customer_id"].iloc[i],
                                        "revenue": float(rev[i]), "returned_revenue": r[i]}))
    return r


def _known_propensity(campaign: pd.DataFrame, codes: np.ndarray, n_levels: int) -> np.ndarray | None:
    """Assignment probabilities per level: columns `propensity_<level>` if present; else, for a campaign
    with one `propensity` column (the probability of the level received) that is constant within each
    level, the randomisation design read off the log; else None (the model estimates them)."""
    if "propensity" not in campaign:
        return None
    p = campaign["propensity"].to_numpy(dtype=float)
    if not np.isfinite(p).all():  # a CRM export with empty cells carries no design
        return None
    by_level = pd.Series(p).groupby(codes).agg(["min", "max"])
    if len(by_level) < n_levels or (by_level["max"] - by_level["min"]).max() > 1e-9:
        return None
    design = by_level["min"].reindex(range(n_levels)).to_numpy()
    if abs(design.sum() - 1.0) > 1e-6:
        return None
    return np.tile(design, (len(p), 1))


def hillstrom_features(campaign: pd.DataFrame) -> pd.DataFrame:
    """Hillstrom's own pre-campaign columns; the ordered history segment as its rank 1..7."""
    feats = campaign[["recency", "history", "mens", "womens", "newbie", "zip_code", "channel"]].copy()
    feats["history_segment_rank"] = campaign["history_segment"].astype(str).str.slice(0, 1).astype(int)
    return feats


def from_hillstrom(campaign: pd.DataFrame, outcome: str = "visit") -> CampaignData:
    """Hillstrom as a campaign: e-mail variants are the levels (no discount), control `No E-Mail`.

    outcome `visit`: conversion = visit and revenue = visit (one unit of value per visit);
    `conversion`: conversion = purchase, revenue = spend; `spend`: the same outcomes, metrics on spend.
    """
    if outcome not in HILLSTROM_OUTCOMES:
        raise ValueError(f"unknown Hillstrom outcome {outcome!r}; expected one of {HILLSTROM_OUTCOMES}")
    from offerlab.data.loaders import HILLSTROM_CONTROL, HILLSTROM_TREATMENTS

    levels = [HILLSTROM_CONTROL] + [t for t in HILLSTROM_TREATMENTS if t != HILLSTROM_CONTROL]
    codes = _treatment_codes(campaign["treatment"], levels)
    conv = campaign["visit" if outcome == "visit" else "conversion"].to_numpy(dtype=float)
    rev = conv.copy() if outcome == "visit" else campaign["revenue"].to_numpy(dtype=float)
    return CampaignData(
        customer_id=campaign["customer_id"].to_numpy(dtype=object), features=hillstrom_features(campaign),
        treatment=codes, conversion=conv, revenue=rev, levels=levels,
        propensity=_known_propensity(campaign, codes, len(levels)),
        discounts={lv: 0.0 for lv in levels},  # e-mail variants: no discount (explicit, not a fallback)
        assignment="randomised",
    )


def synth_features(transactions: pd.DataFrame, customers: pd.DataFrame | None, as_of: pd.Timestamp,
                   customer_ids: pd.Series | np.ndarray) -> pd.DataFrame:
    """Behaviour features from transactions before `as_of` plus static customer attributes, one row per id."""
    from offerlab.data.features import behaviour_features

    ids = pd.Index(pd.Series(customer_ids).astype(str), name="customer_id")
    beh = behaviour_features(transactions, pd.Timestamp(as_of), inclusive=False).reindex(ids)
    if "has_history" in beh:
        beh["has_history"] = beh["has_history"].fillna(0.0)
    if customers is not None:
        attrs = customers.set_index("customer_id").reindex(ids)
        for c in attrs.columns:
            if pd.api.types.is_datetime64_any_dtype(attrs[c]):
                beh[f"{c}_days"] = (pd.Timestamp(as_of) - attrs[c]).dt.total_seconds().to_numpy() / 86400.0
            elif c not in beh.columns:
                beh[c] = attrs[c].to_numpy()
    beh = beh.reset_index(drop=True)
    for c in beh.columns:
        if pd.api.types.is_datetime64_any_dtype(beh[c]):
            beh = beh.drop(columns=c)
        elif pd.api.types.is_bool_dtype(beh[c]):
            beh[c] = beh[c].astype(float)
    return beh


def from_synth(synth) -> CampaignData:
    """The synthetic campaign with behaviour features as of the campaign date."""
    meta = synth.meta
    levels = [meta["control"]] + [lv for lv in meta["levels"] if lv != meta["control"]]
    camp = synth.campaign
    feats = synth_features(synth.transactions, synth.customers, pd.Timestamp(meta["campaign_date"]),
                           camp["customer_id"])
    codes = _treatment_codes(camp["treatment"], levels)
    return CampaignData(
        customer_id=camp["customer_id"].to_numpy(dtype=object), features=feats, treatment=codes,
        conversion=camp["conversion"].to_numpy(dtype=float), revenue=camp["revenue"].to_numpy(dtype=float),
        levels=levels, propensity=_known_propensity(camp, codes, len(levels)),
        cost=camp["cost"].to_numpy(dtype=float) if "cost" in camp else None,
        discounts={lv: float(meta["discounts"][lv]) for lv in levels},
        assignment=meta.get("campaign_assignment", "randomised"), returned_revenue=_returned(camp),
    )


def from_campaign(campaign: pd.DataFrame, *, control: str, levels: list[str] | None = None,
                  feature_columns: list[str] | None = None, discounts: dict[str, float] | None = None,
                  transactions: pd.DataFrame | None = None, customers: pd.DataFrame | None = None,
                  feature_date: str | None = None) -> CampaignData:
    """A user's campaign log (canonical `campaign` table). Features: behaviour features from `transactions`
    strictly before `feature_date` plus the `customers` attributes (when transactions are given), and the log's
    own extra columns (`feature_columns`, else every non-contract column when there are no transactions).

    `discounts` must give every level's rate (control 0): a level without one is refused, never priced at 0."""
    levels = levels or [control] + sorted(set(campaign["treatment"].astype(str)) - {control})
    if levels[0] != control:
        levels = [control] + [lv for lv in levels if lv != control]
    codes = _treatment_codes(campaign["treatment"], levels)
    reserved = {"customer_id", "treatment", "conversion", "revenue", "cost", "propensity", "returned_revenue"}
    cols = feature_columns if feature_columns is not None else (
        [] if transactions is not None else [c for c in campaign.columns if c not in reserved])
    parts = []
    if transactions is not None:
        if feature_date is None:
            raise ValueError("behaviour features from transactions need a feature_date (the campaign date)")
        parts.append(synth_features(transactions, customers, pd.Timestamp(feature_date), campaign["customer_id"]))
    if cols:
        own = campaign[cols].reset_index(drop=True)
        clash = [c for c in cols if parts and c in parts[0].columns]
        if clash:
            raise DataValidationError("campaign", clash[0], "a kept column has the name of a behaviour feature "
                                      "computed from the transactions; rename it in the file or drop it from keep")
        parts.append(own)
    if not parts:
        raise DataValidationError("campaign", None, "no feature columns: keep some in the column mapping "
                                  "('keep: [...]') or give transactions and a feature date")
    feats = pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    missing = [lv for lv in levels if lv != control and lv not in (discounts or {})]
    if missing:
        raise ValueError(f"no discount rate for campaign level {missing[0]!r}: give every level's rate "
                         f"(economics.discounts.{missing[0]} in a data spec, policy.discounts in a config)")
    return CampaignData(
        customer_id=campaign["customer_id"].to_numpy(dtype=object), features=feats, treatment=codes,
        conversion=campaign["conversion"].to_numpy(dtype=float), revenue=campaign["revenue"].to_numpy(dtype=float),
        levels=levels, propensity=_known_propensity(campaign, codes, len(levels)),
        cost=campaign["cost"].to_numpy(dtype=float) if "cost" in campaign else None,
        discounts={lv: 0.0 if lv == control else float(discounts[lv]) for lv in levels},
        returned_revenue=_returned(campaign),
    )


def stratified_split(data: CampaignData, test_size: float, seed: int, outcome: str = "conversion"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a split stratified by treatment x (outcome > 0), the protocol's 70/30 split."""
    from sklearn.model_selection import train_test_split

    strata = data.treatment * 2 + (data.outcome(outcome) > 0).astype(int)
    idx = np.arange(len(data))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(test)
