"""Batch scoring: the served models over a whole customer base, for nightly reminder and campaign runs.

`offerlab score {timing|discount|credit|offers}` loads the same MLflow models the services use
(`models:/offerlab-<family>@champion` unless told otherwise) and calls each pyfunc's vectorised
`predict` on chunks of customers, so memory stays bounded by the chunk while one pass covers millions.

Inputs (parquet):
- timing, discount, offers: a transactions table (customer_id, timestamp, optional amount, category).
  Without `amount` (a date-only purchase log) a timing model trained on dates alone scores as usual; a
  model that needs amounts (timing trained with them, uplift or credit on spend features) is refused with
  an error naming the column;
  discount and offers may add a customers table (customer_id + the static attributes the uplift model
  was trained on, e.g. region, age_band, signup_channel, acquired_at).
- credit: an applications table (application fields + customer_id, applied_at); behaviour features
  come from the transactions table when the model uses them.
- offers: one row per customer in the transactions: timing + discount answers, and the credit answer
  for the customer's latest application when an applications table is given.

Budget (discount, offers): `budget=B` (`--budget`) allocates the discounts across the WHOLE file, never chunk by
chunk: every chunk's answers carry each level's expected revenue and conversion, so once all chunks are scored
the (customers, levels) expected incremental profit and spend matrices go through one `policy.allocate` (total
expected spend <= B; the same choice as an in-memory allocation of the file) and the chosen-level columns are
rewritten. Without a budget each customer gets argmax(profit - price x spend) at the model's stored
`price_of_spend` (training with a budget stores it; plain argmax when none). The summary reports `budget`,
`spend` (expected, of the chosen levels), `price_of_spend` and where that price came from (`price_source`).

The output parquet carries raw customer ids (it is for the user); logs carry only counts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError
from offerlab.registry import CHAMPION, alias_uri

log = logging.getLogger(__name__)
# command family -> registered model family
MODEL_FAMILY = {"timing": "timing", "discount": "uplift", "credit": "credit"}
COMMANDS = (*MODEL_FAMILY, "offers")
SPARK_FLAGS = {"master": "--spark-master", "conf": "--spark-conf", "partition_by": "--partition-by"}
TX_COLUMNS = ("customer_id", "timestamp")
TX_OPTIONAL = ("amount", "category", "payment_method")  # payment_method: the credit model's payment-method mix
LINE_OPTIONAL = ("order_id", "item_id", "item_name", "quantity")  # a line-level file: the basket's input too
APP_COLUMNS = ("customer_id", "applied_at")


@dataclass
class ScoreInputs:
    """The tables one scoring run reads; `None` where the command does not use one."""

    transactions: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    applications: pd.DataFrame | None = None
    returns: pd.DataFrame | None = None  # timing: purchases net of them; credit: the ret_* features
    repayments: pd.DataFrame | None = None  # credit: the rep_* features


def read_table(path: str | Path, table: str, required: tuple[str, ...], optional: tuple[str, ...] | None = None
               ) -> pd.DataFrame:
    """Read a parquet table and check that it has the required columns (error names file and column).

    With `optional`, only the required and optional columns are read (memory at millions of rows).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{table} file {path} does not exist")
    try:
        cols = None
        if optional is not None:
            have = set(pq.read_schema(path).names)
            cols = [c for c in (*required, *optional) if c in have]
        df = pd.read_parquet(path, columns=cols)
    except Exception as e:  # noqa: BLE001 - any reader failure means "not a parquet table we can use"
        raise ValueError(f"{table} file {path} is not a readable parquet file: {e}") from None
    check_columns(table, path, list(df.columns), required)
    if len(df) == 0:
        raise DataValidationError(table, None, f"{path} has no rows")
    df["customer_id"] = df["customer_id"].astype(str)
    return df


def check_columns(table: str, path: str | Path, columns: list[str], required: tuple[str, ...]) -> None:
    """Refuse a table without a required column, naming the table, the column, the file and what it has."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataValidationError(table, missing[0], f"column missing from {path} (has {columns})")


def resolve_uri(family: str, model_uri: str | None = None, alias: str = CHAMPION) -> str:
    """An explicit MLflow URI, else the registry alias of the family's registered model."""
    return model_uri or alias_uri(MODEL_FAMILY[family], alias)


def load_model(family: str, model_uri: str | None = None, alias: str = CHAMPION):
    """The family's MLflow pyfunc model (clear error when the registry has no such model/alias)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from offerlab import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    uri = resolve_uri(family, model_uri, alias)
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as e:
        raise model_error(family, uri, e) from None


def model_error(family: str, uri: str, e: Exception) -> ValueError:
    """The refusal of a model that cannot be loaded (unknown alias, version, run or path)."""
    from offerlab import tracking

    return ValueError(f"cannot load the {family} model {uri} from {tracking.tracking_uri()}: "
                      f"{str(e).splitlines()[0]}")


def default_as_of(transactions: pd.DataFrame) -> pd.Timestamp:
    """One scoring instant for the whole base: the end of the day of the latest transaction."""
    from offerlab.timing.baselines import end_of_day

    return end_of_day(pd.to_datetime(transactions["timestamp"]).max())


def parse_as_of(value: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"--as-of {value!r} is not a date or date-time (e.g. 2024-12-31T23:59:59)") from None


# ------------------------------------------------------------------------------------------ chunking
def customer_chunks(chunk_size: int, transactions: pd.DataFrame | None,
                    applications: pd.DataFrame | None = None
                    ) -> Iterator[tuple[int, pd.DataFrame | None, pd.DataFrame | None]]:
    """(number of customers, transactions, applications) of consecutive groups of `chunk_size` customers.

    One factorisation and one stable sort of all rows; each chunk is then a contiguous slice, so the
    cost is O(rows log rows) once, not once per chunk.
    """
    frames = [f for f in (transactions, applications) if f is not None]
    ids = pd.concat([f["customer_id"] for f in frames], ignore_index=True)
    codes, uniques = pd.factorize(ids)
    parts, start = [], 0
    for f in (transactions, applications):
        if f is None:
            parts.append(None)
            continue
        c = codes[start:start + len(f)]
        start += len(f)
        order = np.argsort(c, kind="stable")
        parts.append((f.iloc[order].reset_index(drop=True), c[order]))
    for k0 in range(0, len(uniques), chunk_size):
        k1 = k0 + chunk_size
        out = []
        for p in parts:
            if p is None:
                out.append(None)
                continue
            f, c = p
            lo, hi = np.searchsorted(c, [k0, k1])
            out.append(f.iloc[lo:hi])
        yield min(k1, len(uniques)) - k0, out[0], out[1]


def n_customers(inputs: ScoreInputs) -> int:
    frames = [f for f in (inputs.transactions, inputs.applications) if f is not None]
    return int(pd.concat([f["customer_id"] for f in frames]).nunique())


# ------------------------------------------------------------------------------------- per family
def no_amounts_error(family: str, what: str, path: str | Path | None = None) -> DataValidationError:
    where = f" ({path})" if path else ""
    return DataValidationError("transactions", "amount", f"the {family} model was trained with {what}; "
                               f"the transactions to score{where} have no 'amount' column")


def amounts_needed(family: str, model) -> str | None:
    """What of a loaded model needs purchase amounts ("amounts", "purchase-amount features [...]"), or None."""
    from offerlab.credit.data import needs_amount
    from offerlab.data.features import is_amount_feature

    inner = model.unwrap_python_model()
    if family == "timing":
        return "amounts" if getattr(getattr(inner, "predictor", None), "uses_amount", True) else None
    if family == "uplift":
        cols = [c for c in inner.model.encoder.raw_columns if is_amount_feature(c)]
    else:
        cols = [c for c in inner.model.feature_columns if needs_amount(c)]
    return f"purchase-amount features {cols[:10]}" if cols else None


def check_amounts(models: dict, inputs: ScoreInputs, path: str | Path) -> None:
    """Refuse, before any scoring, a transactions file without `amount` for a model that needs amounts."""
    tx = inputs.transactions
    if tx is None or "amount" in tx.columns:
        return
    for key, model in models.items():
        if key == "credit" and inputs.applications is not None and any(
                c.startswith("beh_") for c in inputs.applications.columns):
            continue  # behaviour features come with the applications; the transactions are not read
        what = amounts_needed(MODEL_FAMILY[key], model)
        if what:
            raise no_amounts_error(MODEL_FAMILY[key], what, path)


def score_timing(model, tx: pd.DataFrame, as_of: pd.Timestamp, n_samples: int = 100,
                 returns: pd.DataFrame | None = None) -> pd.DataFrame:
    """Next-purchase answers per customer (the timing pyfunc at one instant for every chunk); with `returns`, from
    the purchases net of those made by as_of (an order returned in full is no purchase), unless the model was trained
    keeping returned orders as purchases (`data.returns: keep`): a history is read the way training read it."""
    if returns is not None and getattr(model.unwrap_python_model(), "returns", None) != "keep":
        from offerlab.timing.returns import lines_net_of_returns, net_of_returns

        tx = lines_net_of_returns(tx, returns, as_of) if "item_id" in tx.columns else net_of_returns(tx, returns,
                                                                                                      as_of)[0]
        if tx.empty:  # every purchase of this chunk came back: nobody to answer for
            return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    if "amount" not in tx.columns:  # checked here too: a model logged before amounts were optional requires them
        predictor = getattr(model.unwrap_python_model(), "predictor", None)
        if getattr(predictor, "uses_amount", True):
            raise no_amounts_error("timing", "amounts")
    # a line-level file (item_id): the pyfunc scores its orders and, where it has a basket part, adds the basket
    return model.predict(tx, params={"as_of": str(as_of), "n_samples": int(n_samples)})


def as_orders(tx: pd.DataFrame) -> pd.DataFrame:
    """The orders of a line-level transactions chunk (one row per item bought); an order-level one as it is."""
    if "item_id" not in tx.columns:
        return tx
    from offerlab.timing.pyfunc import orders_and_lines

    return orders_and_lines(tx)[0]


def discount_features(model, tx: pd.DataFrame, customers: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame:
    """The uplift model's raw feature columns for each customer in `tx` (plus customer_id), as in training."""
    from offerlab.data.features import is_amount_feature
    from offerlab.uplift.data import synth_features

    ids = pd.unique(tx["customer_id"])
    cust = customers[customers["customer_id"].isin(ids)] if customers is not None else None
    feats = synth_features(tx, cust, as_of, ids)
    raw = model.unwrap_python_model().model.encoder.raw_columns
    for c in raw:
        if c not in feats.columns and c.startswith("cat_share_"):
            feats[c] = 0.0  # no purchase of that category in this chunk
    missing = [c for c in raw if c not in feats.columns]
    if "amount" not in tx.columns and any(is_amount_feature(c) for c in missing):
        raise no_amounts_error("uplift", f"purchase-amount features {[c for c in missing if is_amount_feature(c)]}")
    if missing:
        raise DataValidationError("customers", missing[0], "feature the uplift model needs: pass --customers with "
                                  "this attribute (or a model trained without it)")
    return feats[raw].set_index(pd.Index(ids.astype(str), name="customer_id"))


def score_discount(model, tx: pd.DataFrame, customers: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame:
    """Which discount level, if any, per customer, with expected profit (the uplift pyfunc)."""
    feats = discount_features(model, tx, customers, as_of)
    # the logged signature has no customer_id (MLflow would drop it): rows keep their order, ids go back after
    out = model.predict(feats.reset_index(drop=True))
    out.insert(0, "customer_id", feats.index.to_numpy())
    return out


def score_credit(model, apps: pd.DataFrame, tx: pd.DataFrame | None, returns: pd.DataFrame | None = None,
                 repayments: pd.DataFrame | None = None) -> pd.DataFrame:
    """PD, score, grade, reasons and terms per application (behaviour, return and repayment features from `tx`,
    `returns` and `repayments` when the model uses them)."""
    cm = model.unwrap_python_model().model
    uses = getattr(cm, "behaviour_features", None)
    feats = cm.features(apps, tx, returns=returns, repayments=repayments) if uses is not None else cm.features(apps, tx)
    beh = [c for c in feats.columns if c.startswith(("beh_", "ret_", "rep_")) and c not in apps.columns]
    out = model.predict(apps.drop(columns=["default"], errors="ignore").join(feats[beh]))
    for i, c in enumerate(("customer_id", "application_id")):
        if c in apps and c not in out:
            out.insert(i, c, apps[c].to_numpy())
    return out


def latest_application(apps: pd.DataFrame) -> pd.DataFrame:
    """Each customer's most recent application (offers answers one credit decision per customer)."""
    apps = apps.assign(applied_at=pd.to_datetime(apps["applied_at"]))
    return apps.sort_values("applied_at", kind="stable").drop_duplicates("customer_id", keep="last")


def _prefixed(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return df.rename(columns={c: f"{prefix}_{c}" for c in df.columns if c != "customer_id"})


def score_offers(models: dict, tx: pd.DataFrame, customers: pd.DataFrame | None, apps: pd.DataFrame | None,
                 as_of: pd.Timestamp, n_samples: int = 100, returns: pd.DataFrame | None = None,
                 repayments: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per customer: timing_*, discount_* and (with applications) credit_* columns; a customer whose every
    purchase came back has no timing answer (empty timing_* columns) but keeps the others."""
    timing = _prefixed(score_timing(models["timing"], tx, as_of, n_samples, returns), "timing")
    out = pd.DataFrame({"customer_id": pd.unique(tx["customer_id"])}).merge(timing, on="customer_id", how="left",
                                                                            validate="one_to_one")
    orders = as_orders(tx)
    disc = _prefixed(score_discount(models["discount"], orders, customers, as_of), "discount")
    out = out.merge(disc, on="customer_id", how="left", validate="one_to_one")
    if apps is not None and len(apps):
        credit = _prefixed(score_credit(models["credit"], apps, orders, returns, repayments), "credit")
        out = out.merge(credit, on="customer_id", how="left", validate="one_to_one")
    return out


# ------------------------------------------------------------------------------------------- budget
BUDGET_COMMANDS = ("discount", "offers")


def check_budget(budget: float | None, command: str) -> float | None:
    """A finite budget >= 0 for a command that allocates discounts, else a ValueError naming --budget."""
    if budget is None:
        return None
    if command not in BUDGET_COMMANDS:
        raise ValueError(f"--budget allocates discounts: it applies to `score discount` and `score offers`, "
                         f"not `score {command}`")
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"--budget must be a number (total expected spend), got {budget!r}") from None
    if not np.isfinite(b) or b < 0:
        raise ValueError(f"--budget must be a finite number >= 0 (total expected spend), got {budget!r}")
    return b


def discount_matrices(frame: pd.DataFrame, model, prefix: str = "") -> dict:
    """The uplift answers' per-level matrices (rows of `frame` with a discount answer): expected incremental
    profit and spend (n, L) by `level_economics` with the model's own policy and rates, as in its `predict`,
    plus conversion and revenue, `rows` (positions in `frame`) and `levels`."""
    from offerlab.uplift.pyfunc import frame_predictions

    inner = model.unwrap_python_model()
    levels, policy = list(inner.model.levels), inner.policy
    pred = frame_predictions(frame, levels, prefix)  # with returned / p_return where the model predicts returns
    ok = np.logical_and.reduce([np.isfinite(v).all(axis=1) for v in pred.values()])
    rows = None if ok.all() else np.flatnonzero(ok)
    if rows is not None:
        pred = {k: v[rows] for k, v in pred.items()}
    profit, spend = policy.level_matrices(pred, levels, inner.model.discounts)
    return {"profit": profit, "spend": spend, "conversion": pred["conversion"], "revenue": pred["revenue"],
            "returned": pred.get("returned"), "rows": rows, "levels": levels, "policy": policy}


def choose_discounts(frame: pd.DataFrame, model, budget: float | None, prefix: str = "") -> dict:
    """The discount of every row of the assembled answers `frame` (rewritten in place): one `allocate` over all
    rows under `budget`, else argmax(profit - price x spend) at the model's stored price of spend (the pyfunc's
    own choice; plain argmax without one). Returns the summary's budget, spend, price_of_spend, price_source."""
    m = discount_matrices(frame, model, prefix)
    choice, price, source = whole_file_choice(m, budget)
    apply_matrices_choice(frame, m, choice, prefix)
    spend = m["spend"]
    used = float(spend[np.arange(len(choice)), choice].sum())
    log.info("discount choice over %d customers (%s): %d treated%s", len(choice), source, int((choice > 0).sum()),
             "; the budget binds" if budget is not None and price > 0 else "")
    return {"budget": budget, "spend": used, "price_of_spend": float(price), "price_source": source}


def whole_file_choice(m: dict, budget: float | None) -> tuple[np.ndarray, float, str]:
    """(level index per row, price of spend, its source) over the `discount_matrices` of the whole file: one
    `allocate` under `budget`, else argmax(profit - price x spend) at the model's stored price (0: plain argmax)."""
    from offerlab.uplift.policy import allocate, choose_at_price
    from offerlab.uplift.pyfunc import stored_price

    if budget is not None:
        a = allocate(m["profit"], m["spend"], budget)
        return a.choice, a.price, "budget"
    price = stored_price(m["policy"])
    return choose_at_price(m["profit"], m["spend"], price), price, "model" if price > 0 else "none"


def apply_matrices_choice(frame: pd.DataFrame, m: dict, choice: np.ndarray, prefix: str = "") -> None:
    """Rewrite the chosen-level columns of `frame` (in place) for `choice` over the rows `m` describes."""
    from offerlab.uplift.pyfunc import apply_choice

    apply_choice(frame, choice, m["profit"], m["spend"], m["conversion"], m["revenue"], m["levels"], prefix,
                 m["rows"], m.get("returned"))


# ------------------------------------------------------------------------------------------- runner
def tx_optional(command: str) -> tuple[str, ...]:
    """The optional transactions columns `command` reads (a line-level file's too for timing and offers)."""
    return TX_OPTIONAL + (LINE_OPTIONAL if command in ("timing", "offers") else ())


def kept_tx_columns(columns: list[str]) -> list[str]:
    """The transactions columns kept of those read: without `item_id` the file is order-level and its line
    columns are dropped."""
    return [c for c in columns if "item_id" in columns or c not in LINE_OPTIONAL]


def read_inputs(command: str, input_path: str | Path, customers_path: str | Path | None = None,
                applications_path: str | Path | None = None, transactions_path: str | Path | None = None,
                returns_path: str | Path | None = None, repayments_path: str | Path | None = None) -> ScoreInputs:
    """The tables `command` needs; credit's --input is the applications table, the others' transactions."""
    if (returns_path or repayments_path) and command == "discount":
        raise ValueError("--returns / --repayments: `score discount` reads neither (the uplift model prices "
                         "returns from its own return model); they apply to timing, credit and offers")
    if repayments_path and command == "timing":
        raise ValueError("--repayments: `score timing` does not read them; they apply to credit and offers")
    if command == "credit":
        apps = read_table(input_path, "applications", APP_COLUMNS)
        tx = (read_table(transactions_path, "transactions", TX_COLUMNS, TX_OPTIONAL + ("order_id",))
              if transactions_path else None)  # order_id: what a return refers to
        if returns_path and tx is None:
            raise ValueError("--returns needs --transactions: a return names the order (order_id) it sends back")
        if tx is not None:  # only applicants' histories matter; every chunk then holds applications
            tx = tx[tx["customer_id"].isin(pd.unique(apps["customer_id"]))]
        return ScoreInputs(transactions=tx, applications=apps,
                           **history_tables(returns_path, repayments_path, tx, apps["customer_id"]))
    tx = read_table(input_path, "transactions", TX_COLUMNS, tx_optional(command) + (("order_id",) if returns_path
                                                                                    else ()))
    tx = tx[[c for c in tx.columns if c in kept_tx_columns(list(tx.columns)) or (returns_path and c == "order_id")]]
    cust = read_table(customers_path, "customers", ("customer_id",)) if customers_path else None
    apps = None
    if applications_path and command == "offers":
        apps = latest_application(read_table(applications_path, "applications", APP_COLUMNS))
        apps = apps[apps["customer_id"].isin(pd.unique(tx["customer_id"]))]
    return ScoreInputs(transactions=tx, customers=cust, applications=apps,
                       **history_tables(returns_path, repayments_path, tx, tx["customer_id"]))


def history_tables(returns_path: str | Path | None, repayments_path: str | Path | None, tx: pd.DataFrame | None,
                   customers: pd.Series) -> dict[str, pd.DataFrame]:
    """The --returns and --repayments tables, validated like a data spec's (a return of an unknown order, before
    its purchase or above its amount refused with the row named), kept to the scored customers."""
    from offerlab.data.schema import REPAYMENTS, RETURNS, check_returns, validate_table

    keep = set(pd.unique(customers.astype(str)))
    out = {}
    if returns_path:
        r = read_table(returns_path, "returns", tuple(RETURNS.required),
                       tuple(c.name for c in RETURNS.columns if not c.required))
        r = validate_table(r, "returns")  # the user's file as given, then the scored customers' rows
        out["returns"] = check_returns(r[r["customer_id"].isin(keep)].reset_index(drop=True), tx)
    if repayments_path:
        r = read_table(repayments_path, "repayments", tuple(REPAYMENTS.required),
                       tuple(c.name for c in REPAYMENTS.columns if not c.required))
        r = validate_table(r, "repayments")
        out["repayments"] = r[r["customer_id"].isin(keep)].reset_index(drop=True)
    return out


def load_models(command: str, model_uri: str | None = None, alias: str = CHAMPION) -> dict:
    """family -> pyfunc model for the command (`model_uri` only for a single-family command)."""
    if command == "offers":
        if model_uri:
            raise ValueError("--model-uri names one model; offers uses all three (use --alias)")
        return {f: load_model(f, None, alias) for f in MODEL_FAMILY}
    return {command: load_model(command, model_uri, alias)}


def score_chunk(command: str, models: dict, inputs: ScoreInputs, tx: pd.DataFrame | None,
                apps: pd.DataFrame | None, as_of: pd.Timestamp | None, n_samples: int) -> pd.DataFrame:
    if command == "timing":
        return score_timing(models["timing"], tx, as_of, n_samples, inputs.returns)
    if command == "discount":
        return score_discount(models["discount"], as_orders(tx), inputs.customers, as_of)
    if command == "credit":
        return score_credit(models["credit"], apps, None if tx is None else as_orders(tx), inputs.returns,
                            inputs.repayments)
    return score_offers(models, tx, inputs.customers, apps, as_of, n_samples, inputs.returns, inputs.repayments)


def check_output(output: str | Path, inputs: list[str | Path | None], force: bool) -> Path:
    out = Path(output)
    if out.is_dir():
        raise ValueError(f"output {out} is a folder; the local engine writes one parquet file (--engine spark "
                         "writes a folder)")
    if out.suffix != ".parquet":
        raise ValueError(f"output {out} must end in .parquet")
    if any(p and out.resolve() == Path(p).resolve() for p in inputs):
        raise ValueError(f"output {out} is one of the inputs; choose another path")
    if out.exists() and not force:
        raise ValueError(f"output {out} exists; pass --force to replace it")
    return out


def write_atomic(df: pd.DataFrame, out: Path) -> None:
    """Write beside the target and rename: a failed run never leaves a half-written or clobbered output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def spec_inputs(command: str, spec) -> ScoreInputs:
    """The tables `command` scores, from a data spec (`offerlab.data.spec.SpecData`): its transactions, its
    customers' attributes joined with the campaign log's own kept columns (the discount model may use both), and
    (credit, offers) its applications, each customer's latest for offers."""
    if command == "credit":
        apps = spec.table("applications")
        tx = spec.table("transactions") if spec.has("transactions") else None
        return ScoreInputs(transactions=tx, applications=apps, **_returns_tables(spec))
    tx = spec.table("transactions")
    cust = spec.table("customers") if spec.has("customers") else None
    if spec.has("campaign"):
        block = spec.spec.tables["campaign"]
        kept = [c for c in block.keep if c not in block.columns]
        if kept:
            own = spec.table("campaign")[["customer_id", *kept]]
            cust = own if cust is None else cust.merge(own, on="customer_id", how="outer", validate="one_to_one")
    apps = None
    if command == "offers" and spec.has("applications"):
        apps = latest_application(spec.table("applications"))
        apps = apps[apps["customer_id"].isin(pd.unique(tx["customer_id"]))]
    return ScoreInputs(transactions=tx, customers=cust, applications=apps, **_returns_tables(spec))


def _returns_tables(spec) -> dict:
    """The spec's returns and repayments tables, where it has them."""
    return {t: spec.table(t) for t in ("returns", "repayments") if spec.has(t)}


def run_score(command: str, input_path: str | Path | None, output: str | Path, *,
              customers: str | Path | None = None, applications: str | Path | None = None,
              transactions: str | Path | None = None, returns: str | Path | None = None,
              repayments: str | Path | None = None, model_uri: str | None = None, alias: str = CHAMPION,
              as_of: str | None = None, chunk_size: int = 50_000, n_samples: int = 100, force: bool = False,
              progress: bool = True, inputs: ScoreInputs | None = None,
              model_uris: dict[str, str] | None = None, budget: float | None = None, engine: str = "local",
              **spark_options) -> dict:
    """Score every customer of the input and write one parquet; returns counts and timings (no ids).

    `inputs`: tables already read (e.g. `spec_inputs` of a data spec) instead of the parquet paths;
    `model_uris`: family -> MLflow URI for every family the command uses (e.g. the runs just trained);
    `budget` (discount, offers): total expected spend, allocated across the whole file (see the module doc);
    `engine="spark"`: the same scoring on Apache Spark (`offerlab.serving.spark_score.run_spark_score`, which
    takes `spark`, `master`, `conf` and `partition_by` in `spark_options`); the paths may then be any Spark can
    read and `output` is a parquet folder."""
    from tqdm.auto import tqdm

    if command not in COMMANDS:
        raise ValueError(f"unknown score command {command!r}; expected one of {list(COMMANDS)}")
    if engine == "spark":
        if returns or repayments:
            raise ValueError("--returns / --repayments are read by the local engine only (--engine local, or a data "
                             "spec): the Spark engine does not join them yet")
        if inputs is not None:
            raise ValueError("--engine spark reads parquet paths (--input, --customers, --applications, "
                             "--transactions); a data spec (--data) is scored by the local engine")
        from offerlab.serving.spark_score import run_spark_score

        return run_spark_score(command, input_path, output, customers=customers, applications=applications,
                               transactions=transactions, model_uri=model_uri, alias=alias, as_of=as_of,
                               chunk_size=chunk_size, n_samples=n_samples, force=force, progress=progress,
                               model_uris=model_uris, budget=budget, **spark_options)
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}; expected 'local' or 'spark'")
    given = [SPARK_FLAGS.get(k, k) for k, v in spark_options.items() if v not in (None, (), {}, [])]
    if given:
        raise ValueError(f"{', '.join(given)}: for --engine spark only")
    budget = check_budget(budget, command)
    __import__("offerlab.monitor.decision_log").monitor.decision_log.settings_from_env()  # refused before scoring
    out = check_output(output, [input_path, customers, applications, transactions, returns, repayments], force)
    t0 = time.perf_counter()
    if inputs is None:
        if input_path is None:
            raise ValueError("give --input (a parquet file) or --data (a data spec)")
        inputs = read_inputs(command, input_path, customers, applications, transactions, returns, repayments)
    when = None
    if command != "credit":
        when = parse_as_of(as_of) if as_of else default_as_of(inputs.transactions)
    if model_uris:
        models = {f: load_model(f, model_uris[MODEL_FAMILY[f]]) for f in (MODEL_FAMILY if command == "offers"
                                                                          else [command])}
    else:
        models = load_models(command, model_uri, alias)
    check_amounts(models, inputs, transactions if command == "credit" else input_path)
    t_load = time.perf_counter() - t0
    total = n_customers(inputs)
    parts = []
    with tqdm(total=total, unit="customer", disable=not progress, desc=f"score {command}") as bar:
        for n, tx, apps in customer_chunks(chunk_size, inputs.transactions, inputs.applications):
            parts.append(score_chunk(command, models, inputs, tx, apps, when, n_samples))
            bar.update(n)
    result = pd.concat(parts, ignore_index=True)
    economics = {}
    if command in BUDGET_COMMANDS:  # one choice over the whole file (never chunk by chunk)
        economics = choose_discounts(result, models["discount"], budget, "discount_" if command == "offers" else "")
    write_atomic(result, out)
    seconds = time.perf_counter() - t0
    summary = {"command": command, "customers": total, "rows": len(result), "seconds": round(seconds, 3),
               "load_seconds": round(t_load, 3), "customers_per_s": round(total / max(seconds - t_load, 1e-9), 1),
               "as_of": str(when) if when is not None else None, "output": str(out), **economics}
    log.info("scored %d customers (%d rows) with %s in %.1fs", total, len(result), command, seconds)
    from offerlab.monitor.records import log_scored  # the decision log (OFFERLAB_DECISION_LOG), when configured

    logged = log_scored(command, result, inputs, models, when, seconds)
    if logged is not None:
        summary["decision_log"] = logged
    return summary
