"""Schemathesis hooks for tests/test_serving_fuzz.py: the /offers contract's cross-field rules, which JSON Schema
cannot state (the spec says them in the fields' descriptions, and the service refuses a request that breaks them with
400 naming the field): a return names the `order_id` of a purchase in the same request, comes back on or after it,
and a purchase's returns add up to at most its amount; an instalment is due, and paid, on or after its credit was
issued. Each generated body is mapped onto those rules; every other value stays as generated, so every check still
runs on everything the schema alone describes."""

from __future__ import annotations

from datetime import UTC, datetime

import schemathesis


@schemathesis.hook
def map_case(context, case):
    """Every phase's positive cases (coverage, examples, fuzzing); negative ones stay as generated, so a value the
    schema forbids is never repaired into an allowed one."""
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    if mode is not None and getattr(mode, "value", str(mode)) != "positive":
        return case
    if isinstance(case.body, list):
        case.body = [consistent(b) for b in case.body]
    elif isinstance(case.body, dict):
        case.body = consistent(case.body)
    return case


def consistent(req):
    """One request with its returns and repayments made consistent with its history (in place; returned)."""
    if not isinstance(req, dict):
        return req
    returns, repayments = req.get("returns"), req.get("repayments")
    if isinstance(returns, list) and returns:
        purchases = [p for p in req.get("history") or [] if isinstance(p, dict)] if isinstance(
            req.get("history"), list) else []
        if not purchases:
            req["returns"] = []
        else:
            for j, p in enumerate(purchases):
                p["order_id"] = f"order-{j}"
            per_purchase = [0] * len(purchases)
            for i in range(len(returns)):
                per_purchase[i % len(purchases)] += 1
            for i, r in enumerate(returns):
                if not isinstance(r, dict):
                    continue
                j = i % len(purchases)
                p = purchases[j]
                r["order_id"] = p["order_id"]
                if _later(p.get("timestamp"), r.get("returned_at")) or not isinstance(r.get("returned_at"), str):
                    r["returned_at"] = p.get("timestamp")
                cap, got = p.get("amount"), r.get("amount")
                if _number(cap) and _number(got):
                    r["amount"] = min(float(got), float(cap) / per_purchase[j])
    if isinstance(repayments, list):
        for r in repayments:
            if not isinstance(r, dict):
                continue
            for key in ("due_date", "paid_at"):
                if r.get(key) is not None and _later(r.get("issued_at"), r.get(key)):
                    r[key] = r.get("issued_at")
    return req


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and v >= 0


def _instant(v):
    if not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _later(a, b) -> bool:
    """Whether instant `a` is after instant `b` (False where either is unreadable: left as generated)."""
    ta, tb = _instant(a), _instant(b)
    return ta is not None and tb is not None and ta > tb
