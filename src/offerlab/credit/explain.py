"""Reason codes: which of an applicant's features raised the predicted risk, in words.

Attributions come from the real, calibrated model by exact occlusion: for each feature group, the
applicant's values are replaced by the typical applicant's (training mode / median) and the change
in calibrated log-odds of default is the group's contribution (positive = raised the risk). The top
contributions above `min_effect` (at most four, per adverse-action practice) become statements such
as "Status of existing checking account: ... < 0 DM" or "Credit amount: high". Statements name
levels and directions, never an applicant's amounts, so they can be logged. Payment behaviour is said in words
with its count or share (`WORDED`): "2 late instalments in the last 6 months", "returns 60% of what they buy".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.credit.data import BEHAVIOUR_PREFIX

MAX_REASONS = 4


def _count_words(what: str, when: str):
    def words(x: np.ndarray) -> np.ndarray:
        n = np.nan_to_num(x, nan=0.0).astype(int)
        return np.where(n == 0, f"no {what} {when}", np.where(n == 1, f"1 {what} {when}",
                        np.char.add(n.astype(str), f" {what}s {when}"))).astype(object)
    return words


def _share_words(template: str):
    def words(x: np.ndarray) -> np.ndarray:
        pct = np.char.add(np.round(np.nan_to_num(x, nan=0.0) * 100).astype(int).astype(str), "%")
        return np.where(np.isnan(x), "no history", np.char.replace(np.full(len(x), template), "{pct}", pct)
                        ).astype(object)
    return words


def _days_words(x: np.ndarray) -> np.ndarray:
    n = np.nan_to_num(x, nan=0.0).astype(int)
    return np.where(n <= 0, "never past due", np.char.add(np.char.add("up to ", n.astype(str)), " days past due")
                    ).astype(object)


# a group whose first column is one of these is stated with the applicant's count or share (never an amount)
WORDED = {
    "rep_late_3m": _count_words("late instalment", "in the last 3 months"),
    "rep_late_6m": _count_words("late instalment", "in the last 6 months"),
    "rep_late_12m": _count_words("late instalment", "in the last 12 months"),
    "rep_n_late": _count_words("late instalment", "so far"),
    "rep_overdue_now": _count_words("instalment", "overdue now"),
    "rep_dpd_max": _days_words,
    "rep_share_repaid": _share_words("{pct} of the instalments due repaid"),
    "ret_return_rate_value": _share_words("returns {pct} of what they buy"),
    "ret_return_rate_count": _share_words("returned {pct} of their orders"),
    "ret_instalment_share": _share_words("{pct} of orders paid in instalments or later"),
}


def default_label(column: str) -> str:
    name = column.removeprefix(BEHAVIOUR_PREFIX).replace("_", " ").strip()
    label = name[:1].upper() + name[1:]
    return f"Purchase history: {name}" if column.startswith(BEHAVIOUR_PREFIX) else label


def reason_groups(columns: list[str], configured: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Feature groups occluded together: configured groups first, then one group per remaining column."""
    groups: dict[str, list[str]] = {}
    used: set[str] = set()
    for name, cols in (configured or {}).items():
        present = [c for c in cols if c in columns and c not in used]
        if present:
            groups[name] = present
            used.update(present)
    for c in columns:
        if c not in used:
            groups[c] = [c]
    return groups


def occlusion_attributions(model, X: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Change in calibrated log-odds when each group is set to the typical applicant's values."""
    if hasattr(model, "occlusion_logits"):  # the PD model occludes on its encoded arrays: one encoding in all
        base, occluded = model.occlusion_logits(X, groups)
        return pd.DataFrame({name: base - logit for name, logit in occluded.items()}, index=X.index)
    base = model.predict_logit(X)
    ref = model.encoder.reference
    out = {}
    for name, cols in groups.items():  # a loop over feature groups, each a vectorised pass over all rows
        Xg = X.copy()
        for c in cols:
            Xg[c] = ref[c]  # scalar broadcast: every row becomes the typical applicant in this group
        out[name] = base - model.predict_logit(Xg)
    return pd.DataFrame(out, index=X.index)


def group_statements(X: pd.DataFrame, groups: dict[str, list[str]], reference: dict,
                     labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One statement per applicant and group, describing the applicant's value (no amounts)."""
    return pd.DataFrame(statement_arrays(X, groups, reference, labels), index=X.index)


def statement_arrays(columns, groups: dict[str, list[str]], reference: dict,
                     labels: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """`group_statements` as object arrays; `columns` maps each group's first column to its values."""
    labels = labels or {}
    out = {}
    for name, cols in groups.items():
        c = cols[0]
        label = labels.get(name, labels.get(c, default_label(name)))
        v = np.asarray(columns[c])
        if c in WORDED and v.dtype.kind in "iuf":
            word = WORDED[c](v.astype(float))
        elif v.dtype.kind in "iuf":
            x = v.astype(float)
            ref = float(reference.get(c, np.nanmedian(x)))
            word = np.where(np.isnan(x), "unknown", np.where(x > ref, "high", np.where(x < ref, "low", "typical")))
        else:
            word = np.where(pd.isna(v), "missing", v.astype(str))
        out[name] = (label + ": ") + word.astype(object)
    return out


def top_reasons(attributions: pd.DataFrame, statements: pd.DataFrame, k: int = MAX_REASONS,
                min_effect: float = 0.02) -> pd.DataFrame:
    """Columns reason_1..reason_k (and their log-odds effects): the largest risk-raising contributions."""
    st = statements[attributions.columns].to_numpy(dtype=object)
    out = top_reason_arrays(attributions.to_numpy(dtype=float), st, k, min_effect)
    return pd.DataFrame(out, index=attributions.index)


def top_reason_arrays(a: np.ndarray, st: np.ndarray, k: int = MAX_REASONS, min_effect: float = 0.02,
                      ) -> dict[str, np.ndarray]:
    """`top_reasons` on (rows, groups) arrays of attributions and statements."""
    k = min(k, MAX_REASONS)
    order = np.argsort(-a, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(a))[:, None]
    top_a, top_s = a[rows, order], st[rows, order]
    keep = top_a > min_effect
    out = {}
    for j in range(order.shape[1]):
        out[f"reason_{j + 1}"] = np.where(keep[:, j], top_s[:, j], "")
        out[f"reason_{j + 1}_effect"] = np.where(keep[:, j], np.round(top_a[:, j], 4), 0.0)
    return out


def explain(model, X: pd.DataFrame, *, groups: dict[str, list[str]] | None = None,
            labels: dict[str, str] | None = None, k: int = MAX_REASONS, min_effect: float = 0.02) -> pd.DataFrame:
    """Top reasons per applicant from occlusion attributions of `model` (a fitted CreditModel)."""
    g = reason_groups(list(model.encoder.categorical + model.encoder.numeric), groups)
    attr = occlusion_attributions(model, X, g)
    return top_reasons(attr, group_statements(X, g, model.encoder.reference, labels), k, min_effect)
