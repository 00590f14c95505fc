"""Uplift metrics, one implementation for every model: Qini coefficient, AUUC and uplift@k.

Each compares one treatment level with the control on the rows that received either of them,
ranking the rows by the model's predicted uplift of that level (descending, ties kept in input order).

Definitions (n rows ranked, k = 0..n the number targeted, Y_t(k), Y_c(k) the summed outcomes and
N_t(k), N_c(k) the counts of treated and control rows among the top k):

- Qini curve  Q(k) = Y_t(k) - Y_c(k) N_t(k) / N_c(k)   (Radcliffe 2007): incremental outcomes so far.
- Qini coefficient (`qini`, the project's headline metric) = (A_model - A_random) / (A_perfect - A_random):
  the area between the model's Qini curve and the random line (the chord from (0, 0) to (n, Q(n))),
  normalised by the same area for the perfect ranking (treated responders first, control responders
  last: score y t - y (1 - t)). Areas are trapezoids over the distinct score thresholds, so tied
  scores form one linear segment and the value does not depend on row order. 1 = perfect, about 0 =
  random, < 0 = worse than random. This is Radcliffe's normalised Qini as scikit-uplift's
  `qini_auc_score(negative_effect=True)` defines it; the issue's reference (S-learner 0.054 +- 0.005
  on Hillstrom `Womens E-Mail` vs control, `visit`) is on this scale.
- Qini area (`qini_area`) = (1 / (n+1)) sum_k [Q(k) - k Q(n) / n] / |Q(n)|: the same area between curve
  and random line but scaled by the whole-population gain |Q(n)| instead of the perfect model, point by
  point. Exactly `causalml.metrics.qini_score(..., normalize=True)` (checked in tests; about 3x the
  coefficient on Hillstrom).
- AUUC = (1 / (n+1)) sum_k G(k) / |G(n)| with G(k) = k (Y_t(k)/N_t(k) - Y_c(k)/N_c(k)) the cumulative
  gain (Gutierrez & Gerardy 2016); random scores about 0.5. Exactly `causalml.metrics.auuc_score(...,
  normalize=True)`.
- uplift@k: mean outcome of the treated minus mean outcome of the control among the top fraction k.

Points where a ratio is undefined (no control or no treated row yet at the top) are linearly
interpolated between 0 at k=0 and the first defined point, as causalml does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _ranked_cumsums(score: np.ndarray, y: np.ndarray, treated: np.ndarray):
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    t = np.asarray(treated, dtype=float)[order]
    yy = np.asarray(y, dtype=float)[order]
    n_t = np.cumsum(t)
    n_c = np.arange(1, len(t) + 1) - n_t
    y_t = np.cumsum(yy * t)
    y_c = np.cumsum(yy * (1 - t))
    return n_t, n_c, y_t, y_c


def _with_origin_interpolated(curve: np.ndarray) -> np.ndarray:
    """Prepend 0 at k=0 and fill the undefined leading points linearly (causalml's `interpolate`)."""
    out = np.concatenate([[0.0], curve])
    bad = ~np.isfinite(out)
    if bad.any():
        k = np.arange(len(out))
        good = ~bad
        out[bad] = np.interp(k[bad], k[good], out[good])
    return out


def qini_curve(score: np.ndarray, y: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """Q(k) for k = 0..n (unnormalised: incremental outcomes among the top k)."""
    n_t, n_c, y_t, y_c = _ranked_cumsums(score, y, treated)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = y_t - y_c * n_t / n_c
    q[n_c == 0] = np.nan
    return _with_origin_interpolated(q)


def gain_curve(score: np.ndarray, y: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """G(k) = k (mean treated outcome - mean control outcome) among the top k, k = 0..n."""
    n_t, n_c, y_t, y_c = _ranked_cumsums(score, y, treated)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = y_t / n_t - y_c / n_c
    lift[(n_t == 0) | (n_c == 0)] = np.nan
    lift = _with_origin_interpolated(lift)
    return lift * np.arange(len(lift))


def qini_area(score: np.ndarray, y: np.ndarray, treated: np.ndarray, normalize: bool = True) -> float:
    """Area between the Qini curve and the random line per point, scaled by |Q(n)| when `normalize`
    (causalml's `qini_score`)."""
    q = qini_curve(score, y, treated)
    n = len(q) - 1
    random_line = np.linspace(0.0, q[-1], n + 1)
    area = float((q - random_line).sum() / (n + 1))
    if normalize:
        return area / abs(q[-1]) if q[-1] != 0 else float("nan")
    return area


def qini_points(score: np.ndarray, y: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve (k, Q(k)) at (0, 0) and at the end of each group of tied scores, ranked by score."""
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="stable")
    s = score[order]
    t = np.asarray(treated, dtype=float)[order]
    yy = np.asarray(y, dtype=float)[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    n_t = np.cumsum(t)[ends]
    n_c = ends + 1 - n_t
    y_t = np.cumsum(yy * t)[ends]
    y_c = np.cumsum(yy * (1 - t))[ends]
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0)
    return np.r_[0.0, ends + 1.0], np.r_[0.0, y_t - y_c * ratio]


def _area_over_chord(k: np.ndarray, q: np.ndarray) -> float:
    return float(np.trapezoid(q, k) - 0.5 * k[-1] * q[-1])


def qini_coefficient(score: np.ndarray, y: np.ndarray, treated: np.ndarray) -> float:
    """Area between the model's Qini curve and the random chord over that of the perfect ranking."""
    y = np.asarray(y, dtype=float)
    treated = np.asarray(treated, dtype=float)
    perfect = _area_over_chord(*qini_points(y * treated - y * (1 - treated), y, treated))
    if perfect == 0:
        return float("nan")
    return _area_over_chord(*qini_points(score, y, treated)) / perfect


def auuc(score: np.ndarray, y: np.ndarray, treated: np.ndarray, normalize: bool = True) -> float:
    """Mean of the cumulative gain curve over k = 0..n, scaled by |G(n)| when `normalize`."""
    g = gain_curve(score, y, treated)
    if normalize:
        g = g / abs(g[-1]) if g[-1] != 0 else g * np.nan
    return float(g.mean())


def uplift_at_k(score: np.ndarray, y: np.ndarray, treated: np.ndarray, k: float = 0.3) -> float:
    """Observed uplift (treated mean - control mean) among the top fraction `k` ranked by score."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    top = order[: max(1, int(np.ceil(k * len(order))))]
    t = np.asarray(treated, dtype=bool)[top]
    yy = np.asarray(y, dtype=float)[top]
    if t.all() or (~t).all():
        return float("nan")
    return float(yy[t].mean() - yy[~t].mean())


def per_treatment_metrics(
    uplift: pd.DataFrame, treatment: np.ndarray, y: np.ndarray, control: str, k: float = 0.3
) -> dict[str, dict[str, float]]:
    """Qini, AUUC and uplift@k of each level (a column of `uplift`) vs the control, on that pair's rows.

    Returns {"qini": {level: value}, "qini_area": {...}, "auuc": {...}, "uplift_at_30": {...}}.
    """
    treatment = np.asarray(treatment).astype(str)
    y = np.asarray(y, dtype=float)
    key_k = f"uplift_at_{round(k * 100)}"
    out: dict[str, dict[str, float]] = {"qini": {}, "qini_area": {}, "auuc": {}, key_k: {}}
    for level in uplift.columns:
        rows = (treatment == level) | (treatment == control)
        if not (treatment == level).any():
            continue
        s = uplift[level].to_numpy(dtype=float)[rows]
        t = (treatment[rows] == level).astype(float)
        out["qini"][level] = qini_coefficient(s, y[rows], t)
        out["qini_area"][level] = qini_area(s, y[rows], t)
        out["auuc"][level] = auuc(s, y[rows], t)
        out[key_k][level] = uplift_at_k(s, y[rows], t, k)
    return out
