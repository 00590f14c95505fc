"""The offers page: `GET /ui/` on `Offers` and `OffersLocal`, one customer's offers with pictures.

For product managers, QA and risk reviewers: pick a customer from a sample of the data the main job wrote
(or paste a request or a history) and see what the models offer and why: the P(buy within d days) curve,
the next-purchase band, win-back and categories; every discount level's expected incremental profit and
the chosen one; the credit decision with its terms and reasons; the model versions and the latency.

The page is one static file (`static/offers.html`: HTML, CSS and JavaScript that draws its charts as SVG;
nothing from a CDN, so it works offline). It asks the public `POST /offers` contract for every answer, with
`curve_days` set, and sends the API key the user types (`x-api-key`), never one embedded in the page. The page
itself is open (it holds no data); everything else here is behind the key like `/offers`.

Read-only helper routes, for the sample picker only (they serve requests, never answers):
- `GET /ui/samples`: a fixed sample of customers of the data folder (index, id, purchases, has application);
- `GET /ui/samples/{index}`: that customer's `/offers` request: the history up to the data's end (its most
  recent `OFFERLAB_MAX_HISTORY` purchases), the customers-table attributes, the latest credit application.
  By index, so no customer id lands in an access log.

The data folder: `OFFERLAB_UI_DATA` (canonical tables as parquet: `transactions.parquet`, optionally
`customers.parquet` and `applications.parquet`), else the newest `runs/*/synth_*/` under the working folder
(what `offerlab run` / `make run` writes). Only the sampled customers' rows are read (parquet filters).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.serving.contracts import max_history

log = logging.getLogger(__name__)
UI_DATA_ENV = "OFFERLAB_UI_DATA"
PAGE = Path(__file__).with_name("static") / "offers.html"
SAMPLE_SIZE = 40
# columns of the canonical applications table that are not application fields (ids, time, label)
NOT_APPLICATION = ("application_id", "customer_id", "applied_at", "default")


def find_data_folder(root: Path | None = None) -> Path:
    """The folder of canonical tables the sample comes from (see the module doc); refused naming what is missing."""
    raw = os.environ.get(UI_DATA_ENV, "").strip()
    if raw:
        folder = Path(raw)
        if not (folder / "transactions.parquet").is_file():
            raise ValueError(f"{UI_DATA_ENV}={raw!r}: no transactions.parquet in that folder")
        return folder
    found = sorted((root or Path()).glob("runs/*/synth_*/transactions.parquet"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError(f"no sample data: set {UI_DATA_ENV} to a folder with transactions.parquet "
                         "(or run `make run` from this folder); a pasted request still works")
    return found[-1].parent


def _max_timestamp(path: Path) -> pd.Timestamp:
    """Latest `timestamp` of a parquet table from its row-group statistics (no column read when they exist)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    col = meta.schema.names.index("timestamp")
    stats = [meta.row_group(g).column(col).statistics for g in range(meta.num_row_groups)]
    if stats and all(s is not None and s.has_min_max for s in stats):
        return pd.Timestamp(max(s.max for s in stats))
    return pd.Timestamp(pd.read_parquet(path, columns=["timestamp"])["timestamp"].max())


def _plain(value: object) -> object:
    """A table cell as JSON: numbers and strings as they are, dates as ISO text, missing as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        return pd.Timestamp(value).isoformat(timespec="seconds")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(frame: pd.DataFrame, drop: tuple[str, ...]) -> dict[str, object]:
    """The last row of `frame` as a JSON dict without `drop` and without missing values."""
    row = frame.iloc[-1].drop([c for c in drop if c in frame.columns])
    return {str(k): v for k, v in ((k, _plain(v)) for k, v in row.items()) if v is not None}


@dataclass
class SampleData:
    """A fixed sample of customers of one data folder, and each one's `/offers` request."""

    folder: Path
    as_of: pd.Timestamp
    ids: list[str]
    purchases: list[int]
    applicants: set[str]

    @classmethod
    def open(cls, folder: Path, size: int = SAMPLE_SIZE, seed: int = 0) -> SampleData:
        """Half of the sample from customers with a credit application (so credit answers show), half from all."""
        from offerlab.timing.baselines import end_of_day

        tx_path = folder / "transactions.parquet"
        rng = np.random.default_rng(seed)
        base = folder / "customers.parquet"
        source = base if base.is_file() else tx_path
        everyone = pd.unique(pd.read_parquet(source, columns=["customer_id"])["customer_id"].astype(str))
        applicants: np.ndarray = np.array([], dtype=object)
        if (folder / "applications.parquet").is_file():
            applicants = pd.unique(pd.read_parquet(folder / "applications.parquet", columns=["customer_id"])
                                   ["customer_id"].astype(str))
        picked = list(rng.choice(applicants, min(size // 2, len(applicants)), replace=False)) if len(applicants) else []
        rest = np.setdiff1d(everyone, picked)
        picked += list(rng.choice(rest, min(size - len(picked), len(rest)), replace=False))
        counts = pd.read_parquet(tx_path, columns=["customer_id"], filters=[("customer_id", "in", picked)]
                                 )["customer_id"].astype(str).value_counts()
        picked = sorted(c for c in picked if counts.get(c, 0) > 0)  # a request needs at least one purchase
        return cls(folder, end_of_day(_max_timestamp(tx_path)), picked, [int(counts[c]) for c in picked],
                   set(applicants) & set(picked))

    def listing(self) -> dict:
        return {"source": str(self.folder), "as_of": self.as_of.isoformat(),
                "customers": [{"index": i, "customer_id": c, "purchases": n, "application": c in self.applicants}
                              for i, (c, n) in enumerate(zip(self.ids, self.purchases, strict=True))]}

    def request(self, index: int) -> dict:
        """The `/offers` request of sample customer `index` (IndexError when there is none)."""
        if index < 0:
            raise IndexError(index)
        cid = self.ids[index]
        where = [("customer_id", "==", cid)]
        tx = pd.read_parquet(self.folder / "transactions.parquet", filters=where)
        tx = tx[pd.to_datetime(tx["timestamp"]) <= self.as_of].sort_values("timestamp", kind="stable")
        tx = tx.tail(max_history())
        history = [{"timestamp": pd.Timestamp(t).isoformat(timespec="seconds"),
                    **({"amount": float(a)} if a is not None else {}),
                    "category": None if c is None or (isinstance(c, float) and math.isnan(c)) else str(c)}
                   for t, a, c in zip(tx["timestamp"], tx["amount"] if "amount" in tx else [None] * len(tx),
                                      tx["category"] if "category" in tx else [None] * len(tx), strict=True)]
        body: dict = {"customer_id": cid, "history": history, "as_of": self.as_of.isoformat()}
        customers = self.folder / "customers.parquet"
        if customers.is_file():
            row = pd.read_parquet(customers, filters=where)
            if len(row):
                body["attributes"] = _row(row, ("customer_id",))
        apps = self.folder / "applications.parquet"
        if cid in self.applicants:
            rows = pd.read_parquet(apps, filters=where)
            if "applied_at" in rows:
                rows = rows[pd.to_datetime(rows["applied_at"]) <= self.as_of].sort_values("applied_at", kind="stable")
            if len(rows):
                body["application"] = _row(rows, NOT_APPLICATION)
        return body


class NoSample(Exception):
    """There is no sample data (the message says why and what to set)."""


class _Samples:
    """The sample of the data folder, opened on first use of that folder (once per worker).

    The folder is looked up on every call (an env read and a glob), so a `make run` after the service
    started is picked up; a folder's sample is read once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, SampleData] = {}

    def get(self) -> SampleData:
        try:
            folder = find_data_folder()
        except ValueError as e:
            raise NoSample(str(e)) from None
        with self._lock:
            if folder not in self._open:
                try:
                    self._open[folder] = SampleData.open(folder)
                except (OSError, KeyError, ValueError) as e:  # unreadable or not the canonical tables
                    raise NoSample(f"cannot read the sample from {folder}: {e}") from None
                log.info("offers page: %d sample customers from %s", len(self._open[folder].ids), folder)
            return self._open[folder]


def ui_app():
    """The Starlette app mounted at `/ui`: the page and the two read-only sample routes."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    samples = _Samples()
    html = PAGE.read_text(encoding="utf-8")

    def page(request):
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    def listing(request):
        try:
            return JSONResponse(samples.get().listing())
        except NoSample as e:
            return JSONResponse({"source": None, "customers": [], "error": str(e)})

    def one(request):
        raw = request.path_params["index"]
        try:
            data = samples.get()
        except NoSample as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        if not raw.isdigit() or int(raw) >= len(data.ids):
            return JSONResponse({"error": f"no sample customer {raw[:20]!r}: pick an index from /ui/samples "
                                          f"(0 to {len(data.ids) - 1})"}, status_code=404)
        return JSONResponse(data.request(int(raw)))

    return Starlette(routes=[Route("/", page), Route("/samples", listing), Route("/samples/{index}", one)])


def mount_ui(service) -> None:
    """Serve the page and its sample routes under `/ui` of a BentoML service."""
    service.mount_asgi_app(ui_app(), path="/ui", name="offers-page")
