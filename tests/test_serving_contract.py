"""The /offers contract is the loaded models': the spec built from their needs, what the service enforces, and
every error answer against the schema the spec declares for it (in-process, `OffersLocal`'s real ASGI app).

The full run of schemathesis's own command line against `bentoml serve` is tests/test_serving_fuzz.py.
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import jsonschema
import pytest

from serving_models import serving_models  # noqa: F401
from test_serving_service import _mutate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="module")
def client(serving_models):  # noqa: F811
    import time

    from _bentoml_impl.server.app import ServiceAppFactory
    from serving.service import OffersLocal
    from starlette.testclient import TestClient

    # `OffersLocal.to_asgi()`, without the request metrics: a second app with them in one process (the suite's
    # test_serving_service runs `Offers`) registers the same Prometheus series twice
    OffersLocal.inject_config()
    app = ServiceAppFactory(OffersLocal, is_main=True, enable_metrics=False)()
    with TestClient(app, client=("127.0.0.1", 50001)) as c:
        deadline = time.monotonic() + 180
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield c


@pytest.fixture(scope="module")
def spec(client) -> dict:
    r = client.get("/docs.json")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def local_models(client):
    """The adapters of the OffersLocal instance the client runs (what the spec must describe)."""
    from offerlab.serving.models import CreditAdapter, TimingAdapter, UpliftAdapter

    return TimingAdapter.load(), UpliftAdapter.load(), CreditAdapter.load()


def _example(spec: dict) -> dict:
    return copy.deepcopy(spec["paths"]["/offers"]["post"]["requestBody"]["content"]["application/json"]["example"])


def _check(spec: dict, path: str, status: int, body: object) -> None:
    """`body` fits the schema the spec declares for `status` on POST `path` (refs resolved in the spec)."""
    declared = spec["paths"][path]["post"]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**declared, "components": spec["components"]},
                        cls=jsonschema.Draft202012Validator)


def test_the_spec_states_what_the_loaded_models_need(spec, serving_models, local_models):  # noqa: F811
    timing, uplift, credit = local_models
    schemas = spec["components"]["schemas"]
    assert spec["openapi"] == "3.1.0"
    assert {f: m["version"] for f, m in spec["info"]["x-offerlab-models"].items()} == serving_models.versions
    # attributes: the uplift encoder's categorical ones required, each an enum of its training levels
    attrs = schemas["Attributes"]
    assert set(attrs["required"]) == set(uplift.model.encoder.categorical)
    for name, levels in uplift.model.encoder.categorical.items():
        assert attrs["properties"][name]["enum"] == levels
    assert attrs["properties"]["acquired_at_days"]["type"] == "number"  # a numeric attribute: optional, bounded
    assert attrs["properties"]["acquired_at_days"]["maximum"] == 1e9
    assert "attributes" in schemas["OffersRequest"]["required"]
    # application: every field the credit model reads is required; levels from its encoder; the contract's ranges
    app = schemas["Application"]
    needed = [c for c in credit.model.feature_columns if not c.startswith(("beh_", "ret_", "rep_"))]  # from the history
    assert set(app["required"]) == set(needed)
    assert app["properties"]["housing"]["enum"] == list(credit.model.encoder.vocab["housing"])
    assert (app["properties"]["age"]["minimum"], app["properties"]["age"]["maximum"]) == (18, 120)
    # purchases: the timing model's categories, or none
    category = schemas["Purchase"]["properties"]["category"]
    assert category["anyOf"][0]["enum"] == list(timing.predictor.categories)
    assert {"type": "null"} in category["anyOf"]
    # the example is one the loaded models answer
    example = _example(spec)
    assert set(example["attributes"]) == set(uplift.model.encoder.categorical)


def test_the_spec_example_gets_a_200_that_fits_the_answer_schema(client, spec):
    example = _example(spec)
    r = client.post("/offers", json=example)
    assert r.status_code == 200, r.text
    _check(spec, "/offers", 200, r.json())
    assert float(r.headers["x-model-ms"]) >= 0 and r.json()["purchases_used"] == len(example["history"])
    r = client.post("/offers_batch", json=[example, {**example, "application": None}])
    assert r.status_code == 200, r.text
    _check(spec, "/offers_batch", 200, r.json())
    assert r.json()[1]["credit"] is None


@pytest.mark.parametrize(("path", "value", "loc", "why"), [
    (("attributes", "region"), "atlantis", ["attributes", "region"], "literal_error"),
    (("attributes", "region"), None, ["attributes", "region"], "missing"),
    (("application", "housing"), "castle", ["application", "housing"], "literal_error"),
    (("application", "age"), None, ["application", "age"], "missing"),
    (("application", "age"), 17, ["application", "age"], "greater_than_equal"),
    (("history", 0, "category"), "spaceships", ["history", 0, "category"], "literal_error"),
    (("history", 0, "amount"), "12", ["history", 0, "amount"], "float_type"),
    (("history", 0, "amount"), True, ["history", 0, "amount"], "float_type"),
    (("history", 0, "timestamp"), "2024-02-30T00:00:00", ["history", 0, "timestamp"], "instant"),
    (("as_of",), "1899-12-31T23:59:59", ["as_of"], "instant"),
    (("attributes", "acquired_at"), "yesterday", ["attributes", "acquired_at"], "instant"),
    (("attributes", "acquired_at_days"), 2e9, ["attributes", "acquired_at_days"], "less_than_equal"),
])
def test_a_body_the_spec_refuses_is_a_400_naming_the_field(client, spec, path, value, loc, why):
    body = _mutate(_example(spec), path, KeyError if value is None else value)  # None: the key left out
    r = client.post("/offers", json=body)
    assert r.status_code == 400, r.text
    _check(spec, "/offers", 400, r.json())
    assert {"loc": loc, "type": why} in [{"loc": d["loc"], "type": d["type"]} for d in r.json()["detail"]]


def test_every_other_error_answer_fits_its_declared_schema(client, spec, monkeypatch):
    example = _example(spec)
    r = client.post("/offers", content=b'{"customer_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["body"]
    _check(spec, "/offers", 400, r.json())
    for ctype in ("multipart/form-data", "text/plain", "application/x-www-form-urlencoded", "no/such;;type"):
        r = client.post("/offers", content=b"{}", headers={"content-type": ctype})
        assert r.status_code == 415 and "application/json" in r.json()["error"], (ctype, r.text)
        _check(spec, "/offers", 415, r.json())
    monkeypatch.setenv("OFFERLAB_MAX_BODY_BYTES", "2000")
    big = {**example, "history": example["history"] * 20}
    r = client.post("/offers_batch", json=[big])
    assert r.status_code == 413 and r.json()["limit_bytes"] == 2000 and "2000 bytes" in r.json()["error"]
    _check(spec, "/offers_batch", 413, r.json())

    def chunks():  # no content-length: the limit still holds while the body streams in
        for _ in range(10):
            yield b" " * 500
    r = client.post("/offers", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    monkeypatch.delenv("OFFERLAB_MAX_BODY_BYTES")
    monkeypatch.setenv("OFFERLAB_API_KEY", "s3cret")
    r = client.post("/offers", json=example)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    keyed = client.get("/docs.json").json()  # with a key, the spec declares it and the 401
    assert keyed["components"]["securitySchemes"]["ApiKey"]["name"] == "x-api-key"
    _check(keyed, "/offers", 401, r.json())
    assert "401" not in spec["paths"]["/offers"]["post"]["responses"]  # without one, no 401 is declared


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/readyz", "GET, HEAD"), ("POST", "/metrics", "GET, HEAD"), ("PUT", "/livez", "GET, HEAD"),
    ("GET", "/offers", "POST"), ("DELETE", "/offers_batch", "POST"), ("PATCH", "/offers", "POST"),
])
def test_an_undeclared_method_is_a_405_with_allow(client, spec, method, path, allow):
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allow, r.text
    declared = {m.upper() for m in spec["paths"][path]}
    assert method not in declared and set(allow.replace(" ", "").split(",")) - {"HEAD"} == declared
    assert r.json()["error"].startswith(f"method {method} is not allowed on {path}")


def test_history_order_and_purchases_after_as_of(client, spec):
    """Purchases may come in any order; those after as_of are not known then: same answers as without them."""
    base = _example(spec)
    answer = client.post("/offers", json=base).json()
    shuffled = {**base, "history": base["history"][::-1]}
    later = {**base, "history": [*base["history"], {"timestamp": "2025-06-01T00:00:00Z", "amount": 99.0}]}
    for body in (shuffled, later):
        got = client.post("/offers", json=body).json()
        assert got["purchases_used"] == len(base["history"])
        assert got["timing"]["p_buy_30d"] == pytest.approx(answer["timing"]["p_buy_30d"], rel=1e-6)
        profits = [lv["expected_incremental_profit"] for lv in got["discount"]["levels"]]
        assert profits == pytest.approx([lv["expected_incremental_profit"] for lv in answer["discount"]["levels"]],
                                        rel=1e-6, abs=1e-9)
        assert got["credit"]["pd"] == pytest.approx(answer["credit"]["pd"], rel=1e-6)
    before_all = client.post("/offers", json={**base, "as_of": "2024-01-01T00:00:00"})
    new_customer = client.post("/offers", json={**base, "history": []})
    for r in (before_all, new_customer):  # no purchase known: discount and credit answer, timing cannot
        assert r.status_code == 200, r.text
        _check(spec, "/offers", 200, r.json())
        assert r.json()["timing"] is None and r.json()["purchases_used"] == 0
        assert r.json()["discount"]["levels"] and r.json()["credit"]["decision"] in ("approve", "decline")


def test_refusals_log_no_personal_field(client, spec, caplog):
    body = _example(spec)
    body.update(customer_id="cust-PII-4711", attributes={**body["attributes"], "region": "atlantis-PII"})
    body["history"][0]["amount"] = 123456.789
    bad_amount = copy.deepcopy(body)
    bad_amount["history"][1]["amount"] = "98765.4321"
    with caplog.at_level(logging.DEBUG):
        for b in (body, bad_amount, [body]):
            r = client.post("/offers_batch" if isinstance(b, list) else "/offers", json=b)
            assert r.status_code == 400
        client.post("/offers", content=b'{"customer_id": "cust-PII-4711", "x": ', headers={"content-type": "application/json"})
    logged = "\n".join(rec.getMessage() + str(rec.exc_info or "") for rec in caplog.records)
    assert "refused" in logged  # the refusal is logged ...
    for personal in ("cust-PII-4711", "atlantis-PII", "123456.789", "98765.4321"):
        assert personal not in logged  # ... without the values sent


@pytest.mark.slow
def test_promoting_a_champion_with_other_features_changes_the_spec(serving_models, tmp_path, monkeypatch):  # noqa: F811
    """A second uplift model trained on other attributes (no signup channel, a loyalty tier) becomes champion: the
    contract built from the registry follows it (attributes, levels, the version named)."""
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    from offerlab.registry import CHAMPION, model_name
    from offerlab.serving.models import UpliftAdapter, model_uri
    from offerlab.serving.openapi import build_contract
    from offerlab.tracking import start_run
    from offerlab.uplift.data import from_synth
    from offerlab.uplift.model import UpliftModel
    from offerlab.uplift.policy import PolicyConfig
    from offerlab.uplift.pyfunc import log_pyfunc

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    data = from_synth(serving_models.synth)
    rng = np.random.default_rng(0)
    versions = []
    for i, features in enumerate((data.features,
                                  data.features.drop(columns="signup_channel").assign(
                                      tier=rng.choice(["gold", "silver"], len(data.features))))):
        data.features = features
        model = UpliftModel({"hidden": [4], "head_hidden": 2, "ensemble": 1, "batch_size": 256, "patience": 1},
                            {"max_epochs": 1}).fit(data)
        with start_run("uplift", "contract-test") as run:
            log_pyfunc(model, PolicyConfig(margin=0.4, contact_cost=0.1), features.head(5), tmp_path / f"art{i}")
        mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", model_name("uplift"))
        MlflowClient(uri).set_registered_model_alias(model_name("uplift"), CHAMPION, mv.version)  # promote
        versions.append(str(mv.version))
    needs = {"timing": {"categories": None}, "credit": {"application": {}}}  # only the uplift champion moves here
    specs = []
    for version in versions:
        MlflowClient(uri).set_registered_model_alias(model_name("uplift"), CHAMPION, version)
        uplift = UpliftAdapter.load(model_uri("uplift"))  # what a service starting now loads
        specs.append(build_contract({**needs, "uplift": {**uplift.needs(), "version": uplift.version}}).spec())
    first, second = (s["components"]["schemas"]["Attributes"] for s in specs)
    assert "signup_channel" in first["required"] and "tier" not in first["properties"]
    assert second["properties"]["tier"]["enum"] == ["gold", "silver"] and "signup_channel" not in second["properties"]
    assert [s["info"]["x-offerlab-models"]["uplift"]["version"] for s in specs] == versions
    assert versions[0] != versions[1] and f"uplift {versions[1]}" in specs[1]["info"]["version"]
    ex = specs[1]["paths"]["/offers"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert ex["attributes"]["tier"] in ("gold", "silver") and "signup_channel" not in ex["attributes"]


def test_a_client_generated_from_the_spec_gets_a_200_it_parses(client, spec, tmp_path):
    """datamodel-code-generator turns the spec into pydantic models; the spec's example built with the generated
    request model, sent as it serialises, is answered 200, and the answer parses into the generated answer model."""
    import importlib.util
    import json
    import subprocess

    (tmp_path / "spec.json").write_text(json.dumps(spec))
    codegen = Path(sys.executable).with_name("datamodel-codegen")
    subprocess.run([str(codegen), "--input", str(tmp_path / "spec.json"), "--input-file-type", "openapi",
                    "--openapi-scopes", "schemas", "paths", "--output-model-type", "pydantic_v2.BaseModel",
                    "--use-annotated", "--field-constraints", "--target-python-version", "3.11",
                    "--formatters", "black", "isort", "--output", str(tmp_path / "offers_client.py")],
                   check=True, capture_output=True, timeout=120)
    module_spec = importlib.util.spec_from_file_location("offers_client", tmp_path / "offers_client.py")
    generated = importlib.util.module_from_spec(module_spec)
    sys.modules["offers_client"] = generated
    module_spec.loader.exec_module(generated)
    try:
        request = generated.OffersRequest.model_validate(_example(spec))
        r = client.post("/offers", json=request.model_dump(mode="json", by_alias=True, exclude_none=True))
        assert r.status_code == 200, r.text
        answer = generated.OffersAnswer.model_validate(r.json())
        assert answer.customer_id == request.customer_id and answer.purchases_used == len(request.history)
        assert answer.credit is not None and answer.credit.decision in ("approve", "decline")
        assert [lv.level for lv in answer.discount.levels][0] == "control"
        batch = generated.OffersBatchPostRequest([request, request.model_copy(update={"application": None})])
        r = client.post("/offers_batch", json=batch.model_dump(mode="json", by_alias=True, exclude_none=True))
        answers = generated.OffersBatchPostResponse.model_validate(r.json()).root
        assert r.status_code == 200 and len(answers) == 2 and answers[1].credit is None
        with pytest.raises(ValueError):  # the generated model refuses what the service refuses
            generated.OffersRequest.model_validate({**_example(spec), "attributes": {"region": "atlantis"}})
    finally:
        sys.modules.pop("offers_client", None)
