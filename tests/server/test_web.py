"""The web chat at `/`, driven in headless Chromium (Debian's chromium + chromedriver, through
selenium) against a real uvicorn server on a free loopback port.

`make test` installs the browser first (`make browser`); these tests install nothing and fail
with that hint when it is missing. The server runs in-process so the tests can watch its
scheduler; for the tiny model its forward pass is slowed and its end-of-generation tokens
masked, so an answer streams for as long as the test needs (the way test_disconnect does).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from server_helpers import free_port, inprocess_server

from corral.server import ServerConfig
from corral.server.manager import LoadedModel
from corral.server.web import PAGES, read_page
from corral.store import Store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# as root in a container: no sandbox; and nothing that phones home
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--window-size=1100,760",
]
SLOW_S = 0.02  # per forward pass of the tiny model: ~50 tokens/s, slow enough to watch

# records every length the last assistant answer had, as the page repaints it
WATCH_JS = """
window.__lengths = [];
new MutationObserver(() => {
  const turns = document.querySelectorAll('.turn.assistant .body');
  if (turns.length) window.__lengths.push(turns[turns.length - 1].textContent.length);
}).observe(document.getElementById('messages'),
           {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module (each test opens its own server's page)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is missing: run `make browser` (Debian chromium packages)")
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        opts.add_argument(flag)
    # an explicit driver path: selenium must not try to download one
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $CORRAL_TEST_SCREENSHOTS (to look at them) or the test's tmp."""
    folder = Path(os.environ.get("CORRAL_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver: WebDriver, cond: Callable[[WebDriver], Any], timeout: float = 20.0) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(cond)


def el(driver: WebDriver, id_: str) -> Any:
    return driver.find_element(By.ID, id_)


def model_ids(driver: WebDriver) -> list[str]:
    return [o.get_attribute("value") for o in Select(el(driver, "model")).options]


def open_page(driver: WebDriver, base: str) -> None:
    driver.get(f"{base}/")
    driver.execute_script(WATCH_JS)


def open_settings(driver: WebDriver, max_tokens: int, system: str = "", temp: str = "") -> None:
    if not el(driver, "settings").get_attribute("open"):
        driver.find_element(By.CSS_SELECTOR, "#settings summary").click()
    for id_, value in (("max-tokens", str(max_tokens)), ("system", system), ("temperature", temp)):
        box = el(driver, id_)
        box.clear()
        if value:
            box.send_keys(value)


def ask(driver: WebDriver, question: str) -> None:
    el(driver, "prompt").send_keys(question)
    el(driver, "send").click()


def answers(driver: WebDriver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .body")]


def idle(driver: WebDriver) -> bool:
    """No generation running: Send usable again, Stop not."""
    return el(driver, "send").is_enabled() and not el(driver, "stop").is_enabled()


def grown(driver: WebDriver) -> list[int]:
    """The distinct non-zero lengths the last answer went through, in order."""
    seen: list[int] = []
    for n in driver.execute_script("return window.__lengths"):
        if n and (not seen or n != seen[-1]):
            seen.append(n)
    return seen


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    m = re.search(rf"^corral_{name} (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


@pytest.fixture
def slowed(live: tuple[str, object]) -> Iterator[tuple[str, LoadedModel]]:
    """`live` with `tiny` loaded, slowed down and never ending by itself."""
    base, app = live
    httpx.post(f"{base}/api/generate", json={"model": "tiny"}, timeout=60)  # load it
    entry = app.state.corral.manager.loaded()[0]  # type: ignore[attr-defined]
    net = entry.model.net
    real = net.forward
    eog = sorted(entry.model.tokenizer.eog_ids)

    def slow(*a: Any, **k: Any) -> Any:
        time.sleep(SLOW_S)
        out = real(*a, **k).clone()  # inference tensors cannot be changed in place
        out[..., eog] = float("-inf")
        return out

    net.forward = slow
    try:
        yield base, entry
    finally:
        net.forward = real


def test_page_is_self_contained(client: Any) -> None:
    """The page and its assets come from the server alone, with a CSP that keeps it so."""
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    html = r.text
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    for ref in refs:
        assert client.get(ref).status_code == 200, ref
    for name, _ in PAGES.values():
        text = read_page(name).decode()
        # model text only ever goes in as text, and nothing is fetched from elsewhere
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", text)
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), name
        assert "https://" not in text, name
    assert client.head("/").status_code == 200
    assert client.post("/").status_code in (404, 405)  # only GET/HEAD are the page


def test_page_needs_no_key_but_the_api_does(make_client: Callable[..., Any]) -> None:
    c = make_client(api_key="sekrit")
    assert c.get("/").status_code == 200
    assert c.get("/web/chat.js").status_code == 200
    assert c.get("/v1/models").status_code == 401


def test_chat_streams_stops_and_starts_over(
    browser: WebDriver, slowed: tuple[str, LoadedModel], tmp_path: Path
) -> None:
    base, entry = slowed
    stats = entry.scheduler.stats
    d = browser
    open_page(d, base)
    wait(d, lambda d: model_ids(d) == ["other:latest", "tiny:latest"])
    Select(el(d, "model")).select_by_value("tiny:latest")
    open_settings(d, max_tokens=400)

    # a long answer streams in: the text grows over time, then Stop cancels it on the server
    ask(d, "Tell me a long story.")
    assert d.find_element(By.CSS_SELECTOR, ".turn.user .body").text == "Tell me a long story."
    wait(d, lambda d: len(grown(d)) >= 5)
    assert el(d, "stop").is_enabled() and not el(d, "send").is_enabled()
    d.save_screenshot(str(shots_dir(tmp_path) / "web-chat-streaming.png"))
    el(d, "stop").click()
    wait(d, lambda d: stats.requests_cancelled == 1, timeout=10)
    wait(d, lambda d: entry.scheduler.active == 0, timeout=10)
    generated = stats.generated_tokens_total
    assert generated < 400  # stopped long before max_tokens
    time.sleep(10 * SLOW_S)
    assert stats.generated_tokens_total == generated  # and it stays stopped
    assert metric(base, "requests_cancelled_total") == 1
    wait(d, idle)
    lengths = grown(d)
    assert lengths == sorted(lengths) and len(lengths) >= 5, lengths
    first = d.find_element(By.CSS_SELECTOR, ".turn.assistant")
    assert "stopped" in first.find_element(By.CLASS_NAME, "note").text
    assert first.find_element(By.CLASS_NAME, "body").text  # the partial answer stays

    # the conversation goes on: a second turn, cut at a small max_tokens this time
    open_settings(d, max_tokens=6)
    ask(d, "And a short one?")
    wait(d, lambda d: len(answers(d)) == 2 and idle(d))
    assert answers(d)[1]
    assert len(d.find_elements(By.CSS_SELECTOR, ".turn.user")) == 2
    assert "max tokens" in d.find_elements(By.CLASS_NAME, "note")[-1].text
    assert el(d, "error").get_attribute("hidden") is not None
    d.save_screenshot(str(shots_dir(tmp_path) / "web-chat-conversation.png"))

    # New chat empties the page
    el(d, "new-chat").click()
    assert d.find_elements(By.CSS_SELECTOR, ".turn") == []
    assert el(d, "empty").is_displayed()


def test_new_chat_while_streaming_stops_it(
    browser: WebDriver, slowed: tuple[str, LoadedModel]
) -> None:
    base, entry = slowed
    d = browser
    open_page(d, base)
    wait(d, lambda d: "tiny:latest" in model_ids(d))
    Select(el(d, "model")).select_by_value("tiny:latest")
    open_settings(d, max_tokens=400)
    ask(d, "Go on and on.")
    wait(d, lambda d: len(grown(d)) >= 2)
    el(d, "new-chat").click()
    wait(d, lambda d: entry.scheduler.stats.requests_cancelled == 1, timeout=10)
    wait(d, idle)
    time.sleep(0.2)  # the aborted answer must not come back into the new conversation
    assert d.find_elements(By.CSS_SELECTOR, ".turn") == []


def test_api_error_is_shown(browser: WebDriver, live: tuple[str, object]) -> None:
    base, _ = live
    d = browser
    open_page(d, base)
    wait(d, lambda d: "other:latest" in model_ids(d))
    Select(el(d, "model")).select_by_value("other:latest")
    # the model goes away after the page listed it: the chat request gets a 404
    assert httpx.request("DELETE", f"{base}/api/delete", json={"model": "other"}).is_success
    ask(d, "Are you there?")
    wait(d, lambda d: el(d, "error").is_displayed())
    assert "other" in el(d, "error").text
    wait(d, idle)
    # nothing came back: the question returns to the box, no half turn stays
    assert d.find_elements(By.CSS_SELECTOR, ".turn") == []
    assert el(d, "prompt").get_attribute("value") == "Are you there?"


def test_api_key_is_asked_for_and_sent(browser: WebDriver, home: Path) -> None:
    d = browser
    config = ServerConfig(store_home=home, port=free_port(), api_key="sekrit")
    with inprocess_server(config) as (base, _):
        open_page(d, base)
        wait(d, lambda d: el(d, "key-dialog").get_attribute("open") is not None)
        el(d, "api-key").send_keys("wrong")
        el(d, "key-save").click()
        wait(d, lambda d: "rejected" in el(d, "key-reason").text)
        assert el(d, "key-dialog").get_attribute("open") is not None
        el(d, "api-key").send_keys("sekrit")
        el(d, "key-save").click()
        wait(d, lambda d: model_ids(d) == ["other:latest", "tiny:latest"])
        assert el(d, "key-dialog").get_attribute("open") is None
        Select(el(d, "model")).select_by_value("tiny:latest")
        open_settings(d, max_tokens=4)
        ask(d, "hello")
        wait(d, lambda d: len(answers(d)) == 1 and idle(d), timeout=60)
        assert not el(d, "error").is_displayed(), el(d, "error").text
        assert answers(d)[0]


@pytest.mark.realmodel
def test_real_model_answers_in_the_page(
    browser: WebDriver, smollm2_path: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    Store(home).add_file(smollm2_path, "smollm2")
    d = browser
    with inprocess_server(ServerConfig(store_home=home, port=free_port())) as (base, _):
        open_page(d, base)
        wait(d, lambda d: model_ids(d) == ["smollm2:latest"])
        # SmolLM2-135M needs this system prompt to answer plainly (see test_realmodel)
        open_settings(d, max_tokens=48, system="You are a helpful AI assistant.", temp="0")
        ask(d, "What is the capital of France?")
        wait(d, lambda d: len(answers(d)) == 1 and idle(d), timeout=120)
        assert not el(d, "error").is_displayed(), el(d, "error").text
        assert "Paris" in answers(d)[0], answers(d)
        assert len(grown(d)) >= 2, grown(d)  # it streamed in, not all at once
        d.save_screenshot(str(shots_dir(tmp_path) / "web-chat-smollm2.png"))
