"""Loaders: the public data sets and a user's own files, into the canonical tables.

Public files are read from the folder named by `OFFERLAB_DATA_DIR`. A user's own CSV or parquet file
loads through a column-mapping YAML (see `configs/data/*.yaml`), so nobody edits code to bring data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from offerlab.config import load_yaml_model
from offerlab.data.schema import TABLES, DataValidationError, check_returns, returns_from_negative_lines, validate_table

log = logging.getLogger(__name__)

DATA_DIR_ENV = "OFFERLAB_DATA_DIR"
CDNOW_FILE = "CDNOW_master.txt"
HILLSTROM_FILE = "hillstrom.csv"
GERMAN_FILE = "germancredit.csv"

HILLSTROM_CONTROL = "No E-Mail"
HILLSTROM_TREATMENTS = ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]
# German credit carries no application date; one fixed date keeps the canonical table complete.
GERMAN_APPLIED_AT = pd.Timestamp("1994-01-01")


class DataFileMissing(FileNotFoundError):
    """A data file is not where the configuration says it is."""


def data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding the public data files: the argument, else `OFFERLAB_DATA_DIR`."""
    if data_dir is None:
        env = os.environ.get(DATA_DIR_ENV)
        if not env:
            raise DataFileMissing(
                f"{DATA_DIR_ENV} is not set: point it at the folder holding the public data files "
                f"({CDNOW_FILE}, {HILLSTROM_FILE}, {GERMAN_FILE}), e.g. export {DATA_DIR_ENV}=../shared/data"
            )
        data_dir = env
    return Path(data_dir)


def _data_file(name: str, folder: str | Path | None) -> Path:
    path = data_dir(folder) / name
    if not path.is_file():
        source = "the data_dir argument" if folder is not None else f"{DATA_DIR_ENV}={os.environ.get(DATA_DIR_ENV)}"
        raise DataFileMissing(f"data file {name} not found at {path} (folder from {source})")
    return path


def load_cdnow(folder: str | Path | None = None) -> pd.DataFrame:
    """CDNOW master log (69,659 purchases of 23,570 customers, 1997-01-01..1998-06-30) as `transactions`."""
    path = _data_file(CDNOW_FILE, folder)
    raw = pd.read_csv(
        path, sep=r"\s+", skiprows=1, header=None, names=["customer_id", "date", "quantity", "amount"],
        dtype={"customer_id": str, "date": str},
    )
    tx = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce"),
            "amount": raw["amount"],
            "quantity": raw["quantity"],
            "order_id": np.arange(len(raw)).astype(str),
        }
    )
    if tx["timestamp"].isna().any():
        bad = tx["timestamp"].isna()
        raise DataValidationError("transactions", "timestamp", f"unparsable date in {path}", f"row {raw.index[bad][0]}: {raw.loc[bad, 'date'].iloc[0]!r}")
    return validate_table(tx, "transactions")


def load_hillstrom(folder: str | Path | None = None) -> pd.DataFrame:
    """Hillstrom e-mail RCT (64,000 customers) as `campaign`: treatment = e-mail variant, control `No E-Mail`.

    `conversion` and `revenue` are the purchase outcome and spend; `visit` (the protocol's primary
    outcome) and the pre-campaign features are kept as extra columns. Assignment was randomised with
    equal probability, so `propensity` is 1/3.
    """
    path = _data_file(HILLSTROM_FILE, folder)
    raw = pd.read_csv(path)
    camp = raw.rename(columns={"segment": "treatment", "spend": "revenue"})
    camp.insert(0, "customer_id", [f"h{i:05d}" for i in range(len(camp))])
    camp["propensity"] = 1.0 / 3.0
    return validate_table(camp, "campaign", treatments=HILLSTROM_TREATMENTS, control=HILLSTROM_CONTROL)


def load_german(folder: str | Path | None = None) -> pd.DataFrame:
    """Statlog German credit (1,000 applications, 300 bad) as `applications`; `default` = 1 for `bad`."""
    path = _data_file(GERMAN_FILE, folder)
    raw = pd.read_csv(path)
    label = raw.pop("creditability")
    unknown = ~label.isin(["good", "bad"])
    if unknown.any():
        raise DataValidationError("applications", "creditability", "expected 'good' or 'bad'", f"row {label.index[unknown][0]}: {label[unknown].iloc[0]!r}")
    ids = [f"g{i:04d}" for i in range(len(raw))]
    apps = pd.DataFrame({"application_id": ids, "customer_id": ids, "applied_at": GERMAN_APPLIED_AT})
    apps = pd.concat([apps, raw], axis=1)
    apps["default"] = (label == "bad").astype(int)
    return validate_table(apps, "applications")


PUBLIC_DATASETS = {"cdnow": load_cdnow, "hillstrom": load_hillstrom, "german": load_german}


class ColumnMapping(BaseModel):
    """A column-mapping YAML: which canonical table a user's file fills, and from which columns."""

    model_config = ConfigDict(extra="forbid")
    table: str
    path: str | None = None
    format: str | None = Field(default=None, description="csv or parquet; inferred from the suffix when absent")
    columns: dict[str, str] = Field(description="canonical column -> column in the user's file")
    keep: list[str] = Field(default_factory=list, description="extra columns to keep (features)")
    dates: list[str] = Field(default_factory=list, description="kept columns holding dates (parsed like timestamps)")
    timestamp_format: str | None = None
    read_options: dict = Field(default_factory=dict)
    treatments: list[str] | None = None
    control: str | None = None
    label_values: dict[str | int | bool, int] | None = Field(
        default=None, description="raw label value -> 0/1, both declared (e.g. {bad: 1, good: 0} or {1: 1, 0: 0})")
    applied_at: str | None = Field(default=None, description="one application date for a file that has none")
    returns: Literal["negative_lines"] | None = Field(
        default=None, description="transactions: returns booked as negative lines (amount < 0) linked to their "
        "purchase by order_id; they fill the returns table")

    @model_validator(mode="after")
    def _returns_on_transactions(self) -> ColumnMapping:
        if self.returns is not None and self.table != "transactions":
            raise ValueError("'returns: negative_lines' describes a transactions file")
        return self

    @field_validator("table")
    @classmethod
    def _known_table(cls, v: str) -> str:
        if v not in TABLES:
            raise ValueError(f"unknown table {v!r}; expected one of {sorted(TABLES)}")
        return v

    @field_validator("label_values")
    @classmethod
    def _two_labels(cls, v: dict | None) -> dict | None:
        if v is not None and (sorted(v.values()) != [0, 1]):
            raise ValueError(f"label_values must map exactly one raw value to 1 and one to 0, got {v}")
        return v


def label_key(value: object) -> str:
    """How a raw label value and a `label_values` key are compared: as text, so the YAML key `1` (an int),
    `"1"` (a string), a CSV cell read as 1 or 1.0, and `true` / `True` all meet."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value).strip().lower() if str(value).strip().lower() in ("true", "false") else str(value).strip()


def map_labels(raw: pd.Series, label_values: dict, table: str, column: str) -> pd.Series:
    """Raw label values -> 0/1 through the declared `label_values`; any other value (or a missing one) is refused
    with the row, the value and the declared set."""
    lut = {label_key(k): int(v) for k, v in label_values.items()}
    keys = raw.map(label_key, na_action="ignore")
    mapped = keys.map(lut)
    bad = mapped.isna()
    if bad.any():
        i = np.flatnonzero(bad.to_numpy())[0]
        value = raw.iloc[i].item() if isinstance(raw.iloc[i], np.generic) else raw.iloc[i]
        declared = ", ".join(f"{k!r} -> {v}" for k, v in label_values.items())
        hint = ""
        if any(isinstance(k, bool) for k in label_values) and isinstance(value, str):
            hint = " (YAML reads an unquoted yes/no/on/off as true/false: quote the key, e.g. 'yes': 1)"
        raise DataValidationError(
            table, column, f"value {value!r} is not one of the declared label_values ({declared}); "
            f"declare every raw value of the label under label_values{hint}", f"row {raw.index[i]!r}")
    return mapped.astype(np.int64)


def read_mapping(mapping_path: str | Path) -> ColumnMapping:
    """Read and check a column-mapping YAML."""
    return load_yaml_model(mapping_path, ColumnMapping, "column-mapping file", missing=DataFileMissing)


def _parse_times(values: pd.Series, fmt: str | None, table: str, col: str) -> pd.Series:
    """A timestamp column parsed as given (aware where the text carries offsets); unparsable values refused."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.astype(str) if fmt else values
    try:
        parsed = pd.to_datetime(text, format=fmt or "mixed", errors="coerce")
    except ValueError:  # offsets differ from row to row: a common clock (UTC) first
        parsed = pd.to_datetime(text, format=fmt or "mixed", errors="coerce", utc=True)
    bad = parsed.isna() & values.notna()
    if bad.any():
        i = np.flatnonzero(bad.to_numpy())[0]
        what = f"does not match timestamp_format {fmt!r}" if fmt else "unparsable timestamp"
        raise DataValidationError(table, col, what, f"row {values.index[i]}: {values.iloc[i]!r}")
    return parsed


def localise_times(values: pd.Series, timezone: str | None, table: str, col: str, *, strict: bool) -> pd.Series:
    """Timestamps on the calendar days are counted in: an offset-carrying (aware) column is converted to
    `timezone` and made naive; a naive column is taken as already local. Aware values without a declared
    `timezone`: refused when `strict` (a data spec must say whose days count), else converted to UTC."""
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        return values
    if timezone is None:
        if strict:
            raise DataValidationError(
                table, col, "timestamps carry UTC offsets but the data spec declares no time zone: set "
                "semantics.timezone (e.g. Europe/Berlin) to the zone whose calendar days purchases count in",
                f"{values.dropna().iloc[0]!s}")
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.dt.tz_convert(timezone).dt.tz_localize(None)


def load_mapped(data_path: str | Path | None, mapping: str | Path | ColumnMapping, *, timezone: str | None = None,
                strict_timezone: bool = False, base_dir: str | Path | None = None, with_lines: bool = False,
                with_returns: bool = False) -> pd.DataFrame | tuple:
    """Load a user's CSV or parquet file into a canonical table through a column mapping.

    A transactions file that maps `item_id` has a row per order line: its orders fill `transactions` and the rows
    the `lines` table (`offerlab.data.lines`); `with_lines=True` returns (transactions, lines or None).

    A transactions file declared with `returns: negative_lines` books returns as negative lines linked by
    `order_id`: they are taken out into a validated `returns` table (checked against the orders);
    `with_returns=True` appends it (or None) to what is returned.

    `timezone` / `strict_timezone`: see `localise_times` (a data spec passes its `semantics.timezone`, strictly);
    `base_dir`: the folder a relative `path` of the mapping is read from (default: the mapping file's)."""
    m = mapping if isinstance(mapping, ColumnMapping) else read_mapping(mapping)
    if data_path is None:
        if m.path is None:
            raise ValueError("no data path given and the column mapping names no 'path'")
        base = Path(base_dir) if base_dir is not None else (
            Path(mapping).parent if not isinstance(mapping, ColumnMapping) else Path("."))
        data_path = base / m.path
    data_path = Path(data_path)
    if not data_path.is_file():
        raise DataFileMissing(f"data file not found: {data_path}")
    fmt = m.format or ("parquet" if data_path.suffix in (".parquet", ".pq") else "csv")
    raw = pd.read_parquet(data_path) if fmt == "parquet" else pd.read_csv(data_path, **m.read_options)
    missing = [src for src in m.columns.values() if src not in raw.columns]
    if missing:
        raise DataValidationError(
            m.table, missing[0], f"column named in the mapping is absent from {data_path.name}; columns present: {list(raw.columns)[:20]}"
        )
    if m.table == "applications" and "default" in m.columns and m.label_values is None:
        values = sorted(map(str, pd.unique(raw[m.columns["default"]].dropna())))[:10]
        raise DataValidationError(m.table, "default", f"label_values not declared: say which raw value of column "
                                  f"{m.columns['default']!r} means default (1) and which does not (0), e.g. "
                                  f"label_values: {{bad: 1, good: 0}}; values in {data_path.name}: {values}")
    absent_keep = [c for c in m.keep if c not in raw.columns]
    if absent_keep:
        raise DataValidationError(m.table, absent_keep[0], f"column listed under 'keep' is absent from {data_path.name}")
    out = raw[list(m.columns.values()) + [c for c in m.keep if c not in m.columns.values()]].rename(
        columns={v: k for k, v in m.columns.items()}
    )
    for col, spec in ((c.name, c) for c in TABLES[m.table].columns):
        if col in out.columns and spec.kind == "datetime":
            out[col] = localise_times(_parse_times(out[col], m.timestamp_format, m.table, col), timezone, m.table, col,
                                      strict=strict_timezone)
        if col in out.columns and spec.kind == "label" and m.label_values:
            out[col] = map_labels(out[col], m.label_values, m.table, col)
    for col in m.dates:
        if col not in out.columns:
            raise DataValidationError(m.table, col, "column listed under 'dates' is not kept: add it to 'keep'")
        out[col] = localise_times(_parse_times(out[col], m.timestamp_format, m.table, col), timezone, m.table, col,
                                  strict=strict_timezone)
    returns = None
    if m.table == "transactions" and m.returns == "negative_lines":
        out, returns = returns_from_negative_lines(out)
        log.info("took %d negative lines out of %s into table returns", len(returns), data_path.name)
        returns = validate_table(returns, "returns") if len(returns) else None

    def result(table: pd.DataFrame, lines: pd.DataFrame | None) -> pd.DataFrame | tuple:
        if returns is not None:
            check_returns(returns, table)
        if not with_lines:
            return (table, returns) if with_returns else table
        return (table, lines, returns) if with_returns else (table, lines)

    if m.table == "transactions" and "item_id" in out.columns:
        from offerlab.data.lines import lines_from_rows, orders_from_lines

        lines = lines_from_rows(out)
        orders = orders_from_lines(lines)
        log.info("loaded %d lines of %d orders into tables lines and transactions from %s", len(lines), len(orders),
                 data_path.name)
        return result(orders, lines)
    if m.table == "transactions" and "order_id" not in out.columns:
        out["order_id"] = np.arange(len(out)).astype(str)
    if m.table == "campaign" and "customer_id" not in out.columns:  # a bare campaign log: rows are the customers
        out.insert(0, "customer_id", np.arange(len(out)).astype(str))
    if m.table == "applications":
        if "application_id" not in out.columns:
            out.insert(0, "application_id", np.arange(len(out)).astype(str))
        if "customer_id" not in out.columns:  # a bare application table: each application is its own customer
            out.insert(1, "customer_id", out["application_id"].astype(str))
        if "applied_at" not in out.columns and m.applied_at is not None:
            out.insert(2, "applied_at", pd.Timestamp(m.applied_at))
    log.info("loaded %d rows into table %s from %s", len(out), m.table, data_path.name)
    out = validate_table(out, m.table, treatments=m.treatments, control=m.control)
    return result(out, None)


def load_dataset(name: str, data_path: str | Path | None = None, mapping: str | Path | None = None) -> pd.DataFrame:
    """One entry point for the CLI: a public data set by name, or a user's file with a mapping."""
    if mapping is not None:
        return load_mapped(data_path, mapping)
    if name not in PUBLIC_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(PUBLIC_DATASETS)} or --mapping")
    return PUBLIC_DATASETS[name](data_path)
