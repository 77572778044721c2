"""The operator console in headless Chromium (Debian's chromium + chromium-driver, selenium).

The page loads without a key; with one it lists sessions, shows a live MJPEG preview of
the selected one, creates sessions, and its sliders change the rendered frame.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time

import numpy as np
import pytest
from PIL import Image
from server_process import TENANT_KEYS, shared_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="apt-get install chromium chromium-driver"
)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="avatarfarm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(predicate, timeout: float = 60.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting for the page")


def row_state(browser, selector: str) -> str | None:
    """A table row's state, read in one script (the table is rebuilt while we look)."""
    script = "const r = document.querySelector(arguments[0]); return r && r.dataset.state;"
    return browser.execute_script(script, selector)


def frame(client, sid: str) -> np.ndarray:
    res = client.get(f"/v1/sessions/{sid}/snapshot.jpg")
    assert res.status_code == 200, res.text
    return np.asarray(Image.open(io.BytesIO(res.content)).convert("L"), np.float32)


def test_console_lists_previews_creates_and_drives(browser):
    server = shared_server()
    browser.get(server.url + "/")
    assert browser.title == "avatarfarm console"
    browser.find_element(By.ID, "key").send_keys(TENANT_KEYS["t1"])
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()

    browser.find_element(By.ID, "c-width").clear()
    browser.find_element(By.ID, "c-width").send_keys("160")
    browser.find_element(By.ID, "c-height").clear()
    browser.find_element(By.ID, "c-height").send_keys("120")
    browser.find_element(By.ID, "c-idle").click()  # no idle motion: frames change only by pose
    browser.find_element(By.ID, "create").click()
    sid = wait(lambda: browser.find_element(By.ID, "preview-id").text)
    with server.client(TENANT_KEYS["t1"]) as client:
        try:
            row = f'#sessions tr[data-id="{sid}"]'
            wait(lambda: row_state(browser, row) == "live")
            preview = browser.find_element(By.ID, "preview")
            wait(lambda: int(preview.get_attribute("data-frames")) >= 2)
            first_src = preview.get_attribute("src")
            wait(lambda: preview.get_attribute("src") != first_src)  # the preview updates
            assert browser.execute_script("return arguments[0].naturalWidth", preview) == 160

            before = frame(client, sid)
            slider = browser.find_element(By.CSS_SELECTOR, 'input[data-expr="jawOpen"]')
            browser.execute_script(
                "arguments[0].value = 1; arguments[0].dispatchEvent(new Event('input'));",
                slider,
            )
            yaw = browser.find_element(By.ID, "yaw")
            browser.execute_script(
                "arguments[0].value = 40; arguments[0].dispatchEvent(new Event('input'));", yaw
            )
            wait(lambda: np.abs(frame(client, sid) - before).mean() > 0.5, timeout=30)
            # The table is rebuilt every 2 s: query and click in one script, never stale.
            browser.execute_script(f"document.querySelector('{row} button.stop').click()")
            wait(lambda: client.get(f"/v1/sessions/{sid}").json()["state"] == "ended")
            wait(lambda: row_state(browser, row) == "ended")
        finally:
            client.delete(f"/v1/sessions/{sid}")
