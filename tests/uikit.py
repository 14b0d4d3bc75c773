"""The browser of the UI tests: Debian's Chromium driven headless by Selenium through
chromedriver (tests/install.d/30-chromium.sh installs both), with a screenshot of every page."""

import pathlib
import re
import shutil
import tempfile
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tests" / "screenshots"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")

need_browser = pytest.mark.skipif(
    not (pathlib.Path(CHROMIUM).exists() and pathlib.Path(DRIVER).exists()),
    reason="needs chromium and chromium-driver (tests/install.d/30-chromium.sh)")


class Browser:
    """A headless Chromium of its own (fresh profile) with helpers for the UI tests."""

    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        # The console: CSP violations and script errors show there (Browser.console).
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        self.driver.set_page_load_timeout(60)
        self.test = "test"
        self.shots = 0

    def quit(self):
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def get(self, url):
        self.driver.get(url)
        self.shot()

    def shot(self, label=""):
        """Save what the page shows now under tests/screenshots/<test>-<n>-<page>.png."""
        SHOTS.mkdir(exist_ok=True)
        self.shots += 1
        path = urllib.parse.urlsplit(self.driver.current_url).path  # no code, no port
        page = re.sub(r"[^A-Za-z0-9]+", "-", path.removeprefix("/ui/"))
        name = f"{self.test}-{self.shots:02d}-{page.strip('-')[:60] or 'page'}"
        if label:
            name += "-" + label
        self.driver.save_screenshot(str(SHOTS / f"{name}.png"))

    def find(self, css):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, check, what, timeout=60):
        from selenium.common.exceptions import (NoSuchElementException,
                                                StaleElementReferenceException)
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            # A page being replaced (a click that navigates) leaves stale elements: look again.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=(
                StaleElementReferenceException, NoSuchElementException)).until(
                lambda driver: check())
        except Exception as error:
            self.shot("timeout")
            raise AssertionError(f"timed out waiting for {what}: {error}") from None

    def text(self, css):
        return self.find(css).text

    def wait_text(self, css, expected, timeout=60):
        def check():
            found = self.finds(css)
            return found and expected in found[0].text
        return self.wait(check, f"'{expected}' in {css}", timeout)

    def console(self):
        """The console's messages since the last call (CSP violations, script errors)."""
        return [entry["message"] for entry in self.driver.get_log("browser")]

    def cookie(self):
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}

    def resources(self):
        """Every URL the page loaded (the document and its subresources, fetches, streams)."""
        return self.driver.execute_script(
            "return [location.href].concat(performance.getEntriesByType('resource')"
            ".map(e => e.name))")


def login_url(shoal, cluster=None):
    args = ["ui"] + (["--cluster", cluster] if cluster else [])
    return shoal.run(*args).stdout.strip()


def fetch(url, cookie=None, method="GET", data=None, headers=None):
    """(status, headers, body) of a request outside the browser, with the session cookie."""
    request = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
    if cookie:
        request.add_header("Cookie", f"shoal_session={cookie}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
