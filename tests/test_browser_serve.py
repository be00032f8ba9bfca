"""The web page end to end in a real headless browser (Debian's chromium + chromedriver).

Starts ``locore serve``'s app on a free local port in a thread, loads the page in chromium
driven by Selenium, uploads a demo query, waits for the re-ranked list and the match view,
checks the top result's source, uploads a file that is not an image and reads the error shown
on the page, and saves a screenshot (``LOCORE_UPDATE_SCREENSHOTS=1`` also writes the one the
README shows, samples/web_search.png). Skipped, with the reason, where chromium is absent: CI
installs it with apt-get where it can (.ci/run).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.test_index_support import demo_index, demo_subset, token_logits_onnx

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "samples" / "web_search.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver); not installed here",
    ),
]


@pytest.fixture(scope="module")
def server_url(demo_cache: Path):
    pytest.importorskip("flask", reason="Flask is not installed (extra 'serve')")
    from locore.runtime.app import create_app, make_server
    from locore.runtime.backends import create_backend
    from locore.runtime.search_index import open_index
    from locore.runtime.sliding_windows import Reranker, RerankParams

    index = open_index(demo_index(demo_cache))
    backend = create_backend(token_logits_onnx(demo_cache), threads=2)
    reranker = Reranker(backend, RerankParams(topk=50, window=50, stride=25), clip_scales=True)
    app = create_app(index, reranker, shortlist=50, model_name="the shipped model (demo-tiny)")
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    index.close()
    backend.close()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1500", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _save_small_png(png: bytes, path: Path) -> None:
    """Write the screenshot 900 px wide as a 64-colour PNG (under 200 kB)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((900, round(image.height * 900 / image.width)), Image.Resampling.LANCZOS)
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def test_the_page_searches_reranks_and_shows_matches(
    server_url: str, browser, demo_cache: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, queries, query_sources, source_of = demo_subset(demo_cache)
    wait = WebDriverWait(browser, 60)
    browser.get(server_url)
    wait.until(lambda d: "96 images" in d.find_element(By.ID, "info").text)
    assert "token" not in browser.find_element(By.ID, "error").text
    # upload a query (china.jpg's query crop) and search
    browser.find_element(By.ID, "file").send_keys(str(queries[63]))
    browser.find_element(By.ID, "search-button").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#after li")) == 10)
    wait.until(lambda d: d.find_element(By.ID, "match-view").get_attribute("data-ready") == "true")
    before = browser.find_elements(By.CSS_SELECTOR, "#before li")
    after = browser.find_elements(By.CSS_SELECTOR, "#after li")
    assert len(before) == 10
    top = after[0].text.splitlines()[-1]
    assert source_of[top] == query_sources[63], after[0].text
    canvas = browser.find_element(By.ID, "match-view")
    assert canvas.get_attribute("data-shown") == "token_logits+cosine"
    assert int(canvas.get_attribute("data-matches")) > 0
    assert "token logit" in browser.find_element(By.ID, "match-note").text
    assert "ms" in browser.find_element(By.ID, "timings").text
    png = browser.get_screenshot_as_png()
    _save_small_png(png, tmp_path / "web_search.png")
    assert (tmp_path / "web_search.png").stat().st_size < 200_000
    if os.environ.get("LOCORE_UPDATE_SCREENSHOTS"):
        _save_small_png(png, SCREENSHOT)
    # a file that is not an image: the page shows the server's message
    bad = tmp_path / "notes.txt"
    bad.write_text("these are notes, not a photo")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.ID, "search-button").click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "is not a JPEG, PNG, BMP or WebP" in browser.find_element(By.ID, "error").text
