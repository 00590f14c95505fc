"""The offers page (`GET /ui/`, `offerlab.serving.ui`): its sample routes in-process, the curve it draws from the
public contract (`curve_days`), and the page itself in headless Chromium against `bentoml serve` (slow)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from served import stop, wait_for
from serving_models import serving_models  # noqa: F401
from test_serving_http import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
KEY = "k3y"


# --------------------------------------------------------------------------------------------- the curve
def test_curve_days_answers_p_buy_within_every_day(serving_models):  # noqa: F811
    from offerlab.serving.contracts import TimingRequest
    from offerlab.serving.models import TimingAdapter

    adapter = TimingAdapter.load()
    history = serving_models.history(n=30)
    reqs = [TimingRequest(customer_id=f"c{i}", history=history, as_of="2025-01-01T00:00:00", curve_days=days)
            for i, days in enumerate((120, 30, None))]
    long, short, none = adapter.predict(reqs)
    curve = np.array(long.p_buy_curve)
    assert len(curve) == 120 and len(short.p_buy_curve) == 30 and none.p_buy_curve is None
    assert np.all(np.diff(curve) >= -1e-12) and 0 <= curve[0] and curve[-1] <= 1
    # the curve is the answer's own P(buy within k days) at every day, not another estimate
    assert curve[[6, 29, 89]] == pytest.approx([long.p_buy_7d, long.p_buy_30d, long.p_buy_90d], abs=1e-12)
    assert short.p_buy_curve == pytest.approx(long.p_buy_curve[:30], abs=1e-12)  # same customer, same instant
    assert none.p_buy_7d == pytest.approx(long.p_buy_7d, abs=1e-12)


def test_curve_days_is_bounded_by_the_contract():
    from pydantic import ValidationError

    from offerlab.serving.contracts import EXAMPLE_HISTORY, OffersRequest

    for bad in (0, 366, "many"):
        with pytest.raises(ValidationError, match="curve_days"):
            OffersRequest(customer_id="c", history=EXAMPLE_HISTORY, curve_days=bad)


# ----------------------------------------------------------------------------------------- sample routes
@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """Canonical tables of a small synthetic marketplace, as `offerlab run` writes them, plus a later second
    application of one applicant (the sample request must carry the latest)."""
    from offerlab.data.synth import generate

    synth = generate(80, seed=3)
    folder = tmp_path_factory.mktemp("ui-data")
    synth.transactions.to_parquet(folder / "transactions.parquet")
    synth.customers.to_parquet(folder / "customers.parquet")
    apps = synth.applications
    later = apps.iloc[[0]].assign(application_id="a-later", applied_at=apps["applied_at"].iloc[0] + pd.Timedelta(days=1),
                                  requested_amount=777.0)
    pd.concat([apps, later], ignore_index=True).to_parquet(folder / "applications.parquet")
    return folder


@pytest.fixture()
def page_client(data_folder, monkeypatch):
    """The page app mounted at /ui behind the services' API-key middleware, in-process."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from offerlab.serving.app import ApiKeyMiddleware
    from offerlab.serving.ui import ui_app

    monkeypatch.setenv("OFFERLAB_UI_DATA", str(data_folder))
    monkeypatch.setenv("OFFERLAB_API_KEY", KEY)
    app = ApiKeyMiddleware(Starlette(routes=[Mount("/ui", ui_app())]))
    with TestClient(app, client=("127.0.0.1", 50000)) as c:
        yield c


def test_sample_requests_come_from_the_data_folder(page_client, data_folder, monkeypatch):
    from offerlab.serving.contracts import OffersRequest

    monkeypatch.setenv("OFFERLAB_MAX_HISTORY", "5")
    key = {"x-api-key": KEY}
    assert page_client.get("/ui/samples").status_code == 401  # customer data: behind the key like /offers
    listing = page_client.get("/ui/samples", headers=key).json()
    tx = pd.read_parquet(data_folder / "transactions.parquet")
    apps = pd.read_parquet(data_folder / "applications.parquet")
    assert listing["source"] == str(data_folder) and len(listing["customers"]) == 40
    end = tx["timestamp"].max().normalize() + pd.Timedelta("1D") - pd.Timedelta("1us")  # the data's last day, whole
    assert listing["as_of"] == end.isoformat()
    ids = [c["customer_id"] for c in listing["customers"]]
    assert len(set(ids)) == 40 and set(ids) <= set(tx["customer_id"])
    assert sum(c["application"] for c in listing["customers"]) >= 20  # half the sample at least: credit answers show
    counts = tx["customer_id"].value_counts()
    assert [c["purchases"] for c in listing["customers"]] == [int(counts[i]) for i in ids]

    applicant = next(c for c in listing["customers"] if c["customer_id"] == apps["customer_id"].iloc[0])
    body = page_client.get(f"/ui/samples/{applicant['index']}", headers=key).json()
    own = tx[tx["customer_id"] == applicant["customer_id"]].sort_values("timestamp").tail(5)
    assert [p["amount"] for p in body["history"]] == own["amount"].tolist()
    assert [p["timestamp"][:19] for p in body["history"]] == [t.isoformat()[:19] for t in own["timestamp"]]
    assert body["application"]["requested_amount"] == 777.0  # the latest application
    assert not {"default", "application_id", "customer_id", "applied_at"} & set(body["application"])
    assert body["attributes"]["region"] in {"north", "south", "east", "west", "central"}
    OffersRequest.model_validate(body)  # a valid request of the public contract

    without = next(c for c in listing["customers"] if not c["application"])
    assert "application" not in page_client.get(f"/ui/samples/{without['index']}", headers=key).json()
    for bad in ("40", "-1", "x"):
        r = page_client.get(f"/ui/samples/{bad}", headers=key)
        assert r.status_code == 404 and "pick an index from /ui/samples (0 to 39)" in r.json()["error"]


def test_the_page_is_open_offline_and_holds_no_key(page_client):
    r = page_client.get("/ui/")  # no key: the page holds no data, its calls carry the key the user types
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert KEY not in r.text and 'fetch("../offers"' in r.text
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:)?//""", r.text)
    assert external == [] and "<script src" not in r.text  # nothing from a CDN: one self-contained file
    assert page_client.get("/ui", follow_redirects=False).status_code in (307, 308)


def test_no_sample_data_says_what_to_set(page_client, tmp_path, monkeypatch):
    monkeypatch.setenv("OFFERLAB_UI_DATA", str(tmp_path))
    listing = page_client.get("/ui/samples", headers={"x-api-key": KEY}).json()
    assert listing["customers"] == [] and listing["error"] == (
        f"OFFERLAB_UI_DATA={str(tmp_path)!r}: no transactions.parquet in that folder")
    monkeypatch.delenv("OFFERLAB_UI_DATA")
    monkeypatch.chdir(tmp_path)  # no runs/*/synth_* here either
    r = page_client.get("/ui/samples/0", headers={"x-api-key": KEY})
    assert r.status_code == 404 and "set OFFERLAB_UI_DATA" in r.json()["error"]


# ------------------------------------------------------------------------------------ headless Chromium
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _curve_values(points: str) -> list[float]:
    """P values of the drawn polyline, inverted from the page's y scale (viewBox height 230, top 12, bottom 38)."""
    ys = [float(p.split(",")[1]) for p in points.split()]
    return [1.0 - (y - 12.0) / (230.0 - 12.0 - 38.0) for y in ys]


def _serving(url: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll until the service answers HTTP at all (the page), its models possibly still loading."""
    wait_for(url, "/ui/", proc, timeout, every=0.2)


def _open_page(driver, wait, url: str, key: str | None):
    """Open /ui, type the API key as a user would (the sample list reloads), wait for the sample list."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{url}/ui")
    if key:
        source = driver.find_element(By.ID, "sample-source")
        wait.until(lambda d: "API key" in source.text)  # asked for, never embedded
        assert "401" in source.text
        driver.find_element(By.ID, "api-key").send_keys(key, Keys.TAB)  # change -> the sample list reloads
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#customer option")) == 41)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium and chromedriver not installed "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
def test_offers_page_in_headless_chromium(serving_models, data_folder, tmp_path):  # noqa: F811
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": serving_models.tracking_uri, "OFFERLAB_API_KEY": KEY,
           "OFFERLAB_UI_DATA": str(data_folder), "OFFERLAB_OFFERS_WORKERS": "1", "OFFERLAB_PRICE_OF_SPEND": "0.3",
           "OFFERLAB_READY_WAIT_S": "0",  # a call before the models are loaded: 503 at once (the page retries)
           "BENTOML_HOME": str(tmp_path / "bentoml")}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "serving.service:OffersLocal",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,980"):
        options.add_argument(arg)
    options.binary_location = browser
    driver = None
    try:
        _serving(url, proc)
        loading = httpx.get(f"{url}/readyz", timeout=5).status_code == 503
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
        wait = WebDriverWait(driver, 30)
        # 1. while the models load: the page says so, and a pick waits out the 503s, then answers
        _open_page(driver, wait, url, KEY)
        message, meta = driver.find_element(By.ID, "message"), driver.find_element(By.ID, "meta")
        pill = driver.find_element(By.ID, "ready")
        wait.until(lambda d: pill.text != "checking the models…")
        if loading and pill.text == "models loading…":
            Select(driver.find_element(By.ID, "customer")).select_by_value("0")
            wait.until(lambda d: "Retrying in 2 s" in message.text or meta.text)
            saw_503 = not meta.text  # (else the models came up in between)
            if saw_503:
                assert message.text.startswith("The models are still loading (503)") and "Retrying in 2 s" in message.text
                driver.save_screenshot(str(tmp_path / "offers_page_loading.png"))
            WebDriverWait(driver, 240).until(lambda d: meta.text)
            assert not message.is_displayed()
            print(f"\noffers page: opened while the models loaded; {'a 503, retried, then' if saw_503 else ''} answered")
        else:
            print("\noffers page: the models were ready before the page: 503 path not seen in the browser")
        wait_ready(url, proc)
        wait.until(lambda d: driver.find_element(By.ID, "ready").text == "models ready")

        # 2. the customer to look at: one whose answer has every part to show (a date, a credit reason)
        key = {"x-api-key": KEY}
        listing = httpx.get(f"{url}/ui/samples", headers=key, timeout=10).json()
        chosen = None
        for c in sorted(listing["customers"], key=lambda c: -c["purchases"]):
            body = {**httpx.get(f"{url}/ui/samples/{c['index']}", headers=key, timeout=10).json(), "curve_days": 120}
            ans = httpx.post(f"{url}/offers", json=body, headers=key, timeout=30).json()
            if ans["timing"]["next_date_median"] and ans["credit"] and ans["credit"]["reasons"]:
                chosen = c
                break
        assert chosen is not None, "no sample customer with a next-purchase date and credit reasons"

        # 3. a reviewer opens the page, types the key, picks the customer: load to answer
        t0 = time.perf_counter()
        _open_page(driver, wait, url, KEY)
        Select(driver.find_element(By.ID, "customer")).select_by_value(str(chosen["index"]))
        meta = driver.find_element(By.ID, "meta")
        wait.until(lambda d: chosen["customer_id"] in meta.text)
        load_to_answer = time.perf_counter() - t0
        page = driver.execute_script("return {answered: document.body.dataset.answeredAtMs, "
                                     "roundTrip: document.body.dataset.roundTripMs}")
        print(f"\noffers page: load to answer {load_to_answer:.2f} s (browser clock: answered "
              f"{int(page['answered']) / 1000:.2f} s after navigation, /offers round trip {float(page['roundTrip']):.0f} ms;"
              " includes typing the API key)")

        sent = json.loads(driver.find_element(By.ID, "request").get_attribute("value"))
        assert sent["curve_days"] == 120 and sent["history"] == body["history"]
        truth = httpx.post(f"{url}/offers", json=sent, headers=key, timeout=30).json()  # the page's answer, via the API
        t, d, c = truth["timing"], truth["discount"], truth["credit"]

        level_text = driver.find_element(By.ID, "chosen-level").text
        assert level_text.startswith(f"Offer: {d['level']} —" if d["level"] else "Offer: no discount")
        bar = driver.find_element(By.CSS_SELECTOR, "#bars rect.bar.chosen")
        assert bar.get_attribute("data-level") == (d["level"] or d["levels"][0]["level"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars rect.bar")) == len(d["levels"])
        # the budget's trade-off: the service prices spend at 0.3, every level's profit - 0.3 x spend is drawn
        assert d["price_of_spend"] == 0.3 and len(driver.find_elements(By.CSS_SELECTOR, "#bars rect.net")) == len(d["levels"])
        assert "Budget trade-off: the budget prices spend at 0.30" in driver.find_element(By.ID, "tradeoff").text

        timing_text = driver.find_element(By.ID, "timing-facts").text
        assert re.search(r"\d{4}-\d{2}-\d{2}", timing_text) and t["next_date_median"] in timing_text
        assert f"{t['next_date_q10']} – {t['next_date_q90'] or 'maybe never'}" in timing_text
        line = driver.find_element(By.CSS_SELECTOR, "#curve polyline#curve-line")
        drawn = _curve_values(line.get_attribute("points"))
        assert len(drawn) == 120 and drawn == pytest.approx(t["p_buy_curve"], abs=0.002)
        assert driver.find_elements(By.CSS_SELECTOR, "#curve rect#band")  # the 10-90% band
        winback = driver.find_element(By.ID, "winback").text
        assert winback == ("win-back: overdue" if t["winback"] else "not overdue")
        cats = driver.find_element(By.ID, "categories").text
        assert all(k["category"] in cats for k in t["top_categories"])

        assert driver.find_element(By.ID, "decision").text == c["decision"]
        reasons = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#reasons li.reason")]
        assert reasons == c["reasons"] and reasons[0]  # the reasons in words
        credit_text = driver.find_element(By.ID, "credit-facts").text
        assert c["grade"] in credit_text and "months" in credit_text
        assert f"timing v{t['model_version']}" in meta.text and "ms round trip" in meta.text
        driver.save_screenshot(str(tmp_path / "offers_page.png"))
        assert (tmp_path / "offers_page.png").stat().st_size > 10_000

        # offline: every resource the page fetched came from the service itself
        origins = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        assert set(origins) <= {url}

        # 4. a bad pasted history: the message names the field, and no stale answer stays on screen
        bad = {**sent, "history": [{**sent["history"][0], "amount": -1.0}, *sent["history"][1:]]}
        box = driver.find_element(By.ID, "request")
        driver.execute_script("arguments[0].value = arguments[1];", box, json.dumps(bad))
        driver.find_element(By.ID, "send").click()
        message = driver.find_element(By.ID, "message")
        wait.until(lambda d: message.is_displayed() and "400" in message.text)
        assert "history → 0 → amount: Input should be greater than or equal to 0" in message.text
        assert not driver.find_element(By.ID, "answer").is_displayed()
        driver.save_screenshot(str(tmp_path / "offers_page_error.png"))
        driver.execute_script("arguments[0].value = '[{\"timestamp\": \"2024-01-01\", oops}]';", box)
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: "not valid JSON" in message.text)
        log.flush()
        assert chosen["customer_id"] not in (tmp_path / "serve.log").read_text()  # ids travel in bodies, not paths
    finally:
        if driver is not None:
            driver.quit()
        stop(proc, log)
