"""Nightly scoring on Apache Spark: `offerlab score {timing|discount|credit|offers} --engine spark`.

The same registered models and the same per-family functions of `offerlab.serving.score` (`score_timing`,
`score_discount`, `score_credit`, `score_offers`: a column added there reaches this engine with no change here),
run where the data live. Inputs are parquet at any path Spark can read (`hdfs://`, `s3a://`, `abfss://`,
`dbfs:/`, a local folder of part files); the output is a parquet folder, `partition_by` columns as asked.

How the work is laid out:

1. Driver only, before any Spark job: each input's parquet footer is read (columns, timestamp units) and a
   missing column is refused with the single-machine message; the models are resolved (an alias becomes the
   version it points to now, so every executor scores with one version even if the alias moves mid-run),
   downloaded once and loaded on the driver (an unknown alias or URI is refused here), and a transactions file
   without `amount` is refused for a model that needs amounts.
2. Customers are numbered in order of first appearance (transactions, then applications: the order of the
   single-machine `customer_chunks`) and cut into groups of `chunk_size` customers. Group g is shuffled to
   partition g (its key is chosen so that Spark's hash partitioning sends it there), so one task scores one
   group: the single-machine chunk, same customers, same rows in the same order, hence the same answers.
3. Per-customer sequence work is a grouped operation: `tx.groupBy(key).cogroup(side.groupBy(key))
   .applyInPandas(...)`, where `side` carries the group's customers and applications tables (each packed per
   group by its own pass, so its column types are exactly what pandas reads). A customer's rows are never split.
4. Models are shipped with `SparkContext.addFile` and loaded once per executor Python process (a module-level
   cache keyed by the model URI; Spark reuses its Python workers): `model_loads` in the summary counts them.
5. `budget` (discount, offers): a whole-file allocation, in two passes. Pass 1 scores every group (kept with
   `persist`); the driver collects the per-level expected revenue and conversion (2 x levels floats and the id
   per customer), ordered as the single-machine result, and runs the same `allocate` over them: one price of
   spend for the file, plus the few customers the greedy fill of the leftover budget moved. Pass 2 rewrites
   every row at that price (and those few overrides), so the Spark file equals the single-machine one.

`mlflow.pyfunc.spark_udf` works with these models where the pyfunc's input is one row per customer: the
uplift model on a table of its feature columns and the credit model on applications that already carry their
`beh_*` behaviour columns. It does not fit timing (its input is a customer's whole purchase sequence, many rows
per customer, and a UDF sees arbitrary row batches that would split customers) nor discount or credit straight
from transactions (the features are aggregates over each customer's rows): those need the grouped step here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError
from offerlab.registry import CHAMPION
from offerlab.serving import score as sm

log = logging.getLogger(__name__)

INTERNAL = ("_row", "_first", "_rank", "_bucket", "_key", "_pos", "_table", "_blob")
ORDER_SHIFT = 62  # _first = table index << 62 | row id: transactions' rows first, then applications'
SAMPLE_CUSTOMERS = 32  # customers the driver scores to learn the output schema (and, for offers, applicants too)


class SparkSetupError(ValueError):
    """pyspark or Java is missing, or the Spark session cannot start."""


# ------------------------------------------------------------------------------------------ session
def get_spark(master: str | None = None, conf: dict[str, str] | None = None, progress: bool = True):
    """The active SparkSession (spark-submit, Databricks, a notebook), else a new one on `master` (default
    `local[*]`) with `conf`. A new session's Python workers run this interpreter and stay quiet unless
    --verbose."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkSetupError("--engine spark needs pyspark: pip install 'offerlab[pyspark]' (and a Java 17+ "
                              "runtime: apt-get install openjdk-17-jre-headless)") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from offerlab.quiet import is_quiet

    b = SparkSession.builder.appName("offerlab-score")
    submitted = bool(os.environ.get("PYSPARK_GATEWAY_PORT"))  # under spark-submit: its --master stands
    if master or not submitted:
        b = b.master(master or "local[*]")
    settings = {"spark.ui.showConsoleProgress": str(bool(progress)).lower(),
                "spark.sql.session.timeZone": "UTC", "spark.sql.execution.arrow.pyspark.enabled": "true"}
    if (master or ("" if submitted else "local")).startswith("local"):
        settings["spark.ui.enabled"] = "false"
    if not os.environ.get("PYSPARK_PYTHON"):
        # Workers import offerlab from this environment. pyspark's driver reads the variable, not the conf key
        # (`spark.pyspark.python` only reaches spark-submit): without it a worker runs the PATH's python3.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        settings["spark.pyspark.python"] = sys.executable
    if is_quiet():
        settings.update({"spark.executorEnv.PYTHONWARNINGS": "ignore", "spark.executorEnv.OFFERLAB_QUIET": "1",
                         "spark.executorEnv.MLFLOW_LOGGING_LEVEL": "ERROR",
                         "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_quiet_log4j()}"})
        os.environ.setdefault("PYTHONWARNINGS", "ignore")  # local mode: workers inherit the driver's env too
    settings.update(conf or {})
    for k, v in settings.items():
        b = b.config(k, v)
    try:
        spark = b.getOrCreate()
    except Exception as e:  # noqa: BLE001 - the JVM failed to start: say what is needed
        raise SparkSetupError(f"cannot start Spark ({master or 'local[*]'}): {str(e).splitlines()[0]}; "
                              "--engine spark needs a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
                              ) from None
    if is_quiet():
        spark.sparkContext.setLogLevel("ERROR")
    return spark


QUIET_LOG4J = """status = error
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark %p %c{1}: %m%n
"""


def _quiet_log4j() -> str:
    """A log4j2 configuration for the driver JVM that prints errors only (Spark's start-up banner hidden)."""
    path = Path(tempfile.gettempdir()) / "offerlab-spark-log4j2-quiet.properties"
    if not path.is_file() or path.read_text() != QUIET_LOG4J:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(QUIET_LOG4J)
        os.replace(tmp, path)
    return str(path)


class _Conf:
    """Set SQL settings for one run and put the session's own values back afterwards."""

    def __init__(self, spark, values: dict[str, str]):
        self.spark, self.values, self.old = spark, values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.old[k] = self.spark.conf.get(k, None)
            self.spark.conf.set(k, v)
        return self

    def __exit__(self, *exc):
        for k, v in self.old.items():
            if v is None:
                self.spark.conf.unset(k)
            else:
                self.spark.conf.set(k, v)


def _hadoop_fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def path_exists(spark, path: str) -> bool:
    fs, p = _hadoop_fs(spark, path)
    found = fs.globStatus(p)
    return found is not None and len(found) > 0


# ------------------------------------------------------------------------------------------ inputs
def _first_data_file(spark, path: str):
    """The Hadoop path of the first parquet data file at `path` (a file, a folder of part files, a glob)."""
    fs, p = _hadoop_fs(spark, path)
    todo = list(fs.globStatus(p) or [])
    while todo:
        st = todo.pop(0)
        name = st.getPath().getName()
        if name.startswith(("_", ".")):
            continue
        if not st.isDirectory():
            return st.getPath()
        todo = sorted(fs.listStatus(st.getPath()), key=lambda s: s.getPath().getName()) + todo
    return None


INDEX = "index"  # footer_columns' mark of a column that holds the pandas index


def footer_columns(spark, path: str) -> dict[str, str | None]:
    """column -> the pandas dtype pandas reads a timestamp column as ("datetime64[ns]", "datetime64[us, UTC]"),
    `INDEX` for the index pandas stored as a column, None for other columns; from the parquet footer of the first
    data file, on the driver (no Spark job)."""
    f = _first_data_file(spark, path)
    if f is None:
        raise ValueError("no parquet data file")
    fs, root = _hadoop_fs(spark, path)
    below = f.toString().removeprefix(fs.makeQualified(root).toString().rstrip("/"))
    partitions = [d.split("=", 1)[0] for d in below.strip("/").split("/")[:-1] if "=" in d]  # a=1/b=x/part-0
    jvm = spark.sparkContext._jvm
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(
        jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(f, spark.sparkContext._jsc.hadoopConfiguration()))
    try:
        meta = reader.getFooter().getFileMetaData()
        fields = list(meta.getSchema().getFields())
        pandas_meta = meta.getKeyValueMetaData().get("pandas")
    finally:
        reader.close()
    index = set()  # the index pandas stored as columns (restored as the index when pandas reads the file)
    if pandas_meta:
        index = {c for c in json.loads(pandas_meta).get("index_columns", []) if isinstance(c, str)}
    out = {}
    for fd in fields:
        if fd.getName() in index:
            out[fd.getName()] = INDEX
            continue
        kind = fd.getLogicalTypeAnnotation()
        text = kind.toString() if kind is not None else ""
        if text.startswith("TIMESTAMP("):
            unit, adjusted = text[len("TIMESTAMP("):-1].split(",")
            unit = {"MILLIS": "ms", "MICROS": "us", "NANOS": "ns"}[unit.strip()]
            out[fd.getName()] = f"datetime64[{unit}, UTC]" if adjusted.strip() == "true" else f"datetime64[{unit}]"
        elif fd.isPrimitive() and fd.asPrimitiveType().getPrimitiveTypeName().name() == "INT96":
            out[fd.getName()] = "datetime64[ns]"  # Spark's legacy timestamps; pandas reads them as ns
        else:
            out[fd.getName()] = None
    for c in partitions:
        out.setdefault(c, None)
    return out


@dataclass
class SparkTable:
    """One input table: its footer's columns (checked on the driver), then, once opened, a Spark DataFrame
    (customer_id as string, `_row`: its position in the file) and how to give its timestamp columns the dtypes
    pandas reads them with (`times`: column -> (Spark kind, pandas dtype))."""

    name: str
    path: str
    footer: dict[str, str | None]
    columns: list[str]
    df: object = None
    times: dict[str, tuple[str, str]] = field(default_factory=dict)

    def open(self, spark) -> SparkTable:
        from pyspark.sql import functions as F
        from pyspark.sql.types import LongType, TimestampNTZType, TimestampType

        df = spark.read.parquet(self.path)
        types = {f.name: f.dataType for f in df.schema.fields}
        for c in self.columns:
            kind = {LongType: "ns", TimestampNTZType: "ntz", TimestampType: "ltz"}.get(type(types[c]))
            if self.footer.get(c) is not None and kind is not None:
                self.times[c] = (kind, self.footer[c])
        df = df.select(*self.columns).withColumn("customer_id", F.col("customer_id").cast("string"))
        self.df = df.withColumn("_row", F.monotonically_increasing_id())
        return self


def read_spark_table(spark, path: str | Path, table: str, required: tuple[str, ...],
                     optional: tuple[str, ...] | None = None) -> SparkTable:
    """`score.read_table` for Spark: the same refusals (no such path, not parquet, missing column), from the
    parquet footer and the folder names (`day=.../`) on the driver: no Spark job."""
    path = str(path)
    if not path_exists(spark, path):
        raise ValueError(f"{table} file {path} does not exist")
    try:
        footer = footer_columns(spark, path)
        have = [c for c, kind in footer.items() if kind != INDEX]
    except Exception as e:  # noqa: BLE001 - any reader failure means "not a parquet table we can use"
        raise ValueError(f"{table} file {path} is not a readable parquet file: {str(e).splitlines()[0]}") from None
    cols = [c for c in (*required, *optional) if c in have] if optional is not None else have
    sm.check_columns(table, path, cols, required)  # naming the columns read, as the single-machine reader does
    return SparkTable(table, path, footer, cols)


def restore_times(pdf: pd.DataFrame, times: dict[str, tuple[str, str]], session_tz: str) -> pd.DataFrame:
    """Give timestamp columns read through Spark the dtypes pandas reads from the same file: nanosecond columns
    (which Spark reads as integers) back to ns, Spark's session-time-zone instants back to UTC, units as stored."""
    for c, (kind, target) in times.items():
        if c not in pdf.columns:
            continue
        v = pdf[c]
        if kind == "ns":
            v = pd.to_datetime(v, unit="ns")
        elif kind == "ltz":  # naive wall time in the session zone -> the instant -> UTC
            v = pd.to_datetime(v).dt.tz_localize(session_tz).dt.tz_convert("UTC")
        if target.endswith(", UTC]"):
            v = v.dt.tz_localize("UTC") if v.dt.tz is None else v.dt.tz_convert("UTC")
        elif v.dt.tz is not None:
            v = v.dt.tz_localize(None)
        pdf[c] = v.astype(target)
    return pdf


@dataclass
class SparkInputs:
    """The tables one Spark run reads; `None` where the command does not use one."""

    transactions: SparkTable | None = None
    customers: SparkTable | None = None
    applications: SparkTable | None = None

    def tables(self) -> dict[str, SparkTable]:
        return {t.name: t for t in (self.transactions, self.customers, self.applications) if t is not None}

    def shape(self) -> sm.ScoreInputs:
        """Zero-row pandas tables with the columns read (what `score.check_amounts` looks at)."""
        return sm.ScoreInputs(**{n: pd.DataFrame(columns=t.columns) for n, t in self.tables().items()})


def read_spark_inputs(spark, command: str, input_path, customers=None, applications=None, transactions=None
                      ) -> SparkInputs:
    """`score.read_inputs` for Spark: credit's --input is the applications table, the others' transactions."""
    if command == "credit":
        apps = read_spark_table(spark, input_path, "applications", sm.APP_COLUMNS)
        tx = read_spark_table(spark, transactions, "transactions", sm.TX_COLUMNS, sm.TX_OPTIONAL
                              ) if transactions else None
        return SparkInputs(transactions=tx, applications=apps)
    tx = read_spark_table(spark, input_path, "transactions", sm.TX_COLUMNS, sm.tx_optional(command))
    tx.columns = sm.kept_tx_columns(tx.columns)
    cust = read_spark_table(spark, customers, "customers", ("customer_id",)) if customers else None
    apps = read_spark_table(spark, applications, "applications", sm.APP_COLUMNS
                            ) if applications and command == "offers" else None
    return SparkInputs(transactions=tx, customers=cust, applications=apps)


def empty_frame(table: SparkTable, session_tz: str) -> pd.DataFrame:
    """The table with no rows, in the dtypes its rows get (a group without rows of a table gets this)."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    cols = [f for f in table.df.schema.fields if f.name not in INTERNAL]
    pdf = to_arrow_schema(StructType(cols)).empty_table().to_pandas()
    return restore_times(pdf, table.times, session_tz)


# ------------------------------------------------------------------------------------------ models
_MODELS: dict[str, object] = {}  # one per executor Python process: model URI -> loaded pyfunc


@dataclass
class ShippedModel:
    family: str  # command family: timing, discount, credit
    uri: str  # the version-pinned URI it was resolved to
    name: str  # its folder name among the files shipped with SparkContext.addFile

    @property
    def key(self) -> str:
        """The cache key: a registry version or a run's artifact never changes, so later runs in the same
        executors reuse it; anything else (a local path) is keyed by this run's shipped copy."""
        return self.uri if self.uri.startswith(("models:/", "runs:/")) else self.name


def pinned_uri(family: str, model_uri: str | None, alias: str) -> str:
    """The registry alias resolved to the version it names now (`models:/offerlab-uplift/7`); other URIs as given."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = sm.resolve_uri(family, model_uri, alias)
    if uri.startswith("models:/") and "@" in uri:
        name, al = uri[len("models:/"):].split("@", 1)
        try:
            version = MlflowClient().get_model_version_by_alias(name, al).version
        except MlflowException as e:
            raise sm.model_error(family, uri, e) from None
        return f"models:/{name}/{version}"
    return uri


_SHIPPED: dict[tuple[str, str], ShippedModel] = {}  # (Spark application, model URI) -> what was shipped


def _ship_folder(spark) -> Path:
    """Where this Spark application's model copies live: Spark serves added files from here for as long as the
    application runs, so the folder stays until this process exits."""
    import atexit
    import shutil

    folder = Path(tempfile.gettempdir()) / f"offerlab-spark-models-{spark.sparkContext.applicationId}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        atexit.register(shutil.rmtree, folder, True)
    return folder


def ship_models(spark, families: list[str], model_uri: str | None, alias: str,
                model_uris: dict[str, str] | None) -> tuple[dict, dict[str, ShippedModel]]:
    """Resolve, download, load on the driver (refusing what cannot load) and ship each family's model (once per
    Spark application for a registry version or a run's model)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from offerlab import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    models, shipped = {}, {}
    for fam in families:
        given = model_uris[sm.MODEL_FAMILY[fam]] if model_uris else model_uri
        uri = pinned_uri(fam, given, alias)
        known = _SHIPPED.get((spark.sparkContext.applicationId, uri))
        if known is not None and known.key in _MODELS:
            models[fam], shipped[fam] = _MODELS[known.key], ShippedModel(fam, uri, known.name)
            continue
        name = f"offerlab-model-{fam}-{uuid.uuid4().hex[:12]}"
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(_ship_folder(spark) / name))
            models[fam] = mlflow.pyfunc.load_model(local)
        except (MlflowException, OSError) as e:
            raise sm.model_error(fam, uri, e) from None
        spark.sparkContext.addFile(str(Path(local)), recursive=True)
        shipped[fam] = ShippedModel(fam, uri, Path(local).name)
        _MODELS[shipped[fam].key] = models[fam]  # the driver's own copy (it scores the schema sample)
        if shipped[fam].key == uri:
            _SHIPPED[(spark.sparkContext.applicationId, uri)] = shipped[fam]
    return models, shipped


def executor_models(plan: GroupPlan) -> dict:
    """The plan's models in this process, each loaded once (from the files Spark shipped) and then reused."""
    out = {}
    for fam, m in plan.models.items():
        model = _MODELS.get(m.key)
        if model is None:
            t0 = time.perf_counter()
            import mlflow
            from pyspark import SparkFiles

            _worker_setup(plan)
            model = _MODELS[m.key] = mlflow.pyfunc.load_model(SparkFiles.get(m.name))
            plan.loads.add(1)
            plan.load_seconds.add(time.perf_counter() - t0)
        out[fam] = model
    return out


def _worker_setup(plan: GroupPlan) -> None:
    """Once per Python worker: torch threads = the task's cores (not every core of the machine), quiet logs."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    torch.set_num_threads(max(1, int(ctx.cpus()) if ctx is not None else 1))
    if plan.quiet:
        import warnings

        warnings.simplefilter("ignore")
        logging.getLogger("offerlab").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------------ groups
@dataclass
class GroupPlan:
    """What every group's task needs (pickled once into the UDF)."""

    command: str
    models: dict[str, ShippedModel]
    as_of: pd.Timestamp | None
    n_samples: int
    choose: bool  # rewrite the discount choice in the group (no budget: row by row at the model's price)
    main: str | None  # the table cogrouped as is (transactions, else applications)
    times: dict[str, dict]  # table -> its restore_times spec
    empty: dict[str, pd.DataFrame]  # table -> zero-row frame (side tables a group may lack)
    session_tz: str
    columns: list[str] | None = None  # the output columns, in order (known after the driver's sample)
    quiet: bool = True
    loads: object = None  # Spark accumulator of model loads
    load_seconds: object = None  # and of the seconds they took (imports of mlflow and torch included)


def ordered(pdf: pd.DataFrame) -> pd.DataFrame:
    """Rows as the single-machine chunk holds them: by customer (first appearance), then file order."""
    return pdf.sort_values(["_rank", "_row"], kind="stable").drop(columns=[c for c in INTERNAL if c in pdf.columns]
                                                                  ).reset_index(drop=True)


def pack_side(plan: GroupPlan, table: str, key, pdf: pd.DataFrame) -> pd.DataFrame:
    """One side table's rows of a group as one row (`_key`, `_table`, pickled frame with pandas' own dtypes)."""
    key, bucket = int(pdf["_key"].iloc[0]), int(pdf["_bucket"].iloc[0])
    frame = restore_times(ordered(pdf), plan.times[table], plan.session_tz)
    return pd.DataFrame({"_key": [key], "_bucket": [bucket], "_table": [table],
                         "_blob": [pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)]})


def score_frames(plan: GroupPlan, models: dict, main: pd.DataFrame | None, sides: dict[str, pd.DataFrame]
                 ) -> pd.DataFrame:
    """One group's answers: exactly `score.score_chunk` on the single-machine chunk of the same customers."""
    frames = dict(sides)
    if main is not None:
        frames[plan.main] = main
    for t, empty in plan.empty.items():  # a table given but without rows in this group: none, as in its chunk
        frames.setdefault(t, empty)
    tx, apps, cust = frames.get("transactions"), frames.get("applications"), frames.get("customers")
    if plan.command == "offers" and apps is not None and len(apps):
        apps = sm.latest_application(apps).reset_index(drop=True)
        order = {c: i for i, c in enumerate(pd.unique(tx["customer_id"]))}  # chunk order: first appearance
        apps = apps.iloc[np.argsort(apps["customer_id"].map(order).to_numpy(), kind="stable")]
    out = sm.score_chunk(plan.command, models, sm.ScoreInputs(customers=cust), tx, apps, plan.as_of, plan.n_samples)
    if plan.choose:
        sm.choose_discounts(out, models["discount"], None, "discount_" if plan.command == "offers" else "")
    return out


def score_group(plan: GroupPlan, key, main: pd.DataFrame) -> pd.DataFrame:
    """The grouped-map UDF of a command with one table."""
    return score_cogroup(plan, key, main, None)


def score_cogroup(plan: GroupPlan, key, main: pd.DataFrame, side: pd.DataFrame | None) -> pd.DataFrame:
    """The cogroup UDF: unpack the side tables, score, and return the rows in the output schema's columns."""
    models = executor_models(plan)
    bucket = int(main["_bucket"].iloc[0]) if len(main) else int(side["_bucket"].iloc[0])
    sides = {}
    if side is not None:
        for t, blob in zip(side["_table"], side["_blob"], strict=True):
            sides[t] = pickle.loads(blob)
    main_frame = restore_times(ordered(main), plan.times[plan.main], plan.session_tz) if len(main) else None
    out = score_frames(plan, models, main_frame, sides)
    out["_bucket"], out["_pos"] = bucket, np.arange(len(out))
    return out.reindex(columns=plan.columns)


@dataclass
class PricePlan:
    """Pass 2 of a budgeted run: every row at the whole file's price, plus the fill's overrides."""

    plan: GroupPlan
    price: float
    fixed: object  # broadcast {customer_id: level index} of the rows the greedy fill moved
    prefix: str


def at_price(pp: PricePlan, batches):
    """mapInPandas UDF: the discount columns of each row rewritten at one price of spend (row by row)."""
    from offerlab.uplift.policy import choose_at_price

    model = executor_models(pp.plan)["discount"]
    fixed = pp.fixed.value
    for frame in batches:
        if len(frame):
            m = sm.discount_matrices(frame, model, pp.prefix)
            choice = choose_at_price(m["profit"], m["spend"], pp.price)
            if fixed:
                ids = frame["customer_id"].to_numpy()
                ids = ids if m["rows"] is None else ids[m["rows"]]
                over = np.array([fixed.get(i, -1) for i in ids])
                choice = np.where(over >= 0, over, choice)
            sm.apply_matrices_choice(frame, m, choice, pp.prefix)
        yield frame


# ------------------------------------------------------------------------------------------ layout
def group_keys(spark, n_groups: int) -> list[int]:
    """For each group g a key that Spark's hash partitioning into `n_groups` partitions sends to partition g, so
    every task scores one whole group (plain group numbers would collide and leave some cores idle)."""
    from pyspark.sql import functions as F

    cand = spark.range(0, 64 * n_groups + 64).select("id", F.expr(f"pmod(hash(id), {n_groups})").alias("p"))
    found = dict(cand.groupBy("p").agg(F.min("id").alias("id")).select("p", "id").collect())
    return [int(found[g]) for g in range(n_groups)]


def customer_groups(spark, inputs: SparkInputs, command: str, chunk_size: int):
    """(customer_id, _rank, _bucket, _key) of every customer scored, persisted; and the number of groups.

    Rank = order of first appearance (transactions, then applications), as `customer_chunks` numbers them;
    credit scores applicants only (their transactions are kept, others dropped), the others the customers of the
    transactions."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    tx, apps = inputs.transactions, inputs.applications

    def first(t: SparkTable, index: int):
        return t.df.select("customer_id", (F.lit(index << ORDER_SHIFT) + F.col("_row")).alias("_first"))

    if command == "credit":
        parts = [first(apps, 1)]
        if tx is not None:
            ids = apps.df.select("customer_id").distinct()
            parts.insert(0, first(tx, 0).join(ids, "customer_id", "left_semi"))
    else:
        parts = [first(tx, 0)]
    firsts = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    order = (firsts.groupBy("customer_id").agg(F.min("_first").alias("_first")).orderBy("_first")
             .withColumn("_mid", F.monotonically_increasing_id()).persist(StorageLevel.MEMORY_AND_DISK))
    counts = sorted(order.groupBy(F.expr("shiftright(_mid, 33)").alias("p")).count().collect())
    offsets, total = {}, 0
    for p, n in counts:
        offsets[int(p)], total = total, total + int(n)
    if total == 0:
        raise DataValidationError("transactions" if command != "credit" else "applications", None,
                                  "no customers to score")
    n_groups = math.ceil(total / chunk_size)
    keys = group_keys(spark, n_groups)
    offset = F.create_map(*[F.lit(x) for kv in offsets.items() for x in kv])
    ranked = order.select("customer_id", (offset[F.expr("shiftright(_mid, 33)")]
                                          + F.expr("_mid & 8589934591")).alias("_rank"))
    bucket = (F.col("_rank") / F.lit(chunk_size)).cast("long")
    key = F.array(*[F.lit(k).cast("long") for k in keys])[F.col("_bucket")]  # long, as group_keys hashed them
    ranked = ranked.withColumn("_bucket", bucket).withColumn("_key", key)
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    ranked.count()
    order.unpersist()
    return ranked, total, n_groups


# ------------------------------------------------------------------------------------------ output
def check_spark_output(spark, output: str, inputs: list, force: bool) -> str:
    out = str(output)
    if any(p and str(p).rstrip("/") == out.rstrip("/") for p in inputs):
        raise ValueError(f"output {out} is one of the inputs; choose another path")
    if path_exists(spark, out) and not force:
        raise ValueError(f"output {out} exists; pass --force to replace it")
    return out


def replace_output(spark, tmp: str, out: str) -> None:
    """Move the finished folder into place; an existing output is moved aside first and removed only after."""
    fs, dst = _hadoop_fs(spark, out)
    jvm = spark.sparkContext._jvm
    src = jvm.org.apache.hadoop.fs.Path(tmp)
    old = jvm.org.apache.hadoop.fs.Path(f"{out.rstrip('/')}.__old-{uuid.uuid4().hex[:8]}")
    had = fs.exists(dst)
    if had and not fs.rename(dst, old):
        raise OSError(f"cannot move the existing {out} aside")
    if not fs.rename(src, dst):
        if had:
            fs.rename(old, dst)
        raise OSError(f"cannot move the scored output into {out}")
    if had:
        fs.delete(old, True)


def output_schema(sample: pd.DataFrame):
    """The Spark schema of the answers, from the driver's sample (null-typed columns as strings)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = pa.Schema.from_pandas(sample, preserve_index=False)
    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema])
    return from_arrow_schema(schema)


# ------------------------------------------------------------------------------------------ runner
def run_spark_score(command: str, input_path, output, *, customers=None, applications=None, transactions=None,
                    model_uri: str | None = None, alias: str = CHAMPION, as_of: str | None = None,
                    chunk_size: int = 50_000, n_samples: int = 100, force: bool = False, progress: bool = True,
                    model_uris: dict[str, str] | None = None, budget: float | None = None, spark=None,
                    master: str | None = None, conf: dict[str, str] | None = None,
                    partition_by: tuple[str, ...] | list[str] = ()) -> dict:
    """`score.run_score` on Spark: same inputs, models, refusals and answers; output a parquet folder.

    `spark`: a session to use (default: the active one, else a new one on `master`, with `conf`);
    `chunk_size`: customers per group, one group per task (the single-machine chunk); `partition_by`: output
    columns to partition the folder by (e.g. ["discount_level"])."""
    from offerlab.quiet import is_quiet

    if command not in sm.COMMANDS:
        raise ValueError(f"unknown score command {command!r}; expected one of {list(sm.COMMANDS)}")
    budget = sm.check_budget(budget, command)
    if input_path is None:
        raise ValueError("give --input (a parquet path Spark can read)")
    t0 = time.perf_counter()
    spark = spark or get_spark(master, conf, progress)
    out = check_spark_output(spark, output, [input_path, customers, applications, transactions], force)
    when = sm.parse_as_of(as_of) if as_of and command != "credit" else None
    session_tz = spark.conf.get("spark.sql.session.timeZone")
    # nanosecond timestamps (pandas writes them) are read as integers and restored in pandas; the layout's small
    # shuffles (customer order) get one partition per core, the scoring shuffle one per group
    layout = {"spark.sql.legacy.parquet.nanosAsLong": "true",
              "spark.sql.shuffle.partitions": str(max(2, spark.sparkContext.defaultParallelism))}
    with _Conf(spark, layout):
        inputs = read_spark_inputs(spark, command, input_path, customers, applications, transactions)
        families = list(sm.MODEL_FAMILY) if command == "offers" else [command]
        if command == "offers" and model_uri:
            raise ValueError("--model-uri names one model; offers uses all three (use --alias)")
        models, shipped = ship_models(spark, families, model_uri, alias, model_uris)
        sm.check_amounts(models, inputs.shape(), transactions if command == "credit" else input_path)
        for t in inputs.tables().values():  # the refusals are done; from here on Spark reads
            t.open(spark)
        t_load = time.perf_counter() - t0
        log.info("spark (%s): models %s", spark.sparkContext.master, ", ".join(m.uri for m in shipped.values()))

        summary = _score_on_spark(spark, command, inputs, models, shipped, when, chunk_size, n_samples, budget,
                                  session_tz, is_quiet(), out, list(partition_by), progress)
    seconds = time.perf_counter() - t0
    total = summary.pop("customers")
    result = {"command": command, "customers": total, "rows": summary.pop("rows"), "seconds": round(seconds, 3),
              "load_seconds": round(t_load, 3), "customers_per_s": round(total / max(seconds - t_load, 1e-9), 1),
              "as_of": summary.pop("as_of"), "output": out, **summary}
    log.info("scored %d customers (%d rows) with %s on spark in %.1fs", total, result["rows"], command, seconds)
    return result


def _score_on_spark(spark, command, inputs: SparkInputs, models, shipped, when, chunk_size, n_samples, budget,
                    session_tz, quiet, out, partition_by, progress) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return round(clock[-1] - clock[-2], 2)

    tables = inputs.tables()
    for name, t in tables.items():
        if name != "transactions" and t.df.isEmpty():
            raise DataValidationError(name, None, f"{t.path} has no rows")
    if "transactions" in tables:  # its row count and latest purchase in one pass
        tx = inputs.transactions
        latest = tx.df.agg(F.max("timestamp").alias("timestamp"), F.count("*").alias("_n")).toPandas()
        if int(latest["_n"].iloc[0]) == 0:
            raise DataValidationError("transactions", None, f"{tx.path} has no rows")
        if when is None and command != "credit":
            when = sm.default_as_of(restore_times(latest[["timestamp"]], tx.times, session_tz))
    ranked, total, n_groups = customer_groups(spark, inputs, command, chunk_size)
    log.info("spark: %d customers in %d groups of up to %d, one task each", total, n_groups, chunk_size)
    joined = {n: t.df.join(ranked, "customer_id", "inner") for n, t in tables.items()}
    main = "transactions" if "transactions" in tables else "applications"
    side_names = [n for n in tables if n != main]
    prefix = "discount_" if command == "offers" else ""
    plan = GroupPlan(command=command, models=shipped, as_of=when, n_samples=n_samples,
                     choose=command in sm.BUDGET_COMMANDS and budget is None, main=main,
                     times={n: t.times for n, t in tables.items()},
                     empty={n: empty_frame(t, session_tz) for n, t in tables.items()}, session_tz=session_tz,
                     quiet=quiet, loads=spark.sparkContext.accumulator(0),
                     load_seconds=spark.sparkContext.accumulator(0.0))

    sample_out = _driver_sample(plan, models, joined, main, side_names)
    missing = [c for c in partition_by if c not in sample_out.columns or c.startswith("_")]
    if missing:
        raise ValueError(f"--partition-by {missing[0]!r} is not an output column of `score {command}` "
                         f"(has {[c for c in sample_out.columns if not c.startswith('_')]})")
    plan.columns = list(sample_out.columns)
    schema = output_schema(sample_out)
    phases = {"layout": lap()}  # row counts, customer order and groups, the driver's sample

    settings = {"spark.sql.shuffle.partitions": str(n_groups), "spark.sql.adaptive.coalescePartitions.enabled":
                "false", "spark.sql.execution.arrow.pyspark.enabled": "true"}
    with _Conf(spark, settings):
        grouped = joined[main].groupBy("_key")
        if side_names:
            side_schema = "_key long, _bucket long, _table string, _blob binary"
            packs = [joined[n].groupBy("_key").applyInPandas(_bind(pack_side, plan, n), side_schema)
                     for n in side_names]
            side = packs[0] if len(packs) == 1 else packs[0].unionByName(packs[1])
            scored = grouped.cogroup(side.groupBy("_key")).applyInPandas(_bind(score_cogroup, plan), schema)
        else:
            scored = grouped.applyInPandas(_bind(score_group, plan), schema)
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            economics, pp = _economics(spark, plan, scored, models, budget, prefix)
            phases["score"] = lap()  # every group scored (and, with a budget, the allocation on the driver)
            final = scored if pp is None else scored.mapInPandas(_bind(at_price, pp), scored.schema)
            final = final.drop("_bucket", "_pos")
            tmp = f"{out.rstrip('/')}.__tmp-{uuid.uuid4().hex[:8]}"
            writer = final.write.mode("error")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.parquet(tmp)
            rows = spark.read.parquet(tmp).count()
            replace_output(spark, tmp, out)
            phases["write"] = lap()
        finally:
            scored.unpersist()
            ranked.unpersist()
    return {"customers": total, "rows": int(rows), "as_of": str(when) if when is not None else None, **economics,
            "engine": "spark", "master": spark.sparkContext.master, "groups": n_groups,
            "customers_per_group": chunk_size, "model_loads": int(plan.loads.value),
            "model_load_seconds": round(float(plan.load_seconds.value), 1), "phase_seconds": phases,
            "models": {f: m.uri for f, m in shipped.items()},
            **({"partition_by": partition_by} if partition_by else {})}


def _bind(fn, *args):
    """The UDF `fn(*args, ...)` with the arity Spark reads from its signature (key + frames, or an iterator); `fn`
    is module-level, so executors import it from offerlab."""
    arity = {pack_side: 2, score_group: 2, score_cogroup: 3, at_price: 1}[fn]
    if arity == 1:
        def udf(it):
            return fn(*args, it)
    elif arity == 2:
        def udf(key, pdf):
            return fn(*args, key, pdf)
    else:
        def udf(key, left, right):
            return fn(*args, key, left, right)
    return udf


def _driver_sample(plan: GroupPlan, models: dict, joined: dict, main: str, side_names: list[str]) -> pd.DataFrame:
    """Score a few customers on the driver (the first ones, plus the first with each side table's rows) to learn
    the output columns and types before any executor scores."""
    from pyspark.sql import functions as F

    ranks = set(range(SAMPLE_CUSTOMERS))
    for n in side_names:
        first = joined[n].select("_rank").distinct().orderBy("_rank").limit(SAMPLE_CUSTOMERS).toPandas()
        ranks |= set(first["_rank"].astype(int))
    ranks = sorted(ranks)

    def rows(name):
        pdf = joined[name].where(F.col("_rank").isin(ranks)).toPandas()
        return restore_times(ordered(pdf), plan.times[name], plan.session_tz)

    sides = {n: rows(n) for n in side_names}
    quiet = logging.getLogger(sm.__name__)
    level, _ = quiet.level, quiet.setLevel(logging.WARNING)  # its per-chunk lines would read as the run's
    try:
        out = score_frames(plan, models, rows(main), sides)
    finally:
        quiet.setLevel(level)
    out["_bucket"], out["_pos"] = 0, np.arange(len(out))
    return out


def _economics(spark, plan: GroupPlan, scored, models, budget, prefix) -> tuple[dict, PricePlan | None]:
    """The summary's budget, spend, price_of_spend, price_source; with a budget, the whole-file allocation on the
    driver and the plan of the pass that applies its price."""
    from pyspark.sql import functions as F

    from offerlab.uplift.policy import choose_at_price
    from offerlab.uplift.pyfunc import stored_price

    if plan.command not in sm.BUDGET_COMMANDS:
        return {}, None
    model = models["discount"]
    if budget is None:
        price = stored_price(model.unwrap_python_model().policy)
        agg = scored.agg(F.sum(f"{prefix}expected_spend").alias("s"), F.count("*").alias("n"),
                         F.sum(F.col(f"{prefix}treat").cast("long")).alias("t")).collect()[0]
        log.info("discount choice over %d customers (%s), row by row: %d treated", agg["n"],
                 "model" if price > 0 else "none", int(agg["t"] or 0))
        return {"budget": None, "spend": float(agg["s"] or 0.0), "price_of_spend": float(price),
                "price_source": "model" if price > 0 else "none"}, None
    levels = list(model.unwrap_python_model().model.levels)
    from offerlab.uplift.pyfunc import PER_LEVEL_COLUMNS

    cols = ["customer_id", "_bucket", "_pos"] + [c for k in PER_LEVEL_COLUMNS.values() for lv in levels
                                                 if (c := f"{prefix}{k}_{lv}") in scored.columns]
    frame = scored.select(*cols).toPandas().sort_values(["_bucket", "_pos"], kind="stable").reset_index(drop=True)
    m = sm.discount_matrices(frame, model, prefix)
    choice, price, source = sm.whole_file_choice(m, budget)
    moved = np.flatnonzero(choice != choose_at_price(m["profit"], m["spend"], price))
    ids = frame["customer_id"].to_numpy() if m["rows"] is None else frame["customer_id"].to_numpy()[m["rows"]]
    fixed = {str(ids[i]): int(choice[i]) for i in moved}
    used = float(m["spend"][np.arange(len(choice)), choice].sum())
    log.info("discount allocation over %d customers on the driver: price of spend %.4g, %d treated, %d moved by "
             "the fill of the leftover budget", len(choice), price, int((choice > 0).sum()), len(moved))
    pp = PricePlan(plan, float(price), spark.sparkContext.broadcast(fixed), prefix)
    return {"budget": budget, "spend": used, "price_of_spend": float(price), "price_source": source,
            "moved_by_fill": len(moved)}, pp
