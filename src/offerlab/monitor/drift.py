"""Drift between a reference and a current window of the decision log: PSI per family of every logged input
feature and of the scores, and the share of requests hitting each refusal.

Per family (timing, uplift, credit): PSI of each `f.<family>.*` feature (numbers binned at the reference deciles,
attribute levels and `__q` bucket indexes as levels; `offerlab.monitor.psi`), and of its scores (timing
`p_buy_30d`; uplift `discount_expected_profit` and the chosen `discount_level`; credit `credit_pd` and
`credit_decision`). Refusals: the share of requests refused (400) per field, and per credit decline reason the
share of credit answers; reported beside each other for both windows. Status per row: stable (< 0.10),
moderate (0.10-0.25), significant (>= 0.25).

Why the project's own PSI and not Evidently: the whole check is a few vectorised numpy lines that the project
already uses and tests (credit's training-time PSI), reading bucket indexes as levels is what the pseudonymous
log needs, and Evidently would add a large dependency tree (its own pydantic/plotly/nltk pins) to the runtime
install for the same number.
"""

from __future__ import annotations

import pandas as pd

from offerlab.monitor.psi import SIGNIFICANT, STABLE, psi_categorical, psi_numeric, psi_status

FAMILIES = ("timing", "uplift", "credit")
SCORES: dict[str, tuple[tuple[str, str], ...]] = {
    "timing": (("p_buy_30d", "numeric"),),
    "uplift": (("discount_expected_profit", "numeric"), ("discount_level", "categorical")),
    "credit": (("credit_pd", "numeric"), ("credit_decision", "categorical")),
}
PRESENT = {"timing": "p_buy_30d", "uplift": "discount_level", "credit": "credit_pd"}


def _psi(ref: pd.Series, cur: pd.Series, kind: str, n_bins: int) -> float:
    if kind == "numeric":
        return psi_numeric(ref.to_numpy(dtype=float), cur.to_numpy(dtype=float), n_bins)
    return psi_categorical(ref.astype(object), cur.astype(object))


def _kind(name: str, values: pd.Series) -> str:
    if name.endswith("__q") or not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "categorical"
    return "numeric"


def drift_table(reference: pd.DataFrame, current: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """One row per (family, kind, variable): PSI and status; rows with no data in a window are left out."""
    rows = []
    ref_ok = reference[reference["status"] == "answered"]
    cur_ok = current[current["status"] == "answered"]
    for fam in FAMILIES:
        present = PRESENT[fam]
        r = ref_ok[ref_ok[present].notna()] if present in ref_ok else ref_ok.iloc[:0]
        c = cur_ok[cur_ok[present].notna()] if present in cur_ok else cur_ok.iloc[:0]
        if not len(r) or not len(c):
            continue
        prefix = f"f.{fam}."
        feats = sorted({col for col in r.columns if col.startswith(prefix)} & set(c.columns))
        for col in feats:
            if r[col].notna().sum() == 0:
                continue
            kind = _kind(col, r[col])
            rows.append({"family": fam, "kind": "feature", "variable": col.removeprefix(prefix),
                         "psi": _psi(r[col], c[col], kind, n_bins), "n_reference": len(r), "n_current": len(c)})
        for col, kind in SCORES[fam]:
            if col in r and col in c:
                rows.append({"family": fam, "kind": "score", "variable": col,
                             "psi": _psi(r[col], c[col], kind, n_bins), "n_reference": len(r), "n_current": len(c)})
    out = pd.DataFrame(rows, columns=["family", "kind", "variable", "psi", "n_reference", "n_current"])
    out["status"] = out["psi"].map(psi_status)
    return out.sort_values(["family", "kind", "psi"], ascending=[True, True, False], ignore_index=True)


def refusal_table(reference: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Share of requests refused per field, and of credit answers per decline reason, in both windows."""
    def shares(df: pd.DataFrame) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        n = len(df)
        if n:
            fields = df.loc[df["status"] == "refused", "refused_fields"].dropna().str.split(",").explode()
            for f, k in fields.value_counts().items():
                out[("request", f"refused: {f}")] = k / n
        credit = df[df["credit_decision"].notna()]
        if len(credit):
            reasons = credit.loc[credit["credit_decision"] == "decline", "credit_decline_reason"].fillna("declined")
            for f, k in reasons.value_counts().items():
                out[("credit", f"declined: {f}")] = k / len(credit)
        return out

    a, b = shares(reference), shares(current)
    rows = [{"family": fam, "refusal": what, "share_reference": a.get((fam, what), 0.0),
             "share_current": b.get((fam, what), 0.0)} for fam, what in sorted(set(a) | set(b))]
    return pd.DataFrame(rows, columns=["family", "refusal", "share_reference", "share_current"])


def worst_status(table: pd.DataFrame) -> str:
    return psi_status(float(table["psi"].max())) if len(table) else "stable"


def exit_code(table: pd.DataFrame, fail_on: str = "moderate") -> int:
    """0 when no PSI reaches `fail_on` (moderate: 0.10, significant: 0.25); else 3 (moderate) or 4 (significant)."""
    limit = {"moderate": STABLE, "significant": SIGNIFICANT}[fail_on]
    worst = float(table["psi"].max()) if len(table) else 0.0
    if worst < limit:
        return 0
    return 4 if worst >= SIGNIFICANT else 3


def markdown(table: pd.DataFrame, refusals: pd.DataFrame, meta: dict) -> str:
    lines = ["# Drift report", "",
             f"Reference: {meta['reference']} ({meta['n_reference']} records); current: {', '.join(meta['current'])} "
             f"({meta['n_current']} records). PSI thresholds: {STABLE:.2f} moderate, {SIGNIFICANT:.2f} significant.", ""]
    flagged = table[table["status"] != "stable"]
    lines.append(f"Flagged: {len(flagged)} of {len(table)} variables"
                 + (": " + ", ".join(f"{r.family}.{r.variable} ({r.psi:.3f}, {r.status})" for r in flagged.itertuples())
                    if len(flagged) else "") + ".")
    for fam in FAMILIES:
        part = table[table["family"] == fam]
        if not len(part):
            continue
        lines += ["", f"## {fam}", "", "| kind | variable | PSI | status |", "| --- | --- | ---: | --- |"]
        lines += [f"| {r.kind} | {r.variable} | {r.psi:.4f} | {r.status} |" for r in part.itertuples()]
    if len(refusals):
        lines += ["", "## Refusals (share of requests; credit: of credit answers)", "",
                  "| family | refusal | reference | current |", "| --- | --- | ---: | ---: |"]
        lines += [f"| {r.family} | {r.refusal} | {r.share_reference:.4f} | {r.share_current:.4f} |"
                  for r in refusals.itertuples()]
    return "\n".join(lines) + "\n"


def psi_figure(table: pd.DataFrame):
    """Horizontal bars of PSI per variable with the two thresholds (for the MLflow run)."""
    import matplotlib.pyplot as plt

    t = table.sort_values("psi")
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.18 * len(t) + 1)))
    colors = t["status"].map({"stable": "tab:green", "moderate": "tab:orange", "significant": "tab:red"})
    ax.barh([f"{f}.{v}" for f, v in zip(t["family"], t["variable"], strict=True)], t["psi"], color=colors)
    for x in (STABLE, SIGNIFICANT):
        ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("PSI (current vs reference)")
    ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return fig


def reference_frame(records: pd.DataFrame) -> pd.DataFrame:
    """What a drift run keeps (MLflow artifact) as a later run's reference: the records, as logged, without the
    pseudonymous key and the input hash."""
    return records.assign(customer_key=None, input_hash=None)
