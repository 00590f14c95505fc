"""`offerlab data init FILES...`: a commented draft data spec, from the files' headers and a sample of rows.

Each file is read once (a sample of `SAMPLE_ROWS` rows), its table guessed from its columns (a campaign log has a
column of a few levels and a 0/1-like outcome; credit applications a default-like label; a purchase log repeats
customers over dates; a customer table has one row per id), and its columns matched to the canonical ones by name
and content. What cannot be guessed is left blank with a comment saying what to put there: every discount rate,
whether revenue is net or gross, which label value means default, the margin, the contact cost. The spec refuses
to run until those are filled in, so nothing of money or meaning is guessed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

SAMPLE_ROWS = 20_000
NAME_HINTS = {
    "customer_id": r"^(customer|client|user|member|buyer|cust|shopper)s?$|(customer|client|user|member|buyer|account|"
                   r"cust|shopper)[ _-]?(id|no|nr|ref|number|key|code)$|^id$",
    "timestamp": r"(time|date|ordered|purchase|created|day|ts)",
    "amount": r"(amount|value|total|price|spend|revenue|sales|paid|basket|refund)",
    "category": r"(categ|dept|department|group|class|segment|family|item|product)",
    "quantity": r"(qty|quantity|units|count|items|number_of)",
    "order_id": r"(order|invoice|receipt|basket|transaction)[ _-]?(id|no|nr|ref|number)?$",
    "treatment": r"(treat|arm|variant|offer|promo|group|segment|campaign|level|cell)",
    "conversion": r"(conver|bought|purchase|buy|respon|visit|redeem|outcome)",
    "revenue": r"(revenue|spend|sales|value|amount|gmv)",
    "application_id": r"(application|app|loan|contract|credit)[ _-]?(id|no|nr|ref|number)?$",
    "applied_at": r"(appl|opened|date|created|submitted)",
    "default": r"(default|bad|outcome|target|label|delinq|charged|creditab|status)",
    "payment_method": r"(pay[ _-]?(ment)?[ _-]?(method|type|mode|by|with|via)|paid[ _-]?(with|by|via)|tender|instrument)",
    "returned_revenue": r"(return|refund)",
    "returned_at": r"(return|refund|back)",
    "credit_id": r"(loan|credit|contract|plan|agreement|order)[ _-]?(id|no|nr|ref|number)?$",
    "issued_at": r"(issue|start|open|disburs|grant|since|from)",
    "due_date": r"due",
    "paid_at": r"(paid|settled|repaid)",
    "amount_due": r"due",
    "amount_paid": r"(paid|repaid|settled)",
}
TABLES = ("transactions", "customers", "campaign", "applications", "returns", "repayments")


def _sample(path: Path) -> pd.DataFrame:
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        f = pq.ParquetFile(path)
        return f.read_row_group(0).to_pandas().head(SAMPLE_ROWS) if f.num_row_groups else pd.DataFrame()
    return pd.read_csv(path, nrows=SAMPLE_ROWS, sep=None, engine="python")


def _sep(path: Path) -> str | None:
    """The CSV delimiter, when it is not a comma (the draft's read_options)."""
    if path.suffix in (".parquet", ".pq"):
        return None
    import csv

    with open(path, newline="") as f:
        head = f.read(20_000)
    try:
        sep = csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        return None
    return None if sep == "," else sep


def _is_date(s: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if pd.api.types.is_numeric_dtype(s):
        v = s.dropna()
        return len(v) > 0 and bool(((v >= 19000101) & (v <= 21001231) & (v % 1 == 0)).all())  # YYYYMMDD
    v = s.dropna().astype(str).head(500)
    if len(v) == 0 or v.str.len().median() < 6:
        return False
    parsed = pd.to_datetime(v, errors="coerce", format="mixed", utc=True)
    return bool(parsed.notna().mean() > 0.95)


def _has_offsets(s: pd.Series) -> bool:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return True
    v = s.dropna().astype(str).head(200)
    return bool(v.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).mean() > 0.5) if len(v) else False


def _binary_values(s: pd.Series) -> list | None:
    vals = pd.unique(s.dropna())
    return sorted(vals.tolist(), key=str) if len(vals) == 2 else None


def _match(df: pd.DataFrame, canonical: str, taken: set[str], test=None) -> str | None:
    """The column whose name fits `canonical` (the shortest such name: `segment` before `history_segment`)."""
    found = [c for c in df.columns if c not in taken and re.search(NAME_HINTS[canonical], str(c).strip().lower())
             and (test is None or test(df[c]))]
    return min(found, key=lambda c: len(str(c))) if found else None


def guess_table(df: pd.DataFrame) -> str:
    """transactions, customers, campaign, applications, returns or repayments, from the columns' names and
    content."""
    names = [str(c).lower() for c in df.columns]
    few_levels = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c]) and 2 <= df[c].nunique() <= 12
                  and re.search(NAME_HINTS["treatment"], str(c).lower())]
    binary = [c for c in df.columns if _binary_values(df[c]) is not None]
    if any(re.search(NAME_HINTS["default"], n) and c in binary for n, c in zip(names, df.columns, strict=True)) and \
            not few_levels:
        return "applications"
    if few_levels and binary:
        return "campaign"
    if any(re.search(r"due", n) for n in names) and any(re.search(NAME_HINTS["amount_paid"], n) for n in names):
        return "repayments"  # instalments: what was due, and when it was paid
    if any(re.search(r"(return|refund)", n) for n in names):
        return "returns"
    id_col = _match(df, "customer_id", set()) or df.columns[0]
    dates = [c for c in df.columns if _is_date(df[c])]
    if dates and df[id_col].duplicated().any():
        return "transactions"
    return "customers"


def _block(df: pd.DataFrame, table: str, path: Path, spec_dir: Path) -> tuple[dict, list[str]]:
    """The table block (as data) and comment lines for what the user must check or fill."""
    taken: set[str] = set()
    cols: dict[str, str] = {}
    notes: list[str] = []

    def pick(canonical: str, test=None) -> None:
        c = _match(df, canonical, taken, test)
        if c is not None:
            cols[canonical] = c
            taken.add(c)

    numeric = pd.api.types.is_numeric_dtype
    pick("customer_id")
    if table == "transactions":
        pick("timestamp", _is_date)
        pick("order_id")
        pick("amount", lambda s: numeric(s) and not _is_date(s))
        pick("quantity", lambda s: numeric(s) and (s.dropna() % 1 == 0).all())
        pick("payment_method", lambda s: not numeric(s))
        pick("category", lambda s: not numeric(s))
        if "amount" not in cols:
            notes.append("no amount column found: timing trains on dates alone; map `amount` if the log has one")
    elif table == "campaign":
        pick("treatment", lambda s: 2 <= s.nunique() <= 12)
        pick("conversion", lambda s: _binary_values(s) is not None)
        pick("revenue", lambda s: numeric(s))
        pick("returned_revenue", lambda s: numeric(s))
    elif table == "returns":
        pick("order_id")
        pick("returned_at", _is_date)
        pick("amount", lambda s: numeric(s) and not _is_date(s))
    elif table == "repayments":
        pick("credit_id")
        pick("due_date", _is_date)
        pick("paid_at", _is_date)
        pick("issued_at", _is_date)
        pick("amount_due", lambda s: numeric(s) and not _is_date(s))
        pick("amount_paid", lambda s: numeric(s) and not _is_date(s))
    elif table == "applications":
        pick("application_id")
        pick("applied_at", _is_date)
        pick("default", lambda s: _binary_values(s) is not None)
    required = {"transactions": ("customer_id", "timestamp"), "customers": ("customer_id",),
                "campaign": ("treatment", "conversion", "revenue"), "applications": ("default",),
                "returns": ("customer_id", "order_id", "returned_at", "amount"),
                "repayments": ("customer_id", "credit_id", "issued_at", "due_date", "paid_at", "amount_due",
                               "amount_paid")}[table]
    for canonical in required:
        if canonical not in cols:
            cols[canonical] = "FILL-IN"
            notes.append(f"columns.{canonical}: no column looked like it: name yours")
    if "customer_id" not in cols and table in ("campaign", "applications"):
        notes.append("no customer id column found: rows are numbered (link to a purchase log needs columns.customer_id)")
    keep = [c for c in df.columns if c not in taken]
    if table == "campaign":  # an outcome kept as a feature would leak the answer into the model
        outcome_like = [c for c in keep if re.search(NAME_HINTS["conversion"] + "|" + NAME_HINTS["revenue"],
                                                     str(c).lower())]
        if outcome_like:
            keep = [c for c in keep if c not in outcome_like]
            notes.append(f"left out of keep as outcome-like (they would leak the answer): {outcome_like}")
    dates = [c for c in keep if _is_date(df[c])]
    rel = Path(path).resolve()
    try:
        rel = rel.relative_to(spec_dir.resolve())
    except ValueError:
        pass
    block: dict = {"path": str(rel), "columns": cols}
    sep = _sep(Path(path))
    if sep:
        block["read_options"] = {"sep": sep}
    if keep and table in ("customers", "campaign", "applications"):
        block["keep"] = keep
    if dates and table in ("customers", "campaign", "applications"):
        block["dates"] = dates
    return block, notes


def _yaml_value(v) -> str:
    import json

    import yaml

    if isinstance(v, str):
        return json.dumps(v)  # quoted: a level or label named yes / no / 1) $0 - $100 stays a string
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def draft_spec(files: list[str | Path], out: str | Path, name: str | None = None) -> str:
    """The draft spec's text for `files` (written to `out` by the command); paths are relative to `out`'s folder."""
    out = Path(out)
    spec_dir = out.parent
    tables: dict[str, tuple[dict, list[str], pd.DataFrame]] = {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        df = _sample(path)
        if df.empty:
            raise ValueError(f"{path} has no rows")
        table = guess_table(df)
        if table in tables:
            raise ValueError(f"{path} looks like a second {table} table (the first: {tables[table][0]['path']}); "
                             "give one file per table")
        block, notes = _block(df, table, path, spec_dir)
        tables[table] = (block, notes, df)
    lines = [
        "# Offerlab data spec (drafted by `offerlab data init`): your data, described once.",
        "# Every command takes it: offerlab data check --data THIS, offerlab run --data THIS, offerlab bench ... --data THIS",
        "# Blank values (~) must be filled in: the commands refuse to run on them and name the key to set.",
        f"name: {name or spec_dir.resolve().name or 'mydata'}",
        "tables:",
    ]
    any_offsets = False
    for table in TABLES:
        if table not in tables:
            continue
        block, notes, df = tables[table]
        lines.append(f"  {table}:   # guessed from {len(df.columns)} columns and {len(df)} sampled rows")
        for note in notes:
            lines.append(f"    # CHECK: {note}")
        for key in ("path", "read_options", "columns", "keep", "dates"):
            if key in block:
                lines.append(f"    {key}: {_yaml_value(block[key])}")
        time_cols = [block["columns"].get(c) for c in ("timestamp", "applied_at", "returned_at", "issued_at",
                                                        "due_date", "paid_at")] + block.get("dates", [])
        any_offsets |= any(c in df.columns and _has_offsets(df[c]) for c in time_cols if c)
        if table == "campaign":
            tcol = block["columns"].get("treatment")
            levels = sorted(map(str, pd.unique(df[tcol].dropna()))) if tcol in df.columns else []
            lines.append(f"    control: ~   # the level that got no offer (no contact, no discount); levels: {levels}")
            ccol = block["columns"].get("conversion")
            vals = _binary_values(df[ccol]) if ccol in df.columns else None
            if vals is not None and sorted(map(str, vals)) != ["0", "1"]:
                lines.append(f"    label_values: {{{_yaml_value(str(vals[0]))}: ~, {_yaml_value(str(vals[1]))}: ~}}"
                             "   # which value is a conversion (1) and which not (0)")
        if table == "applications":
            dcol = block["columns"].get("default")
            vals = _binary_values(df[dcol]) if dcol in df.columns else None
            shown = [str(v) for v in vals] if vals else []
            lines.append(f"    label_values: {{{', '.join(f'{_yaml_value(v)}: ~' for v in shown)}}}"
                         "   # which value means default (1) and which repaid (0)")
            if "applied_at" not in block["columns"]:
                lines.append("    applied_at: ~   # no application date column found: one date for all (YYYY-MM-DD)")
    camp = tables.get("campaign")
    levels = []
    if camp is not None:
        tcol = camp[0]["columns"].get("treatment")
        levels = sorted(map(str, pd.unique(camp[2][tcol].dropna()))) if tcol in camp[2].columns else []
    tx = tables.get("transactions")
    lines += ["semantics:",
              "  revenue: ~              # campaign revenue: net (what the customer paid, after the discount) or gross "
              "(the list price)",
              f"  timezone: {'~' if any_offsets else 'null'}"
              + ("             # timestamps carry UTC offsets: the zone whose calendar days count (e.g. Europe/Berlin)"
                 if any_offsets else "           # naive timestamps: taken as local time"),
              "  campaign_feature_date: ~   # the day the campaign went out: features use purchases strictly before it",
              "  campaign_assignment: check  # randomised (an RCT) | targeted (chosen by the CRM) | check (measured)"]
    if "returns" in tables:
        lines.append("  returns: ~               # for timing: net (an order returned in full is no purchase, a partly "
                     "returned one counts net) or keep (purchases as booked)")
    lines.append("economics:")
    if levels:
        lines.append("  discounts:               # the discount rate of every level (0.10 = 10% off; 0 = message only)")
        lines += [f"    {_yaml_value(lv)}: ~" for lv in levels]
    lines += ["  margin: ~                # profit per unit of list-price revenue (e.g. 0.35)",
              "  contact_cost: ~          # cost of contacting one customer (0 if free)",
              "  budget: null             # total expected spend of a campaign; null = no limit"]
    if camp is not None and "returned_revenue" in camp[0]["columns"]:
        lines.append("  returns: {counted: ~, handling_cost: ~}   # the campaign logs what came back: count it in the "
                     "profit (true/false), and the cost of handling one returned order (0 if none)")
    if "applications" in tables:
        terms = Path(__file__).resolve().parents[3] / "configs" / "credit" / "terms.yaml"
        lines += ["  credit:",
                  f"    terms: {terms}   # the decision policy (cut-off, rates, limits): copy and edit it",
                  "    amount_column: ~       # application column with the requested amount (null if none)",
                  "    income_column: ~       # application column with annual income (null if none)"]
    lines.append("protocol:                  # timing: calibrate on purchases up to calibration_end, score up to "
                 "holdout_end")
    cal = end = "~"
    if tx is not None:
        tcol = tx[0]["columns"].get("timestamp")
        if tcol in tx[2].columns:
            ts = pd.to_datetime(tx[2][tcol].astype(str) if pd.api.types.is_numeric_dtype(tx[2][tcol]) else
                                tx[2][tcol], errors="coerce", format="mixed", utc=True).dropna()
            if len(ts):
                lo, hi = ts.min(), ts.max()
                cal = str((lo + (hi - lo) * 0.5).date())
                end = str(hi.date())
    note = "   # suggested from a sample of rows: check" if cal != "~" else ""
    lines += [f"  calibration_end: {cal}{note}", f"  holdout_end: {end}{note}"]
    return "\n".join(lines) + "\n"


def write_draft(files: list[str | Path], out: str | Path, force: bool = False, name: str | None = None) -> Path:
    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"{out} exists; pass --force to replace it")
    text = draft_spec(files, out, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out

