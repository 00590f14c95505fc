from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main


def test_help_lists_groups():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    assert "data" in r.output and "run" in r.output


def test_data_load_prints_summary(tmp_path):
    out = tmp_path / "g.parquet"
    r = CliRunner().invoke(main, ["data", "load", "german", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert '"german.rows": 1000' in r.output
    assert pd.read_parquet(out)["default"].sum() == 300


def test_data_load_bad_input_is_one_clear_line(tmp_path):
    pd.DataFrame({"client": ["1"], "day": ["2024-01-01"], "value": [-5.0]}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "m.yaml").write_text("table: transactions\ncolumns: {customer_id: client, timestamp: day, amount: value}\n")
    r = CliRunner().invoke(main, ["data", "load", "mine", "--data-path", str(tmp_path / "t.csv"), "--mapping", str(tmp_path / "m.yaml")])
    assert r.exit_code == 2
    assert "error: table 'transactions', column 'amount': negative value (example: row 0: amount=-5.0)" in r.output


def test_unknown_dataset_refused():
    r = CliRunner().invoke(main, ["data", "load", "nosuch"])
    assert r.exit_code == 2 and "unknown dataset 'nosuch'" in r.output


@pytest.mark.slow
def test_main_job_trains_scores_and_leaves_champions_to_serve(tmp_path, mlflow_store):
    """The README's `offerlab run`: synthetic data -> three models -> MLflow -> scored files + champions."""
    import json

    from offerlab.registry import list_models

    r = CliRunner().invoke(main, ["run", "--customers", "400", "--workdir", str(tmp_path / "main")])
    assert r.exit_code == 0, r.output
    out, _ = json.JSONDecoder().raw_decode(r.output[r.output.index('{\n "tracking_uri"'):])
    for family in ("timing", "uplift", "credit"):
        assert "first champion" in out[family]["registry"], out[family]
        assert Path(out[family]["output"]).is_file()
    champions = {m["model"] for m in list_models() if "champion" in m["aliases"]}
    assert champions == {"offerlab-timing", "offerlab-uplift", "offerlab-credit"}
