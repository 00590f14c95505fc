"""The data spec: a stranger's files described once; every key of money or meaning refused when missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.data.loaders import DataValidationError
from offerlab.data.spec import SpecData, SpecError, read_spec
from offerlab.data.stranger import LEVEL_NAMES, write_stranger_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth():
    from offerlab.data.synth import generate

    return generate(1500, seed=3)


@pytest.fixture()
def files(synth, tmp_path):
    return write_stranger_files(synth, tmp_path / "mine")


def edit(spec_path: Path, change) -> Path:
    raw = yaml.safe_load(spec_path.read_text())
    change(raw)
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec_path


def refused(spec_path: Path, what=lambda d: d.require("uplift")) -> str:
    with pytest.raises((SpecError, DataValidationError, ValueError)) as e:
        what(SpecData.load(spec_path))
    return str(e.value)


def test_the_spec_gives_the_built_in_campaign_exactly(synth, files):
    from offerlab.uplift.data import from_synth

    ours, ref = SpecData.load(files).campaign_data(), from_synth(synth)
    assert ours.levels == [LEVEL_NAMES[lv] for lv in ref.levels] and ours.assignment == "randomised"
    assert ours.discounts == {LEVEL_NAMES[k]: v for k, v in ref.discounts.items()}
    np.testing.assert_allclose(ours.revenue, ref.revenue, rtol=1e-12, atol=1e-9)  # gross -> net
    assert (ours.treatment == ref.treatment).all() and (ours.conversion == ref.conversion).all()  # Y/N labels
    for a, b in zip(ours.features.columns, ref.features.columns, strict=True):  # same values, the file's names
        x, y = ours.features[a], ref.features[b]
        if pd.api.types.is_numeric_dtype(x):
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), equal_nan=True)
        else:
            assert (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all()
    # an RCT whose log carries no design: the declared one, else the arms' shares
    np.testing.assert_allclose(ours.propensity, ref.propensity)
    undeclared = SpecData.load(edit(files, lambda d: d["semantics"].pop("assignment_probabilities"))).campaign_data()
    np.testing.assert_allclose(undeclared.propensity[0], np.bincount(ours.treatment) / len(ours))
    apps = SpecData.load(files).labelled_applications()
    assert apps["default"].tolist() == synth.applications["default"].tolist()  # "bad"/"good" -> 1/0
    tx = SpecData.load(files).table("transactions")
    assert (tx["timestamp"].to_numpy() == synth.transactions["timestamp"].to_numpy()).all()  # +00:00, zone UTC


def test_the_shipped_example_describes_those_files(files):
    example = read_spec(ROOT / "configs/data/spec_example.yaml")
    written = read_spec(files)
    assert example.model_dump(exclude={"economics": {"credit": {"terms"}}}) == \
        written.model_dump(exclude={"economics": {"credit": {"terms"}}})
    shutil.copy(ROOT / "configs/data/spec_example.yaml", files.parent / "example.yaml")
    data = SpecData.load(files.parent / "example.yaml", {"economics.credit.terms": str(ROOT / "configs/credit/terms.yaml")})
    assert data.readiness() == {"timing": "ready", "uplift": "ready", "credit": "ready"}


@pytest.mark.parametrize("change, key, words", [
    (lambda d: d["economics"]["discounts"].pop("promo_b"), "economics.discounts.promo_b", "is not set"),
    (lambda d: d["economics"]["discounts"].update(promo_b=None), "economics.discounts.promo_b", "is blank"),
    (lambda d: d["economics"]["discounts"].update(promo_z=0.2), "economics.discounts.promo_z", "no such campaign level"),
    (lambda d: d["economics"]["discounts"].update(holdout=0.05), "economics.discounts.holdout", "gets no discount"),
    (lambda d: d["semantics"].pop("revenue"), "semantics.revenue", "'promo_a' has a 0.05 discount"),
    (lambda d: d["economics"].pop("margin"), "economics.margin", "not set"),
    (lambda d: d["economics"].pop("contact_cost"), "economics.contact_cost", "not set"),
    (lambda d: d["tables"]["campaign"].pop("control"), "tables.campaign.control", "levels in the file"),
    (lambda d: d["semantics"].pop("campaign_feature_date"), "semantics.campaign_feature_date", "not set"),
])
def test_uplift_refuses_a_missing_money_or_meaning_key(files, change, key, words):
    msg = refused(edit(files, change))
    assert f"key '{key}'" in msg and words in msg, msg


def test_e_mail_levels_at_zero_need_no_revenue_meaning(files):
    spec = edit(files, lambda d: (d["economics"].update(discounts=dict.fromkeys(d["economics"]["discounts"], 0.0)),
                                  d["semantics"].pop("revenue")))
    assert SpecData.load(spec).policy()["discounts"]["promo_c"] == 0.0


@pytest.mark.parametrize("change, key, words", [
    (lambda d: d["tables"]["applications"].pop("label_values"), "tables.applications.label_values",
     "values in the file: ['bad', 'good']"),
    (lambda d: d["economics"]["credit"].pop("income_column"), "economics.credit.income_column", "not set"),
    (lambda d: d["economics"]["credit"].update(amount_column="loan"), "economics.credit.amount_column", "'loan'"),
    (lambda d: d["economics"].pop("credit"), "economics.credit.terms", "not set"),
])
def test_credit_refuses_undeclared_labels_and_terms_columns(files, change, key, words):
    msg = refused(edit(files, change), lambda d: d.require("credit"))
    assert f"key '{key}'" in msg and words in msg, msg


def test_a_label_value_outside_the_declared_two_is_refused_with_its_row(files):
    apps = pd.read_csv(files.parent / "applications.csv")
    apps.loc[5, "outcome"] = "written_off"
    apps.to_csv(files.parent / "applications.csv", index=False)
    msg = refused(files, lambda d: d.require("credit"))
    assert "'written_off' is not one of the declared label_values" in msg and "row 5" in msg


@pytest.mark.parametrize("keys", [{1: 1, 0: 0}, {"1": 1, "0": 0}])
def test_a_0_1_label_maps_with_int_or_string_keys(files, keys):
    apps = pd.read_csv(files.parent / "applications.csv")
    apps["outcome"] = (apps["outcome"] == "bad").astype(int)
    apps.to_csv(files.parent / "applications.csv", index=False)
    spec = edit(files, lambda d: d["tables"]["applications"].update(label_values=keys))
    assert SpecData.load(spec).labelled_applications()["default"].tolist() == apps["outcome"].tolist()


def test_two_raw_values_for_one_class_are_refused(files):
    msg = refused(edit(files, lambda d: d["tables"]["applications"].update(label_values={"bad": 1, "good": 1})),
                  lambda d: d.require("credit"))
    assert "label_values" in msg and "exactly one raw value to 1 and one to 0" in msg


def test_offsets_without_a_time_zone_are_refused_and_a_zone_shifts_the_days(files):
    msg = refused(edit(files, lambda d: d["semantics"].pop("timezone")), lambda d: d.table("transactions"))
    assert "semantics.timezone" in msg and "offsets" in msg
    spec = edit(files, lambda d: d["semantics"].update(timezone="Asia/Tokyo"))
    utc = SpecData.load(edit(files, lambda d: d["semantics"].update(timezone="UTC"))).table("transactions")
    local = SpecData.load(edit(spec, lambda d: d["semantics"].update(timezone="Asia/Tokyo"))).table("transactions")
    assert (local["timestamp"] - utc["timestamp"]).dt.total_seconds().eq(9 * 3600).all()


def test_unknown_keys_and_bad_overrides_are_named(files):
    with pytest.raises(SpecError, match="key 'economics.margn': unknown key"):
        read_spec(files, {"economics.margn": 0.3})
    with pytest.raises(SpecError, match="key 'economics.margin'"):
        read_spec(files, {"economics.margin": -1})
    with pytest.raises(SpecError, match="key 'semantics.timezone': unknown time zone 'Mars/Olympus'"):
        read_spec(files, {"semantics.timezone": "Mars/Olympus"})
    assert read_spec(files, {"economics.margin": 0.25}).economics.margin == 0.25


def test_timing_needs_its_protocol_dates(files):
    msg = refused(edit(files, lambda d: d["protocol"].pop("holdout_end")), lambda d: d.require("timing"))
    assert "key 'protocol.holdout_end'" in msg


def test_cli_refusals_name_the_key_and_leave_earlier_results(files, tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("earlier")
    spec = edit(files, lambda d: d["economics"]["discounts"].pop("promo_c"))
    r = CliRunner().invoke(main, ["bench", "uplift", "--data", str(spec), "--out", str(out)])
    assert r.exit_code == 2 and "economics.discounts.promo_c" in r.output and out.read_text() == "earlier"
    r = CliRunner().invoke(main, ["bench", "uplift", "--data", str(spec), "--data-set", "economics.discounts.promo_c=abc",
                                  "--out", str(out)])
    assert r.exit_code == 2 and "economics.discounts.promo_c" in r.output
    r = CliRunner().invoke(main, ["bench", "credit", "--data", str(spec), "--dataset", "german", "--out", str(out)])
    assert r.exit_code == 2 and "--dataset and --data both name the data" in r.output
    r = CliRunner().invoke(main, ["bench", "timing", "--data", str(spec), "--data-set", "protocol.holdout_end=2024-01-01",
                                  "--out", str(out)])
    assert r.exit_code == 2 and "protocol.holdout_end" in r.output and "must be after" in r.output
    assert out.read_text() == "earlier"


def test_a_bare_mapping_refuses_discounts_it_cannot_price(tmp_path):
    """The issue's d5/d10/d15 log: no 0% fallback, and no pricing without knowing net or gross revenue."""
    rng = np.random.default_rng(0)
    n = 400
    pd.DataFrame({"user": [f"u{i}" for i in range(n)], "arm": rng.choice(["none", "d5", "d10", "d15"], n),
                  "bought": rng.integers(0, 2, n), "spend": rng.gamma(2, 10, n), "recency": rng.integers(1, 9, n)}
                 ).to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "map.yaml").write_text(yaml.safe_dump({
        "table": "campaign", "columns": {"customer_id": "user", "treatment": "arm", "conversion": "bought",
                                         "revenue": "spend"}, "control": "none", "keep": ["recency"]}))
    args = ["bench", "uplift", "--data-path", str(tmp_path / "log.csv"), "--mapping", str(tmp_path / "map.yaml"),
            "--out", str(tmp_path / "o.json"), "--margin", "0.3", "--contact-cost", "0.1"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "no discount rate for level 'd10'" in r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"base": str(ROOT / "configs/uplift/default.yaml"),
                                   "policy": {"discounts": {"d5": 0.05, "d10": 0.1, "d15": 0.15}}}))
    r = CliRunner().invoke(main, [*args, "--config", str(cfg)])
    assert r.exit_code == 2 and "semantics.revenue" in r.output


def test_data_init_drafts_blanks_that_check_and_run_refuse(synth, tmp_path):
    folder = write_stranger_files(synth, tmp_path / "files").parent
    draft = tmp_path / "draft.yaml"
    r = CliRunner().invoke(main, ["data", "init", *[str(folder / f) for f in
                                                    ("orders.csv", "customers.csv", "campaign.csv", "applications.csv",
                                                     "returns.csv", "repayments.csv")],
                                  "--out", str(draft)])
    assert r.exit_code == 0, r.output
    raw = yaml.safe_load(draft.read_text())
    assert raw["tables"]["transactions"]["columns"] == {"customer_id": "client_ref", "timestamp": "ordered",
                                                        "amount": "basket_value", "category": "dept",
                                                        "order_id": "order_no"} | raw["tables"]["transactions"]["columns"]
    assert raw["tables"]["campaign"]["columns"]["treatment"] == "offer"
    assert raw["economics"]["discounts"] == {"holdout": None, "promo_a": None, "promo_b": None, "promo_c": None}
    assert raw["semantics"]["revenue"] is None and raw["semantics"]["timezone"] is None  # offsets seen: zone asked
    assert raw["tables"]["applications"]["label_values"] == {"bad": None, "good": None}
    # returns and instalments guessed from their names and content; what they mean is asked, not assumed
    assert raw["tables"]["transactions"]["columns"]["payment_method"] == "paid_with"
    assert raw["tables"]["campaign"]["columns"]["returned_revenue"] == "returned_list_value"
    assert raw["tables"]["returns"]["columns"] == {"customer_id": "client_ref", "order_id": "order_no",
                                                   "returned_at": "returned_on", "amount": "refund"}
    assert raw["tables"]["repayments"]["columns"] == {
        "customer_id": "client_ref", "credit_id": "loan_ref", "issued_at": "started", "due_date": "due",
        "paid_at": "paid", "amount_due": "due_amount", "amount_paid": "paid_amount"}
    assert raw["semantics"]["returns"] is None and raw["economics"]["returns"] == {"counted": None,
                                                                                   "handling_cost": None}
    r = CliRunner().invoke(main, ["data", "init", str(folder / "orders.csv"), "--out", str(draft)])
    assert r.exit_code == 2 and "exists" in r.output  # never overwritten without --force
    # the blanks are refused with their keys, one after the other, until --data-set fills them in
    fills = []
    for key in ("tables.campaign.label_values.N", "tables.campaign.label_values.Y", "tables.campaign.control",
                "economics.discounts.promo_a"):
        r = CliRunner().invoke(main, ["bench", "uplift", "--data", str(draft), *fills, "--out", str(tmp_path / "u.json")])
        assert r.exit_code == 2 and f"key '{key}'" in r.output, (key, r.output)
        value = {"tables.campaign.control": "holdout", "tables.campaign.label_values.N": 0}.get(key, 1)
        fills += ["--data-set", f"{key}={value}"]
    assert not (tmp_path / "u.json").exists()


def test_returns_economics_and_semantics_blanks_are_refused_naming_the_key(files):
    blank = {"counted": None, "handling_cost": None}
    msg = refused(edit(files, lambda d: d["economics"].update(returns=dict(blank))), lambda d: d.policy())
    assert "key 'economics.returns.counted': not set" in msg
    msg = refused(edit(files, lambda d: d["economics"].update(returns={**blank, "counted": True})), lambda d: d.policy())
    assert "key 'economics.returns.handling_cost': not set" in msg
    msg = refused(edit(files, lambda d: d["economics"].pop("returns")), lambda d: d.campaign_data() and
                  __import__("offerlab.uplift.returns", fromlist=["x"]).check_returns_declared(d.campaign_data(), None))
    assert "returned_revenue" in msg and "economics.returns" in msg
    from offerlab.data.spec import SpecData, family_overrides

    spec = edit(files, lambda d: d["semantics"].update(returns="net"))
    assert family_overrides(SpecData.load(spec), "timing")["data"]["returns"] == "net"  # the timing family's key


def test_a_declared_design_must_cover_every_level_and_sum_to_one(files):
    msg = refused(edit(files, lambda d: d["semantics"]["assignment_probabilities"].pop("promo_a")),
                  lambda d: d.campaign_data())
    assert "key 'semantics.assignment_probabilities.promo_a': not set" in msg
    msg = refused(edit(files, lambda d: d["semantics"]["assignment_probabilities"].update(promo_a=0.5,
                                                                                          promo_b=0.5)),
                  lambda d: d.campaign_data())
    assert "sum to 1" in msg


def test_data_check_profiles_a_draft_and_says_what_each_family_still_needs(files, tmp_path, mlflow_store):
    spec = edit(files, lambda d: (d["economics"]["discounts"].update(promo_b=None), d["protocol"].pop("holdout_end")))
    r = CliRunner().invoke(main, ["data", "check", "--data", str(spec), "--out", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    lines = dict(line.split(maxsplit=1) for line in r.stdout.splitlines()[:3])
    assert "protocol.holdout_end" in lines["timing"] and "economics.discounts.promo_b" in lines["uplift"]
    assert lines["credit"] == "ready"
    report = (tmp_path / "report" / "data_check.md").read_text()
    assert "## Ready to model?" in report and "randomised" in report
    assert not any(cid in report for cid in pd.read_csv(files.parent / "orders.csv")["client_ref"].head(50))
    import mlflow

    runs = mlflow.search_runs(experiment_names=["offerlab-data"], output_format="list")
    assert len(runs) == 1 and runs[0].data.metrics["transactions.rows"] > 0
