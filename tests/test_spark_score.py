"""`offerlab score --engine spark`: on a local Spark (local[2]) the same customers give the same answers as the
single-machine scorer, row by row (ids, levels, dates exactly; probabilities to 1e-6), for timing, discount, credit
and offers, and for a budgeted whole-file allocation; refusals are the single-machine ones, before any Spark job;
models load once per executor process; the nightly job definition parses."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main, score_cmd
from offerlab.serving.score import run_score
from serving_models import serving_models  # noqa: F401
from test_serving_score import write_tables

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 12  # customers per group: several groups (tasks) per command on 2 cores


@pytest.fixture(scope="module")
def spark():
    from offerlab.serving.spark_score import get_spark

    session = get_spark("local[2]", {"spark.sql.shuffle.partitions": "2"}, progress=False)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def tables(serving_models, tmp_path_factory):  # noqa: F811
    """40 synthetic customers (about a third of them applicants), their applications and the customers table."""
    s = serving_models.synth
    applicants = s.applications["customer_id"].drop_duplicates().head(14)
    others = s.customers.loc[~s.customers["customer_id"].isin(applicants), "customer_id"].head(26)
    return write_tables(s, pd.concat([applicants, others]), tmp_path_factory.mktemp("spark_inputs"))


def _inputs(cmd: str, paths: dict) -> tuple[Path, dict]:
    return {"timing": (paths["tx"], {}), "discount": (paths["tx"], {"customers": paths["cust"]}),
            "credit": (paths["apps"], {"transactions": paths["tx"]}),
            "offers": (paths["tx"], {"customers": paths["cust"], "applications": paths["apps"]})}[cmd]


def _both(cmd: str, paths: dict, tmp: Path, spark, **kw) -> tuple[dict, pd.DataFrame, dict, pd.DataFrame]:
    inp, extra = _inputs(cmd, paths)
    opts = {"progress": False, "chunk_size": CHUNK, "n_samples": 8, **extra, **kw}
    local = run_score(cmd, inp, tmp / f"{cmd}.parquet", **opts)
    remote = run_score(cmd, inp, str(tmp / f"{cmd}_spark"), engine="spark", spark=spark, **opts)
    key = ["application_id"] if cmd == "credit" else ["customer_id"]
    a = pd.read_parquet(tmp / f"{cmd}.parquet").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(tmp / f"{cmd}_spark").sort_values(key).reset_index(drop=True)
    return local, a, remote, b


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns in the same order, same rows: non-float columns exactly, probabilities to 1e-6, the other
    floats (days, revenue, profit, limits) to 1e-6 relative."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for c in a.columns:
        x, y = a[c], b[c]
        if x.dtype.kind == "f":
            assert (x.isna() == y.isna()).all(), c
            tol = {"atol": 1e-6, "rtol": 0.0} if c.split("_")[0] in ("p", "timing", "discount", "credit") and (
                "_p_" in f"_{c}_" or c.endswith("_prob") or "p_within" in c or c.endswith("_pd")) else {"rtol": 1e-6}
            np.testing.assert_allclose(y.to_numpy(float), x.to_numpy(float), err_msg=c, **tol)
        else:
            assert x.astype(str).tolist() == y.astype(str).tolist(), c


# --------------------------------------------------------------------------------------------- same answers
@pytest.mark.parametrize("cmd", ["timing", "discount", "credit", "offers"])
def test_spark_equals_single_machine_row_by_row(cmd, tables, spark, tmp_path):
    paths, tx = tables
    local, a, remote, b = _both(cmd, paths, tmp_path, spark)
    assert_same_rows(a, b)
    for k in ("customers", "rows", "as_of", "price_of_spend", "price_source", "budget"):
        assert remote.get(k) == local.get(k), k
    if "spend" in local:
        assert remote["spend"] == pytest.approx(local["spend"], rel=1e-9)
    n_models = 3 if cmd == "offers" else 1
    assert remote["engine"] == "spark" and remote["groups"] == -(-local["customers"] // CHUNK) >= 2
    # one load per model per executor Python process (2 cores: at most 2 workers), never one per group
    assert remote["model_loads"] <= 2 * n_models  # later runs reuse the loaded (version-pinned) models: 0
    assert remote["groups"] <= 2 or remote["model_loads"] < remote["groups"] * n_models
    assert all(re.fullmatch(r"models:/offerlab-\w+/\d+", u) for u in remote["models"].values())
    if cmd == "offers":
        assert b["credit_pd"].notna().sum() == 14 and b["discount_level"].notna().all()


def test_budgeted_allocation_is_the_whole_files_on_spark_too(tables, spark, tmp_path):
    from offerlab.serving.score import discount_matrices, load_model
    from offerlab.uplift.policy import allocate, choose_at_price

    paths, _ = tables
    free = run_score("discount", paths["tx"], tmp_path / "free.parquet", customers=paths["cust"], progress=False)
    frame = pd.read_parquet(tmp_path / "free.parquet")
    m = discount_matrices(frame, load_model("discount"))
    # a budget whose allocation needs the greedy fill (rows off the one-price choice), so pass 2's overrides count
    budget = next(b for b in free["spend"] * np.linspace(0.2, 0.8, 25)
                  if ((a := allocate(m["profit"], m["spend"], b)).choice
                      != choose_at_price(m["profit"], m["spend"], a.price)).any())
    local, a, remote, b = _both("discount", paths, tmp_path, spark, budget=budget)
    assert_same_rows(a, b)
    assert remote["price_of_spend"] == local["price_of_spend"] > 0 and remote["price_source"] == "budget"
    assert remote["spend"] == local["spend"] <= budget and remote["moved_by_fill"] >= 1
    assert b["expected_spend"].sum() == pytest.approx(local["spend"])


# ---------------------------------------------------------------------------------------------- refusals
def _jobs(spark) -> int:
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def _refusal(spark, **kw) -> tuple[str, str, int]:
    """The single-machine and Spark messages of one bad call, and the number of Spark jobs the latter ran."""
    msgs = []
    with pytest.raises(ValueError) as local:
        run_score(progress=False, **kw)
    before = _jobs(spark)
    with pytest.raises(ValueError) as remote:
        run_score(progress=False, engine="spark", spark=spark, **kw)
    msgs = [str(local.value), str(remote.value)]
    return msgs[0], msgs[1], _jobs(spark) - before


def test_refusals_are_the_single_machine_ones_before_any_spark_job(tables, spark, tmp_path):
    paths, tx = tables
    no_ts = tmp_path / "no_ts.parquet"
    tx.drop(columns="timestamp").to_parquet(no_ts)
    no_amount = tmp_path / "no_amount.parquet"
    tx.drop(columns="amount").to_parquet(no_amount)
    cases = [  # (call, what the message names)
        ({"command": "timing", "input_path": no_ts}, ["'transactions'", "'timestamp'", "no_ts.parquet"]),
        ({"command": "timing", "input_path": paths["tx"], "alias": "nosuch"},
         ["cannot load the timing model", "nosuch"]),
        ({"command": "offers", "input_path": paths["tx"], "alias": "nosuch"}, ["cannot load the", "nosuch"]),
        ({"command": "discount", "input_path": no_amount, "customers": paths["cust"]}, ["'amount'", "no_amount"]),
        ({"command": "timing", "input_path": tmp_path / "nope.parquet"}, ["does not exist"]),
        ({"command": "discount", "input_path": paths["tx"], "budget": -1.0}, ["--budget"]),
        ({"command": "timing", "input_path": paths["tx"], "budget": 5.0}, ["--budget"]),
    ]
    for kw, words in cases:
        out = tmp_path / f"out_{len(words)}_{kw['command']}"
        local, remote, jobs = _refusal(spark, output=str(out) + ".parquet", **kw)
        assert remote == local.replace(str(out) + ".parquet", str(out) + ".parquet"), (local, remote)
        assert all(w in remote for w in words), remote
        assert jobs == 0, f"{remote}: {jobs} Spark jobs ran before the refusal"
        assert not Path(str(out) + ".parquet").exists()

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "earlier.txt").write_text("earlier results")
    with pytest.raises(ValueError, match="--force"):
        run_score("timing", paths["tx"], str(kept), engine="spark", spark=spark, progress=False)
    with pytest.raises(ValueError, match="--partition-by 'nosuch' is not an output column"):
        run_score("timing", paths["tx"], str(kept), engine="spark", spark=spark, progress=False, force=True,
                  partition_by=["nosuch"], chunk_size=1000)
    assert (kept / "earlier.txt").read_text() == "earlier results" and len(list(tmp_path.glob("kept.__*"))) == 0
    with pytest.raises(ValueError, match="--partition-by: for --engine spark only"):
        run_score("timing", paths["tx"], tmp_path / "x.parquet", progress=False, partition_by=["level"])


# --------------------------------------------------------------------------------- CLI and job definition
def test_cli_engine_spark_partitions_the_output_and_replaces_it_with_force(tables, spark, tmp_path):
    paths, _ = tables
    out = tmp_path / "discounts"
    args = ["score", "discount", "--engine", "spark", "--input", str(paths["tx"]), "--customers",
            str(paths["cust"]), "--output", str(out), "--partition-by", "level", "--chunk-size", "25"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert '"engine": "spark"' in res.output and '"partition_by": [' in res.output
    parts = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert parts and all(p.startswith("level=") for p in parts)
    got = pd.read_parquet(out)
    assert len(got) == 40 and set(got["level"].astype(str)) == {p.removeprefix("level=") for p in parts}
    res = CliRunner().invoke(main, [*args, "--force"])  # replaced as a whole, nothing left aside
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out)) == 40 and sorted(p.name for p in tmp_path.iterdir()) == ["discounts"]
    res = CliRunner().invoke(main, ["score", "timing", "--input", str(paths["tx"]), "--output", "x.parquet",
                                    "--spark-conf", "spark.driver.memory=4g"])
    assert res.exit_code == 2 and "--spark-conf: for --engine spark only" in res.output


def _spark_submit_line(script: Path) -> list[str]:
    text = script.read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    line = next(ln for ln in joined.splitlines() if ln.strip().startswith("spark-submit "))
    return shlex.split(line)


SUBMIT_VALUED = {"--master", "--deploy-mode", "--name", "--archives", "--conf", "--num-executors",
                 "--executor-cores", "--executor-memory", "--driver-memory", "--py-files", "--files"}


def test_nightly_job_definition_parses_and_its_entry_point_scores(tables, spark, tmp_path):
    script = ROOT / "jobs" / "nightly_spark.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    argv = _spark_submit_line(script)[1:]
    opts, i = {}, 0
    while argv[i].startswith("--"):
        assert argv[i] in SUBMIT_VALUED, f"unknown spark-submit option {argv[i]}"
        opts.setdefault(argv[i], []).append(argv[i + 1])
        i += 2
    app, app_args = argv[i], argv[i + 1:]
    assert (ROOT / app).is_file() and app.endswith(".py")
    assert all(re.fullmatch(r"[\w.]+=.+", c) for c in opts["--conf"])
    assert opts["--master"] == ["yarn"] and "spark.pyspark.python=./environment/bin/python" in opts["--conf"]
    ctx = score_cmd.make_context("score", [*app_args, "--engine", "spark"])  # click parses the job's options
    assert ctx.params["command"] == "offers" and ctx.params["partition_by"] == ("discount_level",)
    assert ctx.params["chunk_size"] == 50_000 and ctx.params["alias"] == "champion"

    # the entry point itself, in this process (its session is the active local one)
    import runpy

    entry = runpy.run_path(str(ROOT / app))
    out = tmp_path / "reminders"
    with pytest.raises(SystemExit) as done:
        entry["run"](["timing", "--input", str(tables[0]["tx"]), "--output", str(out), "--samples", "4"])
    assert done.value.code == 0 and len(pd.read_parquet(out)) == 40


# ------------------------------------------------------------------------------------------- spark_udf
def test_credit_pyfunc_through_mlflow_spark_udf_where_input_is_one_row_each(serving_models, tables, spark,  # noqa: F811
                                                                            tmp_path):
    """Where a family's pyfunc input is one row per customer (credit: applications carrying their beh_* and
    ret_* / rep_* history columns), `mlflow.pyfunc.spark_udf` scores it and agrees with the scorer."""
    import mlflow

    from offerlab.serving.score import load_model

    paths, tx = tables
    apps = pd.read_parquet(paths["apps"])
    cm = load_model("credit").unwrap_python_model().model
    feats = cm.features(apps, tx)
    beh = [c for c in feats.columns if c.startswith(("beh_", "ret_", "rep_")) and c not in apps.columns]
    rows = apps.drop(columns="default").join(feats[beh])
    udf = mlflow.pyfunc.spark_udf(spark, "models:/offerlab-credit@champion", result_type="pd double, grade string",
                                  env_manager="local")
    sdf = spark.createDataFrame(rows.assign(applied_at=rows["applied_at"].astype("datetime64[us]")))
    got = sdf.select("application_id", udf(*[sdf[c] for c in rows.columns]).alias("r")).select(
        "application_id", "r.pd", "r.grade").toPandas().set_index("application_id").loc[apps["application_id"]]
    ref = load_model("credit").predict(rows)
    np.testing.assert_allclose(got["pd"].to_numpy(), ref["pd"].to_numpy(), atol=1e-6)
    assert got["grade"].tolist() == ref["grade"].tolist()


# ------------------------------------------------------------------------------------------- pure parts
def test_timestamps_read_through_spark_get_pandas_dtypes():
    from offerlab.serving.spark_score import restore_times

    ns = pd.Series([pd.Timestamp("2024-03-01 10:00:00.123456789"), pd.Timestamp("2024-03-02")])
    pdf = pd.DataFrame({"a": ns.astype("int64"), "b": ns.dt.floor("us").astype("datetime64[us]") + pd.Timedelta(hours=1),
                        "c": ns.dt.floor("us").astype("datetime64[us]")})
    out = restore_times(pdf.copy(), {"a": ("ns", "datetime64[ns]"), "b": ("ltz", "datetime64[us, UTC]"),
                                     "c": ("ntz", "datetime64[ms]")}, "Europe/Berlin")
    assert out["a"].tolist() == ns.tolist() and out["a"].dtype == "datetime64[ns]"
    # 11:00 wall time in Berlin (UTC+1 in March) is 10:00 UTC
    assert out["b"].dt.tz is not None and out["b"].iloc[0] == pd.Timestamp("2024-03-01 10:00:00.123456", tz="UTC")
    assert out["c"].dtype == "datetime64[ms]" and out["c"].iloc[0] == pd.Timestamp("2024-03-01 10:00:00.123")

