"""Decision records from service answers and from batch-scored rows, with the inputs in a pseudonymous-safe form.

What of the inputs is logged (`features`, one JSON object per record, keys `<family>.<feature>`):
- timing: `purchases` (on or before as_of), `days_since_last`, `days_since_first`, and `amount_mean__q`;
- uplift: the model's own raw feature columns (history features, the customer attributes it reads);
- credit: the model's feature columns (application fields, `beh_*` history features).
Amounts are personal fields: every amount feature (`offerlab.data.features.is_amount_feature`, credit's
`needs_amount`) and every numeric application field (income, requested amount, age, employment years, term,
existing credits) is logged only as a bucket index, `<name>__q = floor(2 log2(1 + x))` (half-octave buckets:
0-0.4, 0.4-1, 1-1.8, ..., 22-31, 31-44, ...), never its value; PSI reads the bucket indexes as levels. Counts,
recencies, shares and the attribute levels the models read are kept as they are. No id and no free text.
With `Offers` (the parts behind HTTP, no model in the process) the uplift and credit blocks hold what the request
carries under the same names: the attributes and the application fields (safe form).
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from offerlab.monitor.decision_log import keyed_hash, pseudonyms, utc_now

APPLICATION_NUMERIC = ("requested_amount", "income", "age", "employment_years", "term_months", "existing_credits")


def bucket(x) -> np.ndarray:
    """Half-octave bucket index floor(2 log2(1 + max(x, 0))) (float with NaN where x is missing)."""
    v = np.asarray(pd.to_numeric(pd.Series(x), errors="coerce"), dtype=float)
    with np.errstate(invalid="ignore"):
        return np.floor(2.0 * np.log2(1.0 + np.maximum(v, 0.0)))


def is_personal(family: str, name: str) -> bool:
    """Whether a feature is an amount or a personal number (logged as a bucket index only)."""
    from offerlab.credit.data import needs_amount
    from offerlab.data.features import is_amount_feature

    if family == "credit":
        return name in APPLICATION_NUMERIC or needs_amount(name) or "amount" in name or "income" in name
    return is_amount_feature(name) or "amount" in name or "spend" in name or "monetary" in name


def safe_block(family: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s columns in the logged form, named `<family>.<name>` (`__q` for bucket indexes)."""
    out = {}
    for c in frame.columns:
        v = frame[c]
        numeric = pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v)
        if not numeric:
            numeric_like = pd.to_numeric(v, errors="coerce")
            if v.notna().any() and numeric_like.notna().sum() == v.notna().sum():  # numbers sent as objects
                v, numeric = numeric_like, True
        if numeric and is_personal(family, c):
            out[f"{family}.{c}__q"] = bucket(v)
        elif numeric:
            out[f"{family}.{c}"] = np.round(v.to_numpy(dtype=float), 4)
        else:
            out[f"{family}.{c}"] = v.astype(object).where(v.notna(), None).map(lambda s: s if s is None else str(s))
    return pd.DataFrame(out, index=frame.index)


def features_json(blocks: list[pd.DataFrame], n: int) -> list[str]:
    """One JSON object per row of the blocks joined side by side (missing values left out)."""
    if not blocks:
        return ["{}"] * n
    joined = pd.concat([b.reset_index(drop=True) for b in blocks], axis=1)
    lines = joined.to_json(orient="records", lines=True, double_precision=6).splitlines()
    return [json.dumps({k: v for k, v in json.loads(s).items() if v is not None}, separators=(",", ":"))
            for s in lines] if len(lines) == n else ["{}"] * n


def history_summary(tx: pd.DataFrame, as_of: pd.Series) -> pd.DataFrame:
    """Timing's logged inputs per customer from a (customer_id, timestamp[, amount]) table and each customer's
    as-of instant (`as_of` indexed by customer_id); purchases after as_of are not counted."""
    ids = as_of.index
    t = tx[["customer_id", "timestamp", *(["amount"] if "amount" in tx else [])]].copy()
    t["timestamp"] = pd.to_datetime(t["timestamp"])
    t = t[t["customer_id"].isin(ids)]
    t = t[t["timestamp"] <= t["customer_id"].map(as_of)]
    g = t.groupby("customer_id", sort=False)
    first, last, n = g["timestamp"].min(), g["timestamp"].max(), g.size()
    day = pd.Timedelta(days=1)
    out = pd.DataFrame(index=ids)
    out["purchases"] = n.reindex(ids).fillna(0).to_numpy()
    out["days_since_last"] = ((as_of - last.reindex(ids)) / day).to_numpy()
    out["days_since_first"] = ((as_of - first.reindex(ids)) / day).to_numpy()
    if "amount" in t:
        out["amount_mean"] = g["amount"].mean().reindex(ids).to_numpy()
    return out


# -------------------------------------------------------------------------------------------- service
def _request_frame(reqs) -> tuple[pd.DataFrame, pd.Series]:
    ids = [f"r{i}" for i in range(len(reqs))]
    rows = [(ids[i], p.timestamp, p.amount) for i, r in enumerate(reqs) for p in r.history]
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    as_of = pd.Series([pd.Timestamp(r.answer_time()) for r in reqs], index=pd.Index(ids, name="customer_id"))
    return tx, as_of


def service_features(requests: list, adapters: dict | None) -> list[str]:
    """The logged inputs of a batch of offers requests (see the module doc)."""
    tx, as_of = _request_frame(requests)
    blocks = [safe_block("timing", history_summary(tx, as_of).reset_index(drop=True))]
    n = len(requests)
    uplift = (adapters or {}).get("uplift")
    if uplift is not None:
        from offerlab.serving.contracts import DiscountRequest

        blocks.append(safe_block("uplift", pd.DataFrame(uplift.columns([r.part(DiscountRequest) for r in requests]))))
    else:
        blocks.append(safe_block("uplift", pd.DataFrame([dict(r.attributes) for r in requests], index=range(n))))
    with_app = [i for i, r in enumerate(requests) if r.application is not None]
    if with_app:
        credit = (adapters or {}).get("credit")
        reqs = [requests[i] for i in with_app]
        if credit is not None:
            from offerlab.serving.contracts import CreditRequest

            parts = [r.part(CreditRequest) for r in reqs]  # with its returns and repayments, as the answer had
            frame = pd.DataFrame(credit.columns(parts, credit.applications(parts)))
        else:
            frame = pd.DataFrame([r.application.fields() for r in reqs])
        frame.index = with_app
        blocks.append(safe_block("credit", frame).reindex(range(n)))
    return features_json(blocks, n)


def _discount_figures(d, adapter) -> dict:
    level = d.level
    levels = {lv.level: lv for lv in d.levels}
    rate = levels[level].discount_rate if level in levels else 0.0
    out = {"discount_level": level or "none", "discount_rate": rate if level else 0.0,
           "discount_expected_profit": d.expected_incremental_profit,
           "greedy_level": d.greedy_level or "none", "assignment_probability": d.assignment_probability}
    eps = float(getattr(adapter, "explore", 0.0) or 0.0) if adapter is not None else None
    if eps is not None:  # P(this customer gets none) under the answer's draw: eps / L + (1 - eps) 1[greedy = none]
        out["p_none"] = eps / len(d.levels) + (1.0 - eps) * (d.greedy_level is None)
        policy = getattr(adapter, "policy", None)
        out["discount_margin"] = getattr(policy, "margin", None)
        out["discount_contact_cost"] = getattr(policy, "contact_cost", None)
    return out


def service_records(requests: list, answers: list, started_at: dt.datetime, latency_ms: float, source: str,
                    adapters: dict | None, key: str) -> pd.DataFrame:
    """Records of one served batch (`OffersRequest`s and their `OffersAnswer`s, same order)."""
    rows = []
    uplift = (adapters or {}).get("uplift")
    for r, a in zip(requests, answers, strict=True):  # a served batch: bounded (max batch size)
        row = {"customer_id": r.customer_id, "as_of": r.answer_time(), "status": "answered",
               "input_hash": keyed_hash(r.model_dump_json(warnings=False).encode(), key), "discount_margin": None}
        if a.timing is not None:
            t = a.timing
            row.update(timing_version=t.model_version, p_buy_7d=t.p_buy_7d, p_buy_30d=t.p_buy_30d,
                       p_buy_90d=t.p_buy_90d, winback=t.winback)
        row["uplift_version"] = a.discount.model_version
        row.update(_discount_figures(a.discount, uplift))
        if a.credit is not None:
            c = a.credit
            row.update(credit_version=c.model_version, credit_pd=c.pd, credit_score=c.score, credit_grade=c.grade,
                       credit_decision=c.decision, credit_decline_reason=c.decline_reason or None)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["customer_key"] = pseudonyms(df.pop("customer_id"), key)
    df["features"] = service_features(requests, adapters)
    return _stamp(df, started_at, latency_ms, source)


def refusal_records(source: str, fields: list[str], started_at: dt.datetime, key: str) -> pd.DataFrame:
    """One record of a refused request: which fields, no values, no id."""
    df = pd.DataFrame([{"status": "refused", "refused_fields": ",".join(fields), "features": "{}"}])
    return _stamp(df, started_at, None, source)


def _stamp(df: pd.DataFrame, started_at: dt.datetime, latency_ms: float | None, source: str) -> pd.DataFrame:
    df["logged_at"] = pd.Timestamp(started_at)
    df["day"] = pd.Timestamp(started_at).strftime("%Y-%m-%d")
    df["latency_ms"] = latency_ms
    df["source"] = source
    return df


# ---------------------------------------------------------------------------------------------- batch
def batch_records(command: str, result: pd.DataFrame, inputs, models: dict, as_of, seconds: float, key: str,
                  started_at: dt.datetime | None = None) -> pd.DataFrame:
    """Records of a batch-scored file (`offerlab score`): one per row of `result`, `latency_ms` the run's time per
    row, the inputs' features recomputed from the same tables the scorer read (vectorised over customers)."""
    from offerlab.serving.score import as_orders, discount_features

    started_at = started_at or utc_now()
    n = len(result)
    pre = (lambda fam: f"{fam}_") if command == "offers" else (lambda fam: "")
    fams = ["timing", "discount", "credit"] if command == "offers" else [command]
    ids = result["customer_id"].astype(str)
    df = pd.DataFrame({"status": "answered", "customer_key": pseudonyms(ids, key)})
    when = pd.Timestamp(as_of) if as_of is not None else None
    df["as_of"] = when
    blocks = []
    versions = {f: _model_version(models[f]) for f in models}
    tx = inputs.transactions
    if "timing" in fams:
        p = pre("timing")
        df["timing_version"] = versions.get("timing")
        for h in (7, 30, 90):
            df[f"p_buy_{h}d"] = result[f"{p}p_within_{h}d"].to_numpy()
        summary = history_summary(tx, pd.Series(when, index=pd.Index(pd.unique(ids), name="customer_id")))
        blocks.append(safe_block("timing", summary.reindex(ids.to_numpy()).reset_index(drop=True)))
    if "discount" in fams:
        p = pre("discount")
        model = models["discount"]
        policy = model.unwrap_python_model().policy
        level = result[f"{p}level"].astype(object)
        control = str(model.unwrap_python_model().model.levels[0])
        rates = dict(zip(model.unwrap_python_model().model.levels,
                         policy.discount_rates(list(model.unwrap_python_model().model.levels),
                                               model.unwrap_python_model().model.discounts), strict=True))
        df["uplift_version"] = versions.get("discount")
        df["discount_level"] = level.where(level != control, "none").to_numpy()
        df["discount_rate"] = level.map(rates).astype(float).to_numpy()
        df["discount_expected_profit"] = result[f"{p}expected_incremental_profit"].to_numpy()
        df["greedy_level"] = df["discount_level"]
        df["assignment_probability"] = 1.0
        df["p_none"] = (df["discount_level"] == "none").astype(float)
        df["discount_margin"], df["discount_contact_cost"] = policy.margin, policy.contact_cost
        feats = discount_features(model, as_orders(tx), inputs.customers, when)
        blocks.append(safe_block("uplift", feats.reindex(ids.to_numpy()).reset_index(drop=True)))
    if "credit" in fams and f"{pre('credit')}pd" in result:
        p = pre("credit")
        df["credit_version"] = versions.get("credit")
        for c in ("pd", "score", "grade", "decision", "decline_reason"):
            df[f"credit_{c}"] = result[f"{p}{c}"].to_numpy()
        df["credit_decline_reason"] = df["credit_decline_reason"].replace("", None)
        apps = inputs.applications
        if apps is not None and len(apps):
            cm = models["credit"].unwrap_python_model().model
            orders = None if tx is None else as_orders(tx)
            if getattr(cm, "behaviour_features", None) is not None:  # as score_credit: returns, repayments too
                feats = cm.features(apps, orders, returns=getattr(inputs, "returns", None),
                                    repayments=getattr(inputs, "repayments", None))
            else:
                feats = cm.features(apps, orders)
            feats.index = apps["customer_id"].astype(str).to_numpy()
            if command == "credit":  # one row per application, in the applications' order
                block = feats.reset_index(drop=True)
            else:
                block = feats[~feats.index.duplicated(keep="last")].reindex(ids.to_numpy()).reset_index(drop=True)
            blocks.append(safe_block("credit", block[[c for c in cm.feature_columns if c in block]]))
        if command == "credit":
            df["as_of"] = pd.to_datetime(apps["applied_at"]).to_numpy() if apps is not None else None
    df["input_hash"] = _row_hashes(blocks, key, n)
    df["features"] = features_json(blocks, n)
    return _stamp(df, started_at, 1000.0 * seconds / max(n, 1), f"score:{command}")


def _row_hashes(blocks: list[pd.DataFrame], key: str, n: int) -> list[str]:
    """A keyed hash per row of the scored inputs' features (pandas' row hash, then HMAC: nothing reversible)."""
    if not blocks:
        return [None] * n
    joined = pd.concat([b.reset_index(drop=True) for b in blocks], axis=1)
    h = pd.util.hash_pandas_object(joined.astype(str), index=False).to_numpy()
    return [keyed_hash(int(v).to_bytes(8, "little"), key) for v in h]


def _model_version(model) -> str | None:
    """The registry version (or run) a loaded pyfunc came from, from its metadata."""
    meta = getattr(model, "metadata", None)
    run = getattr(meta, "run_id", None)
    return _version_of_run(run) if run else None


def _version_of_run(run_id: str) -> str | None:
    try:
        from mlflow import MlflowClient

        for fam in ("timing", "uplift", "credit"):
            for mv in MlflowClient().search_model_versions(f"name = 'offerlab-{fam}' and run_id = '{run_id}'"):
                return str(mv.version)
    except Exception:  # noqa: BLE001 - a version we cannot name is logged as the run
        pass
    return f"run:{run_id}"


# ------------------------------------------------------------------------------------------ the hooks
def log_answers(source: str, requests: list, answers: list, started_at: dt.datetime, latency_ms: float,
                adapters: dict | None = None) -> None:
    """Queue a served batch's records on this process's decision log (nothing when none is configured).

    Never raises and never waits: the records are built by the log's thread."""
    from offerlab.monitor.decision_log import process_log

    try:
        dlog = process_log()
        if dlog is not None and answers:
            dlog.submit((service_records, (list(requests), list(answers), started_at, latency_ms, source, adapters)))
    except Exception:  # noqa: BLE001 - the log never fails a request
        pass


def log_refusal(source: str, detail: list[dict]) -> None:
    """Count a refused request by field (Prometheus) and queue its record (fields only, no values, no id)."""
    from offerlab.monitor import metrics
    from offerlab.monitor.decision_log import process_log

    try:
        fields = metrics.count_refusal(source, detail)
        dlog = process_log()
        if dlog is not None:
            dlog.submit((refusal_records, (f"service:{source}", fields, utc_now())))
    except Exception:  # noqa: BLE001 - the log never fails a request
        pass


def log_scored(command: str, result: pd.DataFrame, inputs, models: dict, as_of, seconds: float) -> dict | None:
    """Write a batch-scored file's records to the configured decision log (None when none is); the counts.

    A sink that is down, or records that cannot be built, are counted in the answer, never raised."""
    import logging

    from offerlab.monitor.decision_log import from_env

    dlog = from_env()
    if dlog is None:
        return None
    try:
        try:
            records = batch_records(command, result, inputs, models, as_of, seconds, dlog.key)
        except Exception as e:  # noqa: BLE001 - the scores are written either way
            logging.getLogger(__name__).warning("decision log: the %d scored rows could not be turned into records "
                                                "(%s: %s)", len(result), type(e).__name__, str(e)[:200])
            dlog._count_drop("sink", len(result))
            return dlog.counts()
        dlog.write_now(records)
        logging.getLogger(__name__).info("decision log: %d record(s) to %s, %d dropped", dlog.written,
                                         dlog.sink.describe(), dlog.dropped_sink)
        return dlog.counts()
    finally:
        dlog.close(1.0)
