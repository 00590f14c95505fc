"""The decision log: every served `/offers` answer and every batch-scored row, pseudonymously, to a sink.

One record per customer answer: `logged_at` (request time, UTC), `day`, `source` (e.g. `service:offers-local`,
`score:offers`), `customer_key` (HMAC-SHA256 of the customer id under `OFFERLAB_DECISION_LOG_KEY`, never the id),
`as_of`, `input_hash` (HMAC of the request's canonical JSON / the scored row's inputs), `latency_ms`, the model
versions, the key figures (`p_buy_30d`, `discount_level` and its `discount_expected_profit`, `credit_pd`,
`credit_decision`, ...), the refused fields of a refused request (`status` "refused"), and `features`: the model
inputs in a pseudonymous-safe form (see `offerlab.monitor.records`), as JSON.

Configuration (environment):
- `OFFERLAB_DECISION_LOG`: where records go: a folder or object-store path (`s3://bucket/decisions`, anything
  `pyarrow.fs` opens) for parquet files partitioned by day (`day=YYYY-MM-DD/part-....parquet`), or a
  `postgresql://` URL (table `OFFERLAB_DECISION_LOG_TABLE`, default `offerlab_decisions`, created if absent).
  Unset or `off`: no log.
- `OFFERLAB_DECISION_LOG_KEY`: the secret key of the pseudonyms (required with a log; the monitor commands
  need the same key to join outcomes).
- `OFFERLAB_DECISION_LOG_QUEUE` (default 10000 records), `OFFERLAB_DECISION_LOG_FLUSH_S` (default 5 s).

Writing never blocks or fails a request: `submit` puts one item on a bounded queue without waiting (a full queue
drops it and counts it, `dropped_overflow`); a background thread turns items into records and writes them in
batches; a sink that is down loses that batch and counts it (`dropped_sink`), never raises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LOG_ENV, KEY_ENV = "OFFERLAB_DECISION_LOG", "OFFERLAB_DECISION_LOG_KEY"
QUEUE_ENV, FLUSH_ENV, TABLE_ENV = "OFFERLAB_DECISION_LOG_QUEUE", "OFFERLAB_DECISION_LOG_FLUSH_S", "OFFERLAB_DECISION_LOG_TABLE"
DEFAULT_TABLE = "offerlab_decisions"

# column -> arrow type; every sink stores exactly these (features as a JSON string)
COLUMNS: dict[str, str] = {
    "logged_at": "timestamp", "day": "string", "source": "string", "status": "string", "customer_key": "string",
    "as_of": "timestamp", "input_hash": "string", "latency_ms": "float64",
    "timing_version": "string", "uplift_version": "string", "credit_version": "string",
    "p_buy_7d": "float64", "p_buy_30d": "float64", "p_buy_90d": "float64", "winback": "bool",
    "discount_level": "string", "discount_rate": "float64", "discount_expected_profit": "float64",
    "greedy_level": "string", "assignment_probability": "float64", "p_none": "float64",
    "discount_margin": "float64", "discount_contact_cost": "float64",
    "credit_pd": "float64", "credit_score": "float64", "credit_grade": "string", "credit_decision": "string",
    "credit_decline_reason": "string", "refused_fields": "string", "features": "string",
}
PG_TYPES = {"timestamp": "timestamp", "string": "text", "float64": "double precision", "bool": "boolean"}


class DecisionLogConfigError(ValueError):
    """A decision-log setting that cannot be used (names the variable)."""


def pseudonyms(ids, key: str) -> np.ndarray:
    """HMAC-SHA256 (first 32 hex characters) of each id under `key`: stable for a key, not reversible without it.

    One hash per distinct id (factorised), so a base of 1M rows with repeats costs one pass over the uniques."""
    codes, uniques = pd.factorize(pd.Series(ids).astype(str))
    k = key.encode()
    hashed = np.array([hmac.new(k, u.encode(), hashlib.sha256).hexdigest()[:32] for u in uniques], dtype=object)
    return hashed[codes] if len(codes) else np.array([], dtype=object)


def keyed_hash(payload: bytes, key: str) -> str:
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()[:32]


def conform(records: pd.DataFrame) -> pd.DataFrame:
    """The records with exactly `COLUMNS`, in order and typed (absent ones null)."""
    out = pd.DataFrame(index=records.index)
    for c, kind in COLUMNS.items():
        v = records[c] if c in records else pd.Series(None, index=records.index, dtype=object)
        if kind == "timestamp":
            out[c] = pd.to_datetime(v)
        elif kind == "float64":
            out[c] = pd.to_numeric(v, errors="coerce").astype("float64")
        elif kind == "bool":
            out[c] = v.astype("boolean")
        else:
            out[c] = v.astype(object).where(v.notna(), None).map(lambda x: x if x is None else str(x))
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ sinks
class ParquetSink:
    """Parquet files partitioned by day under a local folder or an object-store URI (`pyarrow.fs`)."""

    def __init__(self, root: str | Path):
        import pyarrow.fs as pafs

        self.root = str(root)
        if "://" in self.root:
            self.fs, self.base = pafs.FileSystem.from_uri(self.root)
        else:
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(self.root).resolve())

    def write(self, records: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for day, part in records.groupby("day", sort=True):
            folder = f"{self.base}/day={day}"
            self.fs.create_dir(folder, recursive=True)
            name = f"part-{time.strftime('%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = f"{folder}/.{name}.tmp"
            pq.write_table(pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False), tmp,
                           filesystem=self.fs)
            self.fs.move(tmp, f"{folder}/{name}")  # readers never see a half-written file

    def describe(self) -> str:
        return f"parquet under {self.root}"


class PostgresSink:
    """One PostgreSQL table (created if absent), rows added with COPY; `features` as jsonb."""

    def __init__(self, url: str, table: str = DEFAULT_TABLE):
        if not table.replace("_", "").isalnum():
            raise DecisionLogConfigError(f"{TABLE_ENV}={table!r}: a table name is letters, digits and '_'")
        self.url, self.table = url, table
        self._ready = False

    def _ensure_table(self, conn) -> None:
        cols = ", ".join(f"{c} {'jsonb' if c == 'features' else PG_TYPES[k]}" for c, k in COLUMNS.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({cols})")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_day ON {self.table} (day)")
        self._ready = True

    def write(self, records: pd.DataFrame) -> None:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as conn:
            if not self._ready:
                self._ensure_table(conn)
            with conn.cursor() as cur, cur.copy(f"COPY {self.table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in records.astype(object).where(records.notna(), None).itertuples(index=False, name=None):
                    copy.write_row(row)  # COPY streams the batch; psycopg does the per-row encoding

    def read(self, since: str | None = None, until: str | None = None) -> pd.DataFrame:
        import psycopg

        where, args = [], []
        if since:
            where.append("day >= %s")
            args.append(since)
        if until:
            where.append("day <= %s")
            args.append(until)
        sql = (f"SELECT {', '.join(c if c != 'features' else 'features::text' for c in COLUMNS)} FROM {self.table}"
               + (f" WHERE {' AND '.join(where)}" if where else ""))
        with psycopg.connect(self.url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return pd.DataFrame(cur.fetchall(), columns=list(COLUMNS))

    def describe(self) -> str:
        return f"PostgreSQL table {self.table}"


def open_sink(target: str):
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresSink(target, os.environ.get(TABLE_ENV, DEFAULT_TABLE))
    return ParquetSink(target)


# ------------------------------------------------------------------------------------------- the log
class DecisionLog:
    """A bounded queue in front of a sink, drained by one background thread (see the module doc).

    `submit(item)` never blocks: `item` is anything `build` turns into a records frame (the service passes its
    requests and answers, so hashing and feature extraction happen off the request path)."""

    def __init__(self, sink, key: str, *, max_queue: int = 10_000, flush_s: float = 5.0, batch: int = 5_000,
                 on_drop: Callable[[str, int], None] | None = None, on_written: Callable[[int], None] | None = None):
        if not key:
            raise DecisionLogConfigError(f"the decision log needs a pseudonym key: set {KEY_ENV}")
        self.sink, self.key = sink, key
        self.flush_s, self.batch = flush_s, batch
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.dropped_overflow = self.dropped_sink = self.written = 0
        self.on_drop, self.on_written = on_drop, on_written
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def submit(self, item: tuple[Callable[..., pd.DataFrame], tuple]) -> bool:
        """Queue `(build, args)`; `build(*args, key)` makes the records later. False (and counted) when full."""
        try:
            self._idle.clear()
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            self._count_drop("overflow", 1)
            return False

    def _count_drop(self, reason: str, n: int) -> None:
        with self._lock:
            if reason == "overflow":
                self.dropped_overflow += n
            else:
                self.dropped_sink += n
        if self.on_drop is not None:
            try:
                self.on_drop(reason, n)
            except Exception:  # noqa: BLE001 - a metrics hiccup never reaches a request
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            items = []
            deadline = time.monotonic() + self.flush_s
            try:
                items.append(self.queue.get(timeout=self.flush_s))
                while len(items) < self.batch and time.monotonic() < deadline:
                    items.append(self.queue.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                pass
            if items:
                self._write(items)
            if self.queue.empty():
                self._idle.set()

    def _write(self, items: list) -> None:
        frames, n_items = [], len(items)
        try:
            for build, args in items:
                frames.append(build(*args, self.key))
            records = conform(pd.concat(frames, ignore_index=True))
        except Exception as e:  # noqa: BLE001 - a record that cannot be built is lost and counted, never raised
            log.warning("decision log: %d item(s) could not be turned into records (%s)", n_items, type(e).__name__)
            self._count_drop("sink", n_items)
            return
        try:
            self.sink.write(records)
            with self._lock:
                self.written += len(records)
            if self.on_written is not None:
                self.on_written(len(records))
        except Exception as e:  # noqa: BLE001 - a sink that is down is counted, never raised
            log.warning("decision log: %s is not writable (%s); %d record(s) dropped", self.sink.describe(),
                        type(e).__name__, len(records))
            self._count_drop("sink", len(records))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written (or dropped); True when the queue drained in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.empty() and self._idle.wait(0.05) and self.queue.empty():
                return True
        return False

    def write_now(self, records: pd.DataFrame) -> int:
        """Write a batch job's records at once (no queue; a sink that is down is counted, not raised); the number
        written."""
        before = self.written
        self._write([(lambda r, _key: r, (records,))])
        return self.written - before

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=self.flush_s + 1)

    def counts(self) -> dict[str, int]:
        return {"written": self.written, "dropped_overflow": self.dropped_overflow, "dropped_sink": self.dropped_sink}


def settings_from_env() -> dict | None:
    """The configured log (target, key, queue size, flush interval), None when off; refused naming the variable."""
    target = (os.environ.get(LOG_ENV) or "").strip()
    if not target or target.lower() == "off":
        return None
    key = os.environ.get(KEY_ENV, "")
    if not key:
        raise DecisionLogConfigError(f"{LOG_ENV} is set but {KEY_ENV} is not: the pseudonymous customer keys need "
                                     "a secret key (the monitor commands use the same one to join outcomes)")
    try:
        max_queue = int(os.environ.get(QUEUE_ENV, 10_000))
        flush_s = float(os.environ.get(FLUSH_ENV, 5.0))
    except ValueError as e:
        raise DecisionLogConfigError(f"{QUEUE_ENV} must be an integer and {FLUSH_ENV} a number of seconds ({e})") from None
    if max_queue < 1 or not flush_s > 0:
        raise DecisionLogConfigError(f"{QUEUE_ENV} must be >= 1 and {FLUSH_ENV} > 0")
    return {"target": target, "key": key, "max_queue": max_queue, "flush_s": flush_s}


def from_env(on_drop: Callable[[str, int], None] | None = None,
             on_written: Callable[[int], None] | None = None) -> DecisionLog | None:
    s = settings_from_env()
    if s is None:
        return None
    return DecisionLog(open_sink(s["target"]), s["key"], max_queue=s["max_queue"], flush_s=s["flush_s"],
                       on_drop=on_drop, on_written=on_written)


_PROCESS_LOG: DecisionLog | None = None
_PROCESS_LOCK = threading.Lock()
_PROCESS_READ = False


def process_log() -> DecisionLog | None:
    """This process's decision log from the environment (one per process, made on first use), or None."""
    global _PROCESS_LOG, _PROCESS_READ
    if _PROCESS_READ:
        return _PROCESS_LOG
    with _PROCESS_LOCK:
        if not _PROCESS_READ:
            from offerlab.monitor import metrics

            _PROCESS_LOG = from_env(on_drop=metrics.count_drop, on_written=metrics.count_written)
            _PROCESS_READ = True
            if _PROCESS_LOG is not None:
                log.info("decision log: %s", _PROCESS_LOG.sink.describe())
    return _PROCESS_LOG


def reset_process_log() -> None:
    """Forget this process's log (tests change the environment between services)."""
    global _PROCESS_LOG, _PROCESS_READ
    with _PROCESS_LOCK:
        if _PROCESS_LOG is not None:
            _PROCESS_LOG.close(5.0)
        _PROCESS_LOG, _PROCESS_READ = None, False


# ------------------------------------------------------------------------------------------- reading
def read_decisions(sources: list[str] | tuple[str, ...], since: str | None = None, until: str | None = None
                   ) -> pd.DataFrame:
    """Records from parquet files, day-partitioned folders (local or object store) or a PostgreSQL URL, with the
    features expanded to columns `f.<family>.<name>`; `since` / `until` (YYYY-MM-DD) keep those days."""
    frames = []
    for src in sources:
        src = str(src)
        if src.startswith(("postgresql://", "postgres://")):
            frames.append(PostgresSink(src, os.environ.get(TABLE_ENV, DEFAULT_TABLE)).read(since, until))
            continue
        frames.append(_read_parquet(src))
    if not frames:
        raise ValueError("no decision log given")
    df = conform(pd.concat(frames, ignore_index=True))
    if since:
        df = df[df["day"] >= since]
    if until:
        df = df[df["day"] <= until]
    return expand_features(df.reset_index(drop=True))


def _read_parquet(src: str) -> pd.DataFrame:
    import pyarrow.dataset as ds

    if "://" not in src and not Path(src).exists():
        raise ValueError(f"decision log {src} does not exist")
    try:
        if "://" not in src and Path(src).is_file():
            return pd.read_parquet(src)
        dataset = ds.dataset(src, format="parquet", exclude_invalid_files=True)  # records carry their day
        table = dataset.to_table()
    except Exception as e:  # noqa: BLE001 - one clear line naming the source
        raise ValueError(f"decision log {src} is not readable as parquet: {str(e).splitlines()[0]}") from None
    df = table.to_pandas()
    if "day" in df:
        df["day"] = df["day"].astype(str)
    missing = [c for c in ("logged_at", "features") if c not in df]
    if missing:
        raise ValueError(f"{src} is not a decision log: column {missing[0]!r} missing")
    return df


def expand_features(df: pd.DataFrame) -> pd.DataFrame:
    """`features` (JSON per record) as columns `f.<family>.<name>` beside the record's own columns."""
    raw = df["features"].fillna("{}")
    parsed = pd.json_normalize([json.loads(s) for s in raw], sep=".")
    parsed.columns = [f"f.{c}" for c in parsed.columns]
    parsed.index = df.index
    return pd.concat([df.drop(columns=["features"]), parsed], axis=1)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
