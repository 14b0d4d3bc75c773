"""The web UI's main flows in Firefox (Debian's firefox-esr, headless, driven over Marionette)
against a real server process: the page must work in Chromium and Firefox. Every page visited
leaves a screenshot in tests/screenshots/ (named for the test, which ends in _firefox)."""

import json

import pytest

from tests.uiflows import type_into, value, yaml_editor_flow
from tests.uikit import Firefox, fetch, fresh, login_url, need_firefox, ui_server

pytestmark = need_firefox


@pytest.fixture(scope="module")
def shoal(tmp_path_factory):
    yield from ui_server(tmp_path_factory, "ui-firefox")


@pytest.fixture(scope="module")
def firefox():
    browser = Firefox()
    yield browser
    browser.quit()


@pytest.fixture
def browser(firefox, request, shoal):
    return fresh(firefox, request, shoal)


def test_login_link_works_once_in_firefox(browser, shoal):
    url = login_url(shoal)
    browser.get(url)
    assert browser.driver.current_url == shoal.url + "/ui/templates"
    assert "local-web" in browser.text("#templates")
    [cookie] = [c for c in browser.driver.get_cookies() if c["name"] == "shoal_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.driver.execute_script("return document.cookie") == ""
    assert shoal.token not in browser.driver.page_source
    # Firefox keeps to the CSP: an injected inline script does not run, and the pages (the
    # catalog editor with its vendored YAML parser too) load nothing from another origin.
    ran = browser.driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1';"
        "document.body.append(s); return window.inlineRan === 1")
    assert ran is False
    for page, yaml in (("/ui/admin/services/web-backend", True),
                       ("/ui/templates/local-web", False)):
        browser.get(shoal.url + page)
        browser.wait(lambda: browser.driver.execute_script(
            "return document.readyState") == "complete", "the page")
        loaded = browser.resources()
        assert all(url.startswith(shoal.url + "/") for url in loaded), loaded
        assert any(url.endswith("/ui/static/shoal.js") for url in loaded)
        assert any("/ui/static/vendor/js-yaml" in url for url in loaded) is yaml, loaded
    # The same link again, without the session: refused.
    browser.driver.delete_all_cookies()
    browser.get(url)
    assert "cannot log you in" in browser.text("#refused")
    browser.get(shoal.url + "/ui/clusters")
    assert "/ui/clusters" in browser.driver.current_url and browser.finds("#clusters") == []


def test_plan_preview_in_firefox(browser, shoal):
    browser.get(login_url(shoal))
    browser.get(shoal.url + "/ui/templates/local-web")
    type_into(browser.find("#f-size"), "4")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.find("#plan-result").is_displayed(), "the plan")
    browser.shot("plan")
    rows = [r.text for r in browser.finds("#plan-groups tbody tr")]
    assert sum(int(r.split()[0]) for r in rows) == 4
    assert any("web-balancer" in r for r in rows)
    expected = json.loads(fetch(shoal.url + "/api/v1/clusters/plan", None, "POST", json.dumps(
        {"template": "local-web", "size": 4}).encode(), {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shoal.token}"})[2])
    assert browser.text("#plan-tasks") == str(expected["summary"]["tasks"])
    assert float(browser.text("#plan-cost")) == expected["layout"]["cost"]


def test_create_follows_progress_live_to_active_in_firefox(browser, shoal):
    browser.get(login_url(shoal))
    browser.get(shoal.url + "/ui/templates/local-web")
    browser.find("#f-name").send_keys("foxweb")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.find("#create-button").is_enabled(), "the plan")
    browser.find("#create-button").click()
    browser.wait(lambda: browser.driver.current_url.endswith("/ui/clusters/foxweb"), "landing")
    browser.shot("landed")
    browser.driver.execute_script("window.sameDocument = true")  # a reload would lose it
    # The create takes seconds (13 tasks): the page landed on it running, so what follows
    # came over the stream.
    assert browser.text("#cluster-status") == "CREATING"
    browser.wait(lambda: browser.text("#cluster-status") == "ACTIVE" and
                 browser.text("#op-status") == "SUCCEEDED", "ACTIVE, seen live", 120)
    browser.shot("active")
    assert browser.driver.execute_script("return window.sameDocument") is True
    bar = browser.find("#op-bar")
    assert value(browser, bar) == browser.driver.execute_script("return arguments[0].max", bar)
    browser.wait(lambda: len(browser.finds("#nodes tbody tr")) == 3, "three nodes")
    assert all("ACTIVE" in row.text for row in browser.finds("#nodes tbody tr"))
    assert browser.text("#events")
    shoal.run("cluster", "delete", "foxweb", "--wait")


def test_a_form_posted_without_the_csrf_token_is_refused_in_firefox(browser, shoal):
    browser.get(login_url(shoal))
    cookie = browser.cookie()["shoal_session"]
    browser.driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.name = 'template'; i.value = 'local-web';"
        "f.append(i); document.body.append(f); f.submit()", "/api/v1/clusters/plan")
    browser.wait(lambda: "csrf" in browser.driver.page_source.lower(), "the refusal")
    browser.shot("refused")
    assert fetch(shoal.url + "/ui/clusters", cookie)[0] == 200  # the session is still alive


def test_yaml_editor_in_firefox(browser, shoal):
    yaml_editor_flow(browser, shoal)
