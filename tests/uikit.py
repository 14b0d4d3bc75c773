"""The browsers of the UI tests, each with a screenshot of every page: Debian's Chromium driven
headless by Selenium through chromedriver (tests/install.d/30-chromium.sh), and Debian's
firefox-esr driven headless through its own Marionette protocol with Mozilla's
marionette_driver (tests/install.d/31-firefox.sh): there is no geckodriver package, and
Marionette is what geckodriver itself speaks to Firefox."""

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
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

    # Chromium's word for a stale element when a reload replaces the page between finding an
    # element and reading it.
    replaced = ("does not belong to the document",)

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

    @property
    def transient(self):
        """What a wait retries past: a page being replaced leaves stale or missing elements."""
        from selenium.common.exceptions import (NoSuchElementException,
                                                StaleElementReferenceException)

        return (StaleElementReferenceException, NoSuchElementException)

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
        from selenium.webdriver.support.ui import WebDriverWait

        def attempt(driver):
            try:
                return check()
            except Exception as error:  # noqa: BLE001
                # The browser's other words for a page being replaced between two looks.
                if any(words in str(error) for words in self.replaced):
                    return False
                raise

        try:
            # A page being replaced (a click that navigates) leaves stale elements: look again.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                                 ignored_exceptions=self.transient).until(attempt)
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


def ui_server(tmp_path_factory, name):
    """A real server with the shipped catalog for a module of browser tests (a generator for a
    module-scoped fixture): the clusters the tests left are deleted before it stops."""
    from tests.cloudkit import api as rest
    from tests.conftest import Shoal

    client = Shoal(tmp_path_factory.mktemp(name) / "home", default_catalog=True)
    client.run("server", "start")
    yield client
    for cluster in rest(client, "/clusters"):
        client.run("cluster", "delete", cluster["name"], "--wait", check=False)
    client.run("server", "stop")


def fresh(browser, request, shoal):
    """``browser`` for the test ``request`` runs: its screenshots named after the test, and no
    cookie of the server's origin left from the test before."""
    browser.test = request.node.name
    browser.shots = 0
    browser.driver.get(shoal.url + "/ui/logged-out")  # a page of the origin, to clear its cookies
    browser.driver.delete_all_cookies()
    return browser


def call(shoal, method, path, body=None, token=None):
    """(status, JSON) of an API call with the owner's token (or ``token``)."""
    import json

    status, _, answer = fetch(shoal.url + "/api/v1" + path, method=method,
                              data=None if body is None else json.dumps(body).encode(),
                              headers={"Authorization": "Bearer " + (token or shoal.token),
                                       "Content-Type": "application/json"})
    return status, json.loads(answer or b"null")


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


# -- Firefox ---------------------------------------------------------------------------------------

FIREFOX = "/usr/bin/firefox-esr"

def _has_marionette():
    import importlib.util

    return importlib.util.find_spec("marionette_driver") is not None


need_firefox = pytest.mark.skipif(
    not (pathlib.Path(FIREFOX).exists() and _has_marionette()),
    reason="needs firefox-esr (tests/install.d/31-firefox.sh) and marionette_driver")

# A profile that keeps Firefox on loopback: no update, telemetry, safe-browsing, push, captive
# portal or connectivity checks, no prefetch; and every other origin sent to a closed proxy
# port on loopback, so nothing leaves the machine even if a pref above misses something.
FIREFOX_PREFS = {
    "marionette.port": 0,  # any free port; Firefox writes it to MarionetteActivePort
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "dom.push.connection.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": 9,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": 9,
    "network.proxy.no_proxies_on": "127.0.0.1, localhost",
    "network.proxy.allow_hijacking_localhost": False,
}


def _pref(value):
    return "true" if value is True else "false" if value is False else (
        str(value) if isinstance(value, int) else '"' + value.replace('"', '\\"') + '"')


class MarionetteDriver:
    """The few Selenium WebDriver calls the UI tests make, on a Marionette session, so
    ``Browser``'s helpers serve both browsers."""

    def __init__(self, client):
        self.client = client

    @property
    def current_url(self):
        return self.client.get_url()

    @property
    def page_source(self):
        return self.client.page_source

    def get(self, url):
        self.client.navigate(url)

    def back(self):
        self.client.go_back()

    def refresh(self):
        self.client.refresh()

    # No sandbox: the script runs in the page's own global, as WebDriver's (and geckodriver's)
    # do, so what it sets (window.x) stays for the next call and the page's script sees it.
    def execute_script(self, script, *args):
        return self.client.execute_script(script, script_args=list(args), new_sandbox=False,
                                          sandbox=None)

    def execute_async_script(self, script, *args):
        # Marionette, like WebDriver, passes the callback as the last argument.
        return self.client.execute_async_script(script, script_args=list(args),
                                                new_sandbox=False, sandbox=None)

    def find_element(self, by, value):
        return self.client.find_element(by, value)

    def find_elements(self, by, value):
        return self.client.find_elements(by, value)

    def get_cookies(self):
        return self.client.get_cookies()

    def add_cookie(self, cookie):
        self.client.add_cookie(cookie)

    def delete_all_cookies(self):
        self.client.delete_all_cookies()

    def save_screenshot(self, path):
        pathlib.Path(path).write_bytes(self.client.screenshot(format="binary", full=False))

    def get_log(self, kind):
        return []  # Marionette gives no console log; the Chromium tests check the console


class Firefox(Browser):
    """A headless firefox-esr of its own (fresh profile), driven over Marionette."""

    # Firefox's: the page source asked for while a form's post replaces the document (the old
    # one is gone, the new one not yet parsed); a command whose page went away before it
    # answered ("Actor 'MarionetteCommands' destroyed before query ... was resolved").
    replaced = Browser.replaced + ("documentElement is null", "destroyed before query")

    def __init__(self):
        from marionette_driver.marionette import Marionette

        self.profile = tempfile.mkdtemp(prefix="shoal-firefox-")
        pathlib.Path(self.profile, "user.js").write_text("".join(
            f'user_pref("{key}", {_pref(value)});\n' for key, value in FIREFOX_PREFS.items()))
        env = dict(os.environ, MOZ_HEADLESS="1", MOZ_HEADLESS_WIDTH="1400",
                   MOZ_HEADLESS_HEIGHT="1000")
        self.log = open(pathlib.Path(self.profile, "firefox.log"), "wb")
        # argv, not a shell: the process is ours to end by its pid in quit().
        self.process = subprocess.Popen(
            [FIREFOX, "--marionette", "--headless", "--no-remote", "-profile", self.profile],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            port = self._port()
            self.client = Marionette(host="127.0.0.1", port=port)
            self.client.start_session({"pageLoadStrategy": "normal"})
            self.client.timeout.page_load = 60
            self.client.set_window_rect(width=1400, height=1000)
        except Exception:
            self._stop()
            raise
        self.driver = MarionetteDriver(self.client)
        self.test = "test"
        self.shots = 0

    def _port(self, timeout=60):
        """The port Firefox chose for Marionette (it writes it in the profile once listening)."""
        active = pathlib.Path(self.profile, "MarionetteActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"firefox exited with {self.process.returncode}: " +
                                   pathlib.Path(self.profile, "firefox.log").read_text()[-2000:])
            if active.exists() and active.read_text().strip():
                return int(active.read_text().strip())
            time.sleep(0.1)
        raise RuntimeError("firefox did not open its Marionette port in time")

    @property
    def transient(self):
        from marionette_driver import errors

        return (errors.StaleElementException, errors.NoSuchElementException)

    def _stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def quit(self):
        try:
            self.client.delete_session()
        except Exception:
            pass  # a Firefox that went away: end the process all the same
        self._stop()
