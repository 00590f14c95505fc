"""Tiny timing, uplift and credit models in an isolated MLflow registry, alias `champion`, for serving tests.

`serving_models` (session fixture) trains each family for a few epochs on a small synthetic
marketplace, logs it as the family's pyfunc, registers `offerlab-<family>` and sets `champion`, and
points `MLFLOW_TRACKING_URI` at that store for the session. Use it with
`from serving_models import serving_models  # noqa: F401` in a test module.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

N_CUSTOMERS = 300


@dataclass
class ServingModels:
    tracking_uri: str
    synth: object  # offerlab.data.synth.SynthData
    versions: dict[str, str]

    def history(self, customer: str | None = None, n: int | None = None) -> list[dict]:
        """A real synthetic customer's purchases as request JSON (oldest first)."""
        tx = self.synth.transactions
        cid = customer or tx["customer_id"].value_counts().index[0]
        rows = tx[tx["customer_id"] == cid].sort_values("timestamp")
        rows = rows.tail(n) if n else rows
        pay = rows["payment_method"] if "payment_method" in rows else [None] * len(rows)
        return [{"timestamp": t.isoformat(), "amount": float(a), "category": str(c),
                 **({"payment_method": str(m)} if m is not None else {})}
                for t, a, c, m in zip(rows["timestamp"], rows["amount"], rows["category"], pay, strict=True)]

    def history_with_items(self, customer: str | None = None) -> list[dict]:
        """A real synthetic customer's purchases with their order lines (items) as request JSON."""
        tx, lines = self.synth.transactions, self.synth.lines
        cid = customer or tx["customer_id"].value_counts().index[0]
        rows = tx[tx["customer_id"] == cid].sort_values("timestamp")
        by_order = {o: g for o, g in lines[lines["customer_id"] == cid].groupby("order_id")}
        return [{"timestamp": r.timestamp.isoformat(), "amount": float(r.amount), "category": str(r.category),
                 "items": [{"item_id": li.item_id, "item_name": li.item_name, "quantity": int(li.quantity),
                            "amount": float(li.amount)} for li in by_order[r.order_id].itertuples()]}
                for r in rows.itertuples()]

    def offers_request(self, n: int | None = None) -> dict:
        """An /offers request for the synthetic customer with the longest history (its last `n` purchases)."""
        history = self.history(n=n)
        return {"customer_id": "c-test", "history": history, "as_of": "2025-01-01T00:00:00",
                "attributes": {"region": "north", "age_band": "35-44", "signup_channel": "app"},
                "application": {"requested_amount": 600.0, "income": 42000.0, "term_months": 6, "age": 38,
                                "employment_years": 4.5, "housing": "rent", "purpose": "electronics",
                                "existing_credits": 1}}


def _register(family: str, run_id: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    from offerlab.registry import CHAMPION, model_name

    mv = mlflow.register_model(f"runs:/{run_id}/model", model_name(family))
    MlflowClient().set_registered_model_alias(model_name(family), CHAMPION, mv.version)
    return str(mv.version)


def _timing(synth, tmp: Path) -> str:
    from offerlab.timing.pyfunc import log_pyfunc
    from offerlab.timing.train import fit_timing, load_config
    from offerlab.tracking import start_run

    cfg = load_config(None, {"training": {"seeds": [0], "max_epochs": 2, "validation_days": 0},
                             "model": {"hidden": 8, "n_components": 2, "category_dim": 4},
                             "data": {"same_day": "keep"}, "trainer": {"enable_progress_bar": False}})
    from offerlab.timing.basket import fit_and_score
    from offerlab.timing.train import BasketBlock

    predictor, _ = fit_timing(synth.transactions, "2024-12-31", cfg, progress=False)
    basket, _ = fit_and_score(synth.lines, "2024-10-31", "2024-12-31", BasketBlock(epochs=2).settings())
    with start_run("timing", "serving-test") as run:
        log_pyfunc(predictor, tmp, basket=basket)  # with the replenishment basket (answers for items)
    return _register("timing", run.info.run_id)


def _uplift(synth, tmp: Path) -> str:
    from offerlab.tracking import start_run
    from offerlab.uplift.data import from_synth
    from offerlab.uplift.model import UpliftModel
    from offerlab.uplift.policy import PolicyConfig
    from offerlab.uplift.pyfunc import log_pyfunc

    data = from_synth(synth)
    model = UpliftModel({"hidden": [8], "head_hidden": 4, "ensemble": 1, "batch_size": 256, "patience": 1},
                        {"max_epochs": 2}).fit(data)
    with start_run("uplift", "serving-test") as run:
        log_pyfunc(model, PolicyConfig(margin=0.4, contact_cost=0.1), data.features.head(5), tmp)
    return _register("uplift", run.info.run_id)


def _credit(synth, tmp: Path) -> str:
    from offerlab.credit.data import application_features
    from offerlab.credit.decision import DecisionConfig
    from offerlab.credit.model import CreditModel
    from offerlab.credit.pyfunc import log_pyfunc
    from offerlab.tracking import start_run

    apps = synth.applications
    X = application_features(apps, synth.transactions)
    model = CreditModel({"members": 2, "hidden": [4], "patience": 2, "batch_size": 64},
                        {"max_epochs": 3}).fit(X, apps["default"].to_numpy())
    model.decision = DecisionConfig()
    example = apps.head(5).drop(columns="default")
    behaviour = [c for c in X.columns if c not in example.columns]
    example = example.join(X.head(5)[behaviour])
    with start_run("credit", "serving-test") as run:
        log_pyfunc(model, example, tmp)
    return _register("credit", run.info.run_id)


def train_serving_models(folder: Path) -> ServingModels:
    """Train and register all three families into a SQLite store under `folder` (about 15 s)."""
    import torch

    from offerlab.data.synth import generate

    torch.set_num_threads(1)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(folder)  # artifacts land beside the store
    try:
        synth = generate(N_CUSTOMERS, seed=0)
        versions = {}
        for family, fit in (("timing", _timing), ("uplift", _uplift), ("credit", _credit)):
            with tempfile.TemporaryDirectory() as tmp:
                versions[family] = fit(synth, Path(tmp))
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
    return ServingModels(uri, synth, versions)


# every module of the families and the data they train on: a pickled model holds objects of all of them (a credit
# model its terms and decision rules), so a change anywhere there rebuilds the cache
CACHE_PACKAGES = ("timing", "uplift", "credit", "data")


def cached_serving_models(wait_s: float = 900.0) -> ServingModels:
    """`train_serving_models` once per code version: a store under the temp folder keyed by a hash of this
    file and the model code, reused by later sessions; a parallel session waits for the one building it."""
    import hashlib
    import json
    import shutil
    import time

    import offerlab
    from offerlab.data.synth import generate

    pkg = Path(offerlab.__file__).parent
    h = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(f for d in CACHE_PACKAGES for f in (pkg / d).rglob("*.py")):
        h.update(path.relative_to(pkg).as_posix().encode())
        h.update(path.read_bytes())
    final = Path(tempfile.gettempdir()) / f"offerlab-serving-models-{h.hexdigest()[:16]}"
    marker = final / "versions.json"
    try:
        final.mkdir()  # atomic: this session builds it (in place: the store records absolute artifact paths)
    except FileExistsError:
        deadline = time.monotonic() + wait_s
        while not marker.is_file() and final.exists() and time.monotonic() < deadline:
            time.sleep(1.0)
        if marker.is_file():
            return ServingModels(f"sqlite:///{final / 'mlflow.db'}", generate(N_CUSTOMERS, seed=0),
                                 json.loads(marker.read_text()))
        return train_serving_models(Path(tempfile.mkdtemp(prefix="offerlab-serving-models-")))
    try:
        built = train_serving_models(final)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    marker.write_text(json.dumps(built.versions))
    return built


@pytest.fixture(scope="session")
def serving_models() -> ServingModels:
    """Registered champions of all three families; MLFLOW_TRACKING_URI points at their store for the session."""
    models = cached_serving_models()
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", models.tracking_uri)
    yield models
    mp.undo()
