"""The data spec: a user's data described once, for every command (`--data SPEC`) and the Python API alike.

One YAML names the files and the column mapping of each table (the mapping format of `configs/data/`), what
the values mean (`semantics`), the money (`economics`) and the protocol dates. Nothing that changes money or
meaning has a silent default: a level without a discount rate, a revenue whose meaning is undeclared while a
rate is non-zero, a label without declared values, a margin or contact cost not given, credit terms without
their amount and income columns, timestamps with offsets and no time zone: refused before any work, with the
key to set (`SpecError`). `configs/data/spec_example.yaml` is a complete example; `offerlab data init FILES`
writes a commented draft.

```python
from offerlab.data.spec import SpecData
data = SpecData.load("mydata.yaml", {"economics.margin": 0.35})   # dotted overrides, as --data-set on the CLI
tx = data.table("transactions")            # canonical, validated
campaign = data.campaign_data()            # uplift-ready: net revenue, features, levels, rates, assignment
```
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from offerlab.config import deep_merge, expand_dotted, parse_key_values
from offerlab.data.loaders import ColumnMapping, DataFileMissing, load_mapped

log = logging.getLogger(__name__)
SPEC_TABLES = ("transactions", "customers", "campaign", "applications", "returns", "repayments")
FAMILY_TABLES = {"timing": ("transactions",), "uplift": ("campaign",), "credit": ("applications",)}


class SpecError(ValueError):
    """The data spec lacks a key (or has a bad value) that the command needs; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _iso(v: object) -> object:
    """YAML reads an unquoted 2024-06-30 as a date: keep it as the text it was."""
    import datetime as dt

    return v.isoformat() if isinstance(v, dt.date) else v


DateText = Annotated[str, BeforeValidator(_iso)]


class TableBlock(_Strict):
    """One table: the column-mapping format of `configs/data/*.yaml`, without `table:` (the block's key says it)."""

    path: str = Field(description="the file (CSV or parquet), relative to the spec file")
    format: Literal["csv", "parquet"] | None = None
    columns: dict[str, str] = Field(default_factory=dict, description="canonical column -> column in the file")
    keep: list[str] = Field(default_factory=list, description="extra columns to keep (features, attributes)")
    dates: list[str] = Field(default_factory=list, description="kept columns holding dates (parsed like timestamps)")
    timestamp_format: str | None = None
    read_options: dict = Field(default_factory=dict)
    treatments: list[str] | None = Field(None, description="campaign: every level in the file (control included)")
    control: str | None = Field(None, description="campaign: the level that got no offer and no contact")
    label_values: dict[str | int | bool, int | None] | None = Field(
        None, description="raw label value -> 0/1 (applications: which value means default; campaign: conversion); "
        "a blank (~) is refused when the table is read")
    applied_at: DateText | None = Field(None, description="applications: one date for a file that has none")
    returns: Literal["negative_lines"] | None = Field(
        None, description="transactions: returns are booked as negative lines (amount < 0) linked to their purchase "
        "by order_id (instead of a tables.returns file)")

    def mapping(self, table: str) -> ColumnMapping:
        return ColumnMapping(table=table, **self.model_dump())


class Semantics(_Strict):
    revenue: Literal["net", "gross"] | None = Field(
        None, description="campaign revenue (and returned_revenue): net = what the customer paid (after the "
        "discount); gross = list price")
    timezone: str | None = Field(None, description="the zone whose calendar days count; timestamps with offsets "
                                 "are converted to it, naive ones are taken as local already")
    campaign_feature_date: DateText | None = Field(
        None, description="the day the campaign went out: behaviour features use purchases strictly before it")
    campaign_assignment: Literal["randomised", "targeted", "check"] = Field(
        "check", description="randomised (an RCT), targeted (chosen by the CRM), or check (measure it from the log)")
    returns: Literal["net", "keep"] | None = Field(
        None, description="what the returns table means for purchases: net (an order returned in full is no "
        "purchase, a partly returned one counts at its net amount) or keep (purchases as booked); the timing "
        "family's data.returns, required by it when the spec has a returns table")
    assignment_probabilities: dict[str, float] | None = Field(
        None, description="a randomised campaign's design: each level's probability (e.g. 0.25 each); without it "
        "the arms' shares in the log are used")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin or UTC)") from None
        return v


class CreditEconomics(_Strict):
    terms: str | None = Field(None, description="the decision policy YAML (cut-off, rates, limits, insurance)")
    amount_column: str | None = Field(None, description="application column with the requested amount (null: none)")
    income_column: str | None = Field(None, description="application column with annual income (null: none)")


class ReturnsEconomics(_Strict):  # blanks (a drafted spec) are refused when the economics are read, naming the key
    counted: bool | None = Field(None, description="whether the campaign economics count profit net of returns")
    handling_cost: float | None = Field(None, ge=0, description="cost of handling one return (shipping, processing)")


class Economics(_Strict):
    discounts: dict[str, float | None] | None = Field(None, description="discount rate of every campaign level")
    margin: float | None = Field(None, gt=0, le=1e6, description="profit per unit of list-price revenue")
    contact_cost: float | None = Field(None, ge=0, description="cost of contacting one customer with any level")
    budget: float | None = Field(None, ge=0, description="total expected spend of a campaign (null: none)")
    credit: CreditEconomics | None = None
    returns: ReturnsEconomics | None = Field(None, description="how returns count in the campaign economics")


class Protocol(_Strict):
    calibration_end: DateText | None = Field(None, description="timing: last day the models see (inclusive)")
    holdout_end: DateText | None = Field(None, description="timing: last day of the holdout that scores them")


class DataSpec(_Strict):
    name: str = Field(description="a short name for this data (results and runs are labelled with it)")
    tables: dict[str, TableBlock]
    semantics: Semantics = Field(default_factory=Semantics)
    economics: Economics = Field(default_factory=Economics)
    protocol: Protocol = Field(default_factory=Protocol)

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, v: dict) -> dict:
        bad = [k for k in v if k not in SPEC_TABLES]
        if bad:
            raise ValueError(f"unknown table {bad[0]!r}; expected some of {list(SPEC_TABLES)}")
        if not v:
            raise ValueError("no table: name at least one of " + ", ".join(SPEC_TABLES))
        return v


def _first_error(e: ValidationError, path: Path) -> SpecError:
    first = e.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key missing"
    return SpecError(f"data spec {path}: key '{key}': {msg}")


def read_spec(path: str | Path, overrides: dict | None = None) -> DataSpec:
    """Read and validate a spec YAML with dotted-key overrides (`{"economics.margin": 0.3}`)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileMissing(f"data spec not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"data spec {path} must be a mapping of keys (name, tables, semantics, economics, protocol)")
    raw = deep_merge(raw, expand_dotted(dict(overrides or {})))
    try:
        return DataSpec.model_validate(raw)
    except ValidationError as e:
        raise _first_error(e, path) from None


def parse_sets(items: tuple[str, ...] | list[str]) -> dict[str, object]:
    """`--data-set KEY=VALUE` pairs (values read as YAML) -> {dotted key: value}."""
    return parse_key_values(items, "--data-set", "economics.margin=0.35")


_LOADED: dict[tuple, SpecData] = {}


class SpecData:
    """A loaded data spec: its tables (read once, canonical, validated) and what each model family needs."""

    def __init__(self, spec: DataSpec, path: Path, overrides: dict | None = None):
        self.spec, self.path, self.overrides = spec, Path(path), dict(overrides or {})
        self._tables: dict[str, pd.DataFrame] = {}
        self._campaign = None

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> SpecData:
        """The spec at `path` with `overrides`; one instance (and one read of each table) per process while the
        spec file and its tables' files are unchanged, so the families of one job share the tables."""
        import json

        path = Path(path)
        spec = read_spec(path, overrides)
        files = [path] + [path.parent / b.path for b in spec.tables.values()]
        key = (str(path.resolve()), json.dumps(overrides or {}, sort_keys=True, default=str),
               tuple(f.stat().st_mtime_ns if f.is_file() else 0 for f in files))
        if key not in _LOADED:
            _LOADED.clear()  # one spec at a time: its tables may be large
            _LOADED[key] = cls(spec, path, overrides)
        return _LOADED[key]

    # ------------------------------------------------------------------------------------------ keys
    def key_error(self, key: str, problem: str) -> SpecError:
        return SpecError(f"data spec {self.path}: key '{key}': {problem}")

    def has(self, table: str) -> bool:
        return table in self.spec.tables or (table == "returns" and self._negative_lines())

    def _negative_lines(self) -> bool:
        tx = self.spec.tables.get("transactions")
        return tx is not None and tx.returns == "negative_lines"

    @property
    def name(self) -> str:
        return self.spec.name

    def require(self, family: str) -> None:
        """Refuse, before any work, a spec that lacks what `family` needs (tables, rates, semantics, dates)."""
        for t in FAMILY_TABLES[family]:
            if not self.has(t):
                raise self.key_error(f"tables.{t}", f"the {family} family needs a {t} table; add a tables.{t} block")
        if family == "timing":
            self.protocol_dates()
        elif family == "uplift":
            self.policy()  # margin, contact cost, every level's rate, revenue semantics
            if self.has("transactions") and self.spec.semantics.campaign_feature_date is None:
                raise self.key_error("semantics.campaign_feature_date", "not set: the day the campaign went out "
                                     "(behaviour features are computed from the purchases strictly before it)")
        elif family == "credit":
            self.labelled_applications()
            self.credit_policy()

    def protocol_dates(self) -> tuple[str, str]:
        p = self.spec.protocol
        for key in ("calibration_end", "holdout_end"):
            if getattr(p, key) is None:
                raise self.key_error(f"protocol.{key}", "not set: timing is calibrated on purchases up to "
                                     "calibration_end and scored on those up to holdout_end (YYYY-MM-DD)")
        try:
            cal, end = pd.Timestamp(p.calibration_end), pd.Timestamp(p.holdout_end)
        except ValueError as e:
            raise self.key_error("protocol", f"dates must be YYYY-MM-DD: {e}") from None
        if end <= cal:
            raise self.key_error("protocol.holdout_end", f"{p.holdout_end} must be after calibration_end "
                                 f"{p.calibration_end}")
        return str(cal.date()), str(end.date())

    # ---------------------------------------------------------------------------------------- tables
    def table(self, name: str) -> pd.DataFrame:
        """The canonical table `name`, read and validated once (a copy is not made: do not modify it). `lines`
        comes from a transactions file that maps `item_id` (a row per order line)."""
        if name == "lines":
            if "item_id" not in (self.spec.tables["transactions"].columns if self.has("transactions") else {}):
                raise self.key_error("tables.transactions.columns.item_id", "not set: the basket needs order lines; "
                                     "map the item column of a line-level purchase file (a row per item bought)")
            self.table("transactions")
            return self._tables["lines"]
        if name == "returns" and name not in self._tables:
            return self._returns()
        if name not in self._tables:
            if not self.has(name):
                raise self.key_error(f"tables.{name}", f"this command needs a {name} table; add a tables.{name} "
                                     "block (path and columns)")
            block = self.spec.tables[name]
            self._check_block(name, block)
            df, lines, returns = load_mapped(None, block.mapping(name), timezone=self.spec.semantics.timezone,
                                             strict_timezone=True, base_dir=self.path.parent, with_lines=True,
                                             with_returns=True)
            self._tables[name] = df
            if lines is not None:
                self._tables["lines"] = lines
            if name == "transactions" and block.returns == "negative_lines":
                if returns is None:
                    raise self.key_error("tables.transactions.returns", "is negative_lines but the file has no "
                                         "line with a negative amount")
                self._tables["returns"] = returns
        return self._tables[name]

    def _returns(self) -> pd.DataFrame:
        """The returns table: its own file (tables.returns), or the negative lines of the transactions file;
        checked against the orders (unknown order, return before the purchase, more returned than bought)."""
        from offerlab.data.schema import check_returns

        if "returns" in self.spec.tables and self._negative_lines():
            raise self.key_error("tables.returns", "given twice: drop either the tables.returns block or "
                                 "tables.transactions.returns: negative_lines")
        if not self.has("returns"):
            raise self.key_error("tables.returns", "this command needs returns; add a tables.returns block (path and "
                                 "columns) or declare tables.transactions.returns: negative_lines")
        if not self.has("transactions"):
            raise self.key_error("tables.transactions", "returns name the orders they send back: add the "
                                 "transactions table they refer to")
        tx = self.table("transactions")
        if "returns" not in self._tables:
            block = self.spec.tables["returns"]
            df = load_mapped(None, block.mapping("returns"), timezone=self.spec.semantics.timezone,
                             strict_timezone=True, base_dir=self.path.parent)
            self._tables["returns"] = check_returns(df, tx)
        return self._tables["returns"]

    def _check_block(self, name: str, block: TableBlock) -> None:
        for raw, v in (block.label_values or {}).items():
            if v is None:
                raise self.key_error(f"tables.{name}.label_values.{raw}", "is blank: 1 if this raw value means "
                                     + ("default" if name == "applications" else "a conversion") + ", else 0")
        if name == "campaign" and block.control is None:
            raise self.key_error("tables.campaign.control", "not set: name the level that got no offer (no contact,"
                                 f" no discount); levels in the file: {self._raw_levels(block)}")
        if name == "applications" and "default" in block.columns and block.label_values is None:
            raise self.key_error("tables.applications.label_values", "not set: declare which raw value of column "
                                 f"{block.columns['default']!r} means default (1) and which does not (0), e.g. "
                                 f"{{bad: 1, good: 0}}; values in the file: {self._raw_values(block, 'default')}")

    def _raw_frame(self, block: TableBlock, columns: list[str]) -> pd.DataFrame:
        path = self.path.parent / block.path
        if not path.is_file():
            raise DataFileMissing(f"data file not found: {path}")
        fmt = block.format or ("parquet" if path.suffix in (".parquet", ".pq") else "csv")
        if fmt == "parquet":
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, usecols=columns, **block.read_options)

    def _raw_values(self, block: TableBlock, canonical: str, limit: int = 12) -> list:
        col = block.columns.get(canonical)
        try:
            values = self._raw_frame(block, [col])[col].dropna().unique()
        except (ValueError, KeyError):
            return []
        values = sorted(values.tolist(), key=str)
        return values[:limit] + (["..."] if len(values) > limit else [])

    def _raw_levels(self, block: TableBlock) -> list:
        return self._raw_values(block, "treatment")

    # -------------------------------------------------------------------------------------- campaign
    def levels(self) -> list[str]:
        """Campaign levels, control first: the declared `treatments`, else those in the file (sorted)."""
        block = self.spec.tables.get("campaign")
        if block is None:
            raise self.key_error("tables.campaign", "this command needs a campaign table")
        camp = self.table("campaign")
        present = sorted(set(camp["treatment"].astype(str)))
        declared = block.treatments or present
        if block.control not in declared:
            raise self.key_error("tables.campaign.control", f"{block.control!r} is not a level of the campaign; "
                                 f"levels: {declared}")
        return [block.control] + [lv for lv in declared if lv != block.control]

    def discount_rates(self, levels: list[str]) -> dict[str, float]:
        """Every level's rate from `economics.discounts` (control 0 by definition); a missing, blank or unknown
        level is refused with the key to set."""
        given = dict(self.spec.economics.discounts or {})
        control = levels[0]
        unknown = [k for k in given if k not in levels]
        if unknown:
            raise self.key_error(f"economics.discounts.{unknown[0]}", f"no such campaign level; levels: {levels}")
        rates: dict[str, float] = {}
        for lv in levels:
            if lv not in given or given[lv] is None:
                if lv == control:
                    rates[lv] = 0.0
                    continue
                state = "is blank" if lv in given else "is not set"
                raise self.key_error(f"economics.discounts.{lv}", f"{state}: the discount rate of level {lv!r} "
                                     "(0.10 for 10% off; 0 for a level that is a message without a discount)")
            d = float(given[lv])
            if not 0.0 <= d < 1.0:
                raise self.key_error(f"economics.discounts.{lv}", f"must lie in [0, 1), got {d}")
            if lv == control and d != 0.0:
                raise self.key_error(f"economics.discounts.{lv}", "the control level gets no discount: set 0")
            rates[lv] = d
        return rates

    def policy(self) -> dict:
        """The campaign economics as `PolicyConfig` keys, every one declared (refused otherwise)."""
        e = self.spec.economics
        levels = self.levels()
        rates = self.discount_rates(levels)
        if any(r > 0 for r in rates.values()) and self.spec.semantics.revenue is None:
            lv = next(k for k, r in rates.items() if r > 0)
            raise self.key_error("semantics.revenue", f"not set while level {lv!r} has a {rates[lv]:g} discount: "
                                 "say whether the campaign's revenue column is what the customer paid after the "
                                 "discount (net) or the list price of the basket (gross)")
        for key in ("margin", "contact_cost"):
            if getattr(e, key) is None:
                what = ("profit per unit of list-price revenue, e.g. 0.35" if key == "margin"
                        else "cost of contacting one customer with any level, e.g. 0.05 (0 if free)")
                raise self.key_error(f"economics.{key}", f"not set: {what}")
        out = {"margin": e.margin, "contact_cost": e.contact_cost, "discounts": rates, "budget": e.budget}
        if e.returns is not None:  # both keys required by the model: no default for money
            if e.returns.counted is None:
                raise self.key_error("economics.returns.counted", "not set: true to count the campaign's profit net "
                                     "of what comes back (returned_revenue), false to ignore returns")
            if e.returns.counted and e.returns.handling_cost is None:
                raise self.key_error("economics.returns.handling_cost", "not set: the cost of handling one returned "
                                     "order (shipping, inspection, goods that cannot be resold), 0 if none")
            out["returns"] = e.returns.model_dump()
        return out

    def campaign_data(self, check_assignment: bool = True):
        """The campaign as `CampaignData`: net revenue, features (kept columns, and behaviour before the campaign
        date plus customer attributes when the spec has transactions), levels, rates, and how it was assigned."""
        if self._campaign is not None and (self._campaign.assignment != "unknown" or not check_assignment):
            return self._campaign
        from offerlab.uplift.data import from_campaign

        self.require("uplift")
        block = self.spec.tables["campaign"]
        camp = self.table("campaign")
        levels = self.levels()
        rates = self.policy()["discounts"]
        if self.spec.semantics.revenue == "gross":  # list price -> what the customer paid
            d = camp["treatment"].astype(str).map(rates).to_numpy(dtype=float)
            camp = camp.assign(revenue=camp["revenue"].to_numpy() * (1.0 - d))
            if "returned_revenue" in camp.columns:  # the same semantics: what came back, at list price
                camp["returned_revenue"] = camp["returned_revenue"].to_numpy() * (1.0 - d)
        tx = self.table("transactions") if self.has("transactions") else None
        cust = self.table("customers") if self.has("customers") else None
        data = from_campaign(camp, control=levels[0], levels=levels, discounts=rates,
                             feature_columns=[c for c in block.keep if c not in block.columns] or None,
                             transactions=tx, customers=cust, feature_date=self.spec.semantics.campaign_feature_date)
        data.assignment = self._assignment(data) if check_assignment else self._declared_assignment(data)
        if data.assignment == "randomised" and data.propensity is None:
            # an RCT whose log does not carry its design: the declared design, else the arms' shares
            data.propensity = np.tile(self.design(levels, data.treatment), (len(data), 1))
        self._campaign = data
        return data

    def campaign_features(self):
        """The campaign's rows, levels and features without its economics (`data check` profiles a campaign before
        its rates are filled in). The CampaignData's rates are placeholders: never price anything with it.
        Behaviour features need semantics.campaign_feature_date; without it only the kept columns are used."""
        from offerlab.uplift.data import from_campaign

        block = self.spec.tables["campaign"]
        camp, levels = self.table("campaign"), self.levels()
        date = self.spec.semantics.campaign_feature_date
        tx = self.table("transactions") if self.has("transactions") and date else None
        cust = self.table("customers") if tx is not None and self.has("customers") else None
        kept = [c for c in block.keep if c not in block.columns]
        if tx is None and not kept:
            return None
        data = from_campaign(camp, control=levels[0], levels=levels, discounts=dict.fromkeys(levels, 0.0),
                             feature_columns=kept or None, transactions=tx, customers=cust, feature_date=date)
        data.assignment = self._declared_assignment(data)
        return data

    def readiness(self) -> dict[str, str]:
        """Per family: "ready", or the first key the spec still has to set for it."""
        out = {}
        for family in FAMILY_TABLES:
            try:
                self.require(family)
                out[family] = "ready"
            except (SpecError, ValueError) as e:
                out[family] = str(e).removeprefix(f"data spec {self.path}: ")
        return out

    def design(self, levels: list[str], treatment: np.ndarray) -> np.ndarray:
        """Assignment probabilities of a randomised campaign: `semantics.assignment_probabilities` (every level,
        summing to 1), else the arms' shares in the log."""
        given = self.spec.semantics.assignment_probabilities
        if given is None:
            return np.bincount(treatment, minlength=len(levels)) / len(treatment)
        key = "semantics.assignment_probabilities"
        if self.spec.semantics.campaign_assignment == "targeted":
            raise self.key_error(key, "a targeted campaign has no design: its propensities are estimated; drop the key")
        missing = [lv for lv in levels if lv not in given]
        extra = [lv for lv in given if lv not in levels]
        if missing or extra:
            raise self.key_error(f"{key}.{(missing or extra)[0]}", f"{'not set' if missing else 'no such level'}: "
                                 f"give every level's probability; levels {levels}")
        p = np.array([float(given[lv]) for lv in levels])
        if (p <= 0).any() or abs(p.sum() - 1.0) > 1e-6:
            raise self.key_error(key, f"probabilities must be positive and sum to 1, got {given}")
        return p

    def _declared_assignment(self, data) -> str:
        declared = self.spec.semantics.campaign_assignment
        if declared != "check":
            return declared
        return "randomised" if data.propensity is not None else "unknown"

    def _assignment(self, data) -> str:
        """The declared assignment, or (semantics.campaign_assignment: check) the randomisation check's verdict."""
        declared = self._declared_assignment(data)
        if declared != "unknown":
            how = "known assignment probabilities in the log" if data.propensity is not None else "declared"
            log.info("campaign assignment: %s (%s)", declared, how)
            return declared
        from offerlab.uplift.propensity import assignment_check

        r = assignment_check(data.features, data.treatment, data.levels)
        log.info("campaign assignment: checked: arm-prediction AUC %.3f (randomised below %.3f): %s", r["auc"],
                 r["threshold"], r["verdict"])
        self.assignment_report = {k: v for k, v in r.items() if k != "propensity"}
        return r["verdict"]

    # ---------------------------------------------------------------------------------------- credit
    def labelled_applications(self) -> pd.DataFrame:
        apps = self.table("applications")
        if "default" not in apps.columns:
            raise self.key_error("tables.applications.columns.default", "not set: credit training and benches need "
                                 "the outcome column (which applications defaulted)")
        return apps

    def credit_policy(self) -> dict:
        """`CreditConfig` keys from `economics.credit`: the terms YAML and its amount / income columns, each
        declared (an explicit null says the data has no such column)."""
        c = self.spec.economics.credit
        if c is None or c.terms is None:
            raise self.key_error("economics.credit.terms", "not set: the decision policy YAML (cut-off PD, rates, "
                                 "limits, insurance); the shipped one is configs/credit/terms.yaml")
        terms = Path(c.terms)
        if not terms.is_absolute():
            terms = self.path.parent / terms
        if not terms.is_file():
            raise self.key_error("economics.credit.terms", f"file not found: {terms}")
        apps = self.table("applications")
        for key in ("amount_column", "income_column"):
            if key not in c.model_fields_set:
                raise self.key_error(f"economics.credit.{key}", "not set: the application column the limit rules "
                                     "read (null if the data has none: then that rule is not applied)")
            col = getattr(c, key)
            if col is not None and col not in apps.columns:
                raise self.key_error(f"economics.credit.{key}", f"column {col!r} is not among the applications' "
                                     f"columns (keep it in tables.applications.keep): {list(apps.columns)[:20]}")
        return {"terms": str(terms.resolve()),
                "decision": {"terms": {"amount_column": c.amount_column, "income_column": c.income_column}}}

    # ------------------------------------------------------------------------------------ summaries
    def tables(self) -> dict[str, pd.DataFrame]:
        return {t: self.table(t) for t in SPEC_TABLES if self.has(t)}

    def families(self) -> list[str]:
        """The model families this spec's tables support."""
        out = []
        if self.has("transactions") and self.spec.protocol.calibration_end and self.spec.protocol.holdout_end:
            out.append("timing")
        if self.has("campaign"):
            out.append("uplift")
        if self.has("applications") and "default" in self.spec.tables["applications"].columns:
            out.append("credit")
        return out


def family_overrides(data: SpecData, family: str) -> dict:
    """The family config keys a spec sets: where the data come from and, for uplift and credit, the economics.

    Checked first (`require`): a missing rate, date or semantic is refused before any config is built."""
    data.require(family)
    src = {"spec": str(data.path.resolve()), "spec_set": data.overrides}
    if family == "timing":
        cal, end = data.protocol_dates()
        returns = {"returns": data.spec.semantics.returns} if data.spec.semantics.returns else {}
        return {"data": {"dataset": "spec", **src, "calibration_end": cal, "holdout_end": end, **returns},
                "mlflow": {"run_name": f"timing-{data.name}"}}
    if family == "uplift":
        return {"name": f"uplift-{data.name}", "data": {"dataset": "spec", **src, "outcome": "conversion"},
                "policy": data.policy()}
    credit = data.credit_policy()
    return {"data": {"dataset": "spec", **src}, "terms": credit["terms"], "decision": credit["decision"],
            "tracking": {"run_name": f"credit-{data.name}"}}


def transactions_have_amounts(tx: pd.DataFrame) -> bool:
    return "amount" in tx.columns and bool(np.isfinite(tx["amount"].to_numpy(dtype=float)).any())
