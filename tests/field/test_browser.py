"""The page in a real headless browser (Debian's chromium + chromium-driver, driven by selenium): upload a photo, read the answer;
"use my location" with the browser's geolocation overridden through the DevTools protocol.

The screenshot is kept as tests/artifacts/serve-page.png (ignored by git). Skips with the
reason when chromium or chromedriver is missing (`.ci/browser-packages.sh` installs them as root).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.field.conftest import ARTIFACTS, FieldRun, Server, post, post_file, stop_server
from tests.field.test_prior_serve import form, serve_with_prior

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="chromium and chromium-driver are not installed (as root: bash .ci/browser-packages.sh)"),
]


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201 - selenium's WebDriver is untyped here
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_upload_a_photo_and_read_the_answer(browser, server: Server, field_run: FieldRun) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = field_run.images[40]
    status, api = post_file(server.port, photo.read_bytes(), photo.name)
    assert status == 200
    browser.get(f"http://127.0.0.1:{server.port}/")
    assert "Which species" in browser.title or "lit serve" in browser.title
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#results tbody tr")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert [r.get_attribute("data-species") for r in rows] == [g["species"] for g in api["guesses"]]
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[1].text == api["guesses"][0]["common_name"] and first[2].text == api["guesses"][0]["species"]
    assert first[4].text == f"{100 * api['guesses'][0]['probability']:.1f}%"
    answer = browser.find_element(By.ID, "answer")
    assert answer.get_attribute("data-taxon") == api["answer"]["taxon"]
    assert answer.text.startswith("Not sure" if api["answer"]["rank"] is None else "Answer:")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 5_000


def test_a_non_image_shows_the_servers_message(browser, server: Server, tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    notes = tmp_path / "notes.jpg"
    notes.write_text("field notes, not a photo")
    browser.get(f"http://127.0.0.1:{server.port}/")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
    assert "not a readable image" in browser.find_element(By.ID, "error").text


@pytest.fixture(scope="module")
def prior_server(field_run: FieldRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`lit serve` on a run with a location prior."""
    srv = serve_with_prior(field_run, tmp_path_factory.mktemp("browser-prior"))
    yield srv
    stop_server(srv)


COUNT_GEOLOCATION = """
window.geolocationCalls = 0;
const ask = navigator.geolocation.getCurrentPosition.bind(navigator.geolocation);
navigator.geolocation.getCurrentPosition = (...args) => { window.geolocationCalls += 1; return ask(...args); };
"""


def test_use_my_location_fills_the_place_only_when_clicked(browser, prior_server: Server, field_run: FieldRun) -> None:  # noqa: ANN001
    """The button asks the browser's geolocation (overridden through the DevTools protocol) on click only; the place
    goes with the upload and the page shows it with the image-only answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    origin = f"http://127.0.0.1:{prior_server.port}"
    browser.execute_cdp_cmd("Browser.grantPermissions", {"origin": origin, "permissions": ["geolocation"]})
    browser.execute_cdp_cmd("Emulation.setGeolocationOverride", {"latitude": 51.5, "longitude": -0.12, "accuracy": 30})
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_GEOLOCATION})
    try:
        browser.get(origin + "/")
        assert browser.execute_script("return window.geolocationCalls") == 0  # nothing asked on load
        assert browser.find_element(By.ID, "lat").get_attribute("value") == ""
        browser.find_element(By.ID, "locate").click()
        WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "lat").get_attribute("value"))
        assert browser.execute_script("return window.geolocationCalls") == 1
        assert (browser.find_element(By.ID, "lat").get_attribute("value"),
                browser.find_element(By.ID, "lon").get_attribute("value")) == ("51.50000", "-0.12000")
        browser.execute_script("document.getElementById('date').value = '2021-06-14'")
        photo = field_run.images[21]
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#results tbody tr")))
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "imageonly").text)
        place = browser.find_element(By.ID, "place")
        assert place.get_attribute("data-source") == "form"
        assert place.text == "Place: 51.5000, -0.1200, 2021-06-14 (from the fields above)."
        _, api = post(prior_server.port, *form(photo.read_bytes(), lat="51.50000", lon="-0.12000", date="2021-06-14"))
        alone = browser.find_element(By.ID, "imageonly")
        assert alone.get_attribute("data-taxon") == api["image_only"]["guesses"][0]["taxon"]
        assert alone.text.startswith("From the image alone: ") and "weight 1" in alone.text
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert [r.get_attribute("data-species") for r in rows] == [g["species"] for g in api["guesses"]]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "serve-page-place.png"))
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
        browser.execute_cdp_cmd("Emulation.clearGeolocationOverride", {})
