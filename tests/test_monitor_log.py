"""The decision log: pseudonymous records from the service and the batch scorer, never blocking or failing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from offerlab.monitor.decision_log import DecisionLog, ParquetSink, PostgresSink, read_decisions, reset_process_log
from offerlab.monitor.records import bucket, safe_block
from serving_models import serving_models  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
KEY = "test-key"


def _records(ids: list[str], key: str) -> pd.DataFrame:
    from offerlab.monitor.decision_log import pseudonyms

    return pd.DataFrame({"customer_key": pseudonyms(ids, key), "logged_at": pd.Timestamp("2025-01-02 10:00"),
                         "day": "2025-01-02", "status": "answered", "p_buy_30d": 0.5, "features": "{}"})


def test_records_are_written_by_day_with_keyed_pseudonyms(tmp_path):
    dlog = DecisionLog(ParquetSink(tmp_path / "log"), KEY, flush_s=0.05)
    assert dlog.submit((_records, (["c-1", "c-2"],)))
    assert dlog.flush(10)
    dlog.close()
    got = read_decisions([str(tmp_path / "log")])
    want = hmac.new(KEY.encode(), b"c-1", hashlib.sha256).hexdigest()[:32]
    assert got["customer_key"].tolist()[0] == want and len(got) == 2 and dlog.counts()["written"] == 2
    files = list((tmp_path / "log" / "day=2025-01-02").glob("*.parquet"))
    assert len(files) == 1 and b"c-1" not in files[0].read_bytes()


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    gate = threading.Event()

    class SlowSink(ParquetSink):
        def write(self, records):
            gate.wait(10)
            super().write(records)

    drops = []
    dlog = DecisionLog(SlowSink(tmp_path / "log"), KEY, max_queue=2, flush_s=0.05, batch=1,
                       on_drop=lambda reason, n: drops.append((reason, n)))
    dlog.submit((_records, (["a"],)))
    time.sleep(0.3)  # the thread took the first item and waits in the sink
    t0 = time.perf_counter()
    accepted = [dlog.submit((_records, ([f"c{i}"],))) for i in range(5)]
    assert time.perf_counter() - t0 < 0.05  # never waits
    assert accepted == [True, True, False, False, False]
    assert dlog.dropped_overflow == 3 and drops == [("overflow", 1)] * 3
    gate.set()
    assert dlog.flush(10)
    dlog.close()
    assert dlog.counts() == {"written": 3, "dropped_overflow": 3, "dropped_sink": 0}


def test_a_sink_that_is_down_is_counted_not_raised():
    dlog = DecisionLog(PostgresSink("postgresql://nobody@127.0.0.1:9/none"), KEY, flush_s=0.05)
    dlog.submit((_records, (["a", "b"],)))
    assert dlog.flush(15)
    dlog.close()
    assert dlog.counts() == {"written": 0, "dropped_overflow": 0, "dropped_sink": 2}


def test_amounts_are_logged_as_bucket_indexes_only():
    frame = pd.DataFrame({"income": [0.0, 1.0, 3.0, 42000.0], "beh_recency_days": [1.5, 2.0, 3.0, 4.0],
                          "housing": ["own", "rent", None, "own"]})
    out = safe_block("credit", frame)
    assert list(out.columns) == ["credit.income__q", "credit.beh_recency_days", "credit.housing"]
    # floor(2 log2(1 + x)): 0 -> 0, 1 -> 2, 3 -> 4, 42000 -> floor(2 x 15.358) = 30
    assert out["credit.income__q"].tolist() == [0, 2, 4, 30] and bucket([float("nan")])[0] != bucket([0])[0]
    assert safe_block("uplift", pd.DataFrame({"spend_90d": [10.0]})).columns.tolist() == ["uplift.spend_90d__q"]


@pytest.fixture()
def logged_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFERLAB_DECISION_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("OFFERLAB_DECISION_LOG_KEY", KEY)
    monkeypatch.setenv("OFFERLAB_DECISION_LOG_FLUSH_S", "0.05")
    reset_process_log()
    yield tmp_path / "log"
    reset_process_log()


def test_offers_local_logs_every_answer_and_a_down_sink_never_fails_it(serving_models, logged_env, monkeypatch):  # noqa: F811
    from serving.service import OffersLocal

    from offerlab.monitor import decision_log
    from offerlab.serving import openapi
    from offerlab.serving.contracts import OffersRequest

    svc = OffersLocal()
    assert svc.wait_ready(120)
    example = openapi.example_request({p.family: p.needs() for p in svc.parts})  # valid for the loaded models
    example.pop("application")  # credit's record figures: test_monitor_reports' simulated production
    reqs = [OffersRequest.model_validate({**example, "customer_id": f"cust-{k}", "as_of": "2025-01-01T00:00:00",
                                          "history": serving_models.history(n=k)}) for k in (3, 20)]
    answers = asyncio.run(svc.offers_batch(reqs))
    dlog = decision_log.process_log()
    assert dlog.flush(30)
    got = read_decisions([str(logged_env)]).set_index("customer_key")
    keys = decision_log.pseudonyms(["cust-3", "cust-20"], KEY)
    assert set(got.index) == set(keys) and (got["source"] == "service:offers-local").all()
    row = got.loc[keys[1]]
    assert row["p_buy_30d"] == pytest.approx(answers[1].timing.p_buy_30d)
    assert row["discount_expected_profit"] == pytest.approx(answers[1].discount.expected_incremental_profit)
    assert row["uplift_version"] == answers[1].discount.model_version and pd.isna(row["credit_pd"])
    assert row["f.timing.purchases"] == 20 and row["f.uplift.region"] == example["attributes"]["region"]
    assert row["p_none"] == 1.0 * (answers[1].discount.level is None)  # no exploration: none is certain or never
    raw = b"".join(p.read_bytes() for p in logged_env.rglob("*.parquet"))
    assert b"cust-20" not in raw

    monkeypatch.setattr(dlog, "sink", PostgresSink("postgresql://nobody@127.0.0.1:9/none"))
    before = dlog.dropped_sink
    again = asyncio.run(svc.offers_batch(reqs[:1]))  # the sink is down: the answer comes all the same
    assert again[0].customer_id == "cust-3" and dlog.flush(15) and dlog.dropped_sink == before + 1


def test_batch_scoring_logs_every_row(serving_models, logged_env, tmp_path):  # noqa: F811
    from offerlab.monitor.decision_log import pseudonyms
    from offerlab.serving.score import run_score

    s = serving_models.synth
    some = s.customers["customer_id"].head(12)
    s.transactions[s.transactions["customer_id"].isin(some)].to_parquet(tmp_path / "tx.parquet")
    s.customers.to_parquet(tmp_path / "c.parquet")
    summary = run_score("discount", tmp_path / "tx.parquet", tmp_path / "d.parquet", customers=tmp_path / "c.parquet",
                        progress=False)
    assert summary["decision_log"] == {"written": 12, "dropped_overflow": 0, "dropped_sink": 0}
    got = read_decisions([str(logged_env)])
    scored = pd.read_parquet(tmp_path / "d.parquet")
    assert sorted(got["customer_key"]) == sorted(pseudonyms(scored["customer_id"], KEY))
    assert (got["source"] == "score:discount").all() and got["f.uplift.region"].notna().all()
    assert "f.uplift.spend_90d" not in got and got.filter(like="__q").shape[1] > 0


def test_a_log_without_a_key_is_refused_naming_the_variable(monkeypatch, tmp_path):
    from offerlab.monitor.decision_log import DecisionLogConfigError, settings_from_env

    monkeypatch.setenv("OFFERLAB_DECISION_LOG", str(tmp_path))
    monkeypatch.delenv("OFFERLAB_DECISION_LOG_KEY", raising=False)
    with pytest.raises(DecisionLogConfigError, match="OFFERLAB_DECISION_LOG_KEY"):
        settings_from_env()


@pytest.mark.slow
def test_postgres_sink_against_a_real_server():
    import pg_server

    if not pg_server.available():
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    with pg_server.postgres_server(("decisions",)) as base:
        url = f"{base}/decisions"
        dlog = DecisionLog(PostgresSink(url), KEY, flush_s=0.05)
        dlog.submit((_records, (["c-1", "c-2", "c-3"],)))
        assert dlog.flush(30)
        dlog.close()
        assert dlog.counts()["written"] == 3
        got = read_decisions([url])
        assert len(got) == 3 and set(got["customer_key"]) == set(_records(["c-1", "c-2", "c-3"], KEY)["customer_key"])
        assert got["p_buy_30d"].tolist() == [0.5] * 3 and (got["day"] == "2025-01-02").all()
