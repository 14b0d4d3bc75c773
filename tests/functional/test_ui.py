"""The web UI in a real browser (headless Chromium through Selenium) against a real server
process: login by one-time link, CSP and CSRF, plans, clusters followed live, the admin view.
Every page visited leaves a screenshot in tests/screenshots/."""

import json
import time
import urllib.parse

import pytest

from tests.cloudkit import api as rest, wait_finished
from tests.conftest import Shoal
from tests.uiflows import yaml_editor_flow
from tests.uikit import Browser, call, fetch, fresh, login_url, need_browser, ui_server

pytestmark = need_browser


@pytest.fixture(scope="module")
def shoal(tmp_path_factory):
    yield from ui_server(tmp_path_factory, "ui")


@pytest.fixture(scope="module")
def chromium():
    browser = Browser()
    yield browser
    browser.quit()


@pytest.fixture
def browser(chromium, request, shoal):
    return fresh(chromium, request, shoal)


def logged_in(browser, shoal, cluster=None):
    browser.get(login_url(shoal, cluster))
    return browser


# -- (1) login, logout, CSP, CSRF ------------------------------------------------------------------


def test_login_link_works_once_and_logout_ends_the_session(browser, shoal):
    url = login_url(shoal)
    assert shoal.token not in url and "/ui/login?code=" in url
    browser.get(url)
    assert browser.driver.current_url == shoal.url + "/ui/templates"
    assert "local-web" in browser.text("#templates")
    cookie = browser.cookie()["shoal_session"]
    # The cookie: HttpOnly (no script sees it), SameSite=Strict; the token is nowhere in the page.
    [details] = [c for c in browser.driver.get_cookies() if c["name"] == "shoal_session"]
    assert details["httpOnly"] and details["sameSite"] == "Strict"
    assert browser.driver.execute_script("return document.cookie") == ""
    assert shoal.token not in browser.driver.page_source
    storage = browser.driver.execute_script(
        "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert shoal.token not in storage
    # The same link again, in a browser without the session: refused.
    browser.driver.delete_all_cookies()
    browser.get(url)
    assert "cannot log you in" in browser.text("#refused")
    assert fetch(url)[0] == 403
    # The session works until logout, then neither pages nor the API take it.
    assert fetch(shoal.url + "/ui/clusters", cookie)[0] == 200
    browser.driver.add_cookie({"name": "shoal_session", "value": cookie, "path": "/"})
    browser.get(shoal.url + "/ui/clusters")
    browser.find("#logout").click()
    browser.wait_text("h1", "Logged out")
    browser.shot()
    assert fetch(shoal.url + "/ui/clusters", cookie)[0] == 401
    assert fetch(shoal.url + "/api/v1/clusters", cookie)[0] == 401


def test_every_page_sends_a_strict_csp_and_inline_script_does_not_run(browser, shoal):
    logged_in(browser, shoal)
    cookie = browser.cookie()["shoal_session"]
    for path in ("/ui/templates", "/ui/templates/local-web", "/ui/clusters", "/ui/admin",
                 "/ui/admin/import", "/ui/admin/check", "/ui/admin/resources",
                 "/ui/admin/services/web-backend", "/ui/admin/people", "/ui/logged-out"):
        status, headers, _ = fetch(shoal.url + path, cookie)
        assert status == 200, path
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy, path
        assert "unsafe-inline" not in policy and "http" not in policy, path
    browser.get(shoal.url + "/ui/templates")
    ran = browser.driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1';"
        "document.body.append(s); return window.inlineRan === 1")
    assert ran is False


def test_a_form_posted_without_the_csrf_token_is_refused(browser, shoal):
    logged_in(browser, shoal)
    cookie = browser.cookie()["shoal_session"]
    # A plain HTML form (what another page would submit) posting to the API and to logout.
    for action in ("/api/v1/clusters/plan", "/ui/logout"):
        browser.driver.execute_script(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
            "const i = document.createElement('input'); i.name = 'template';"
            "i.value = 'local-web'; f.append(i); document.body.append(f); f.submit()", action)
        browser.wait(lambda: "csrf" in browser.driver.page_source.lower(), "the refusal")
        browser.shot("refused")
        assert "CSRF" in browser.driver.page_source
        browser.driver.back()
    # The session is still alive (the forged logout did nothing), and a wrong token is refused.
    assert fetch(shoal.url + "/ui/clusters", cookie)[0] == 200
    status, _, body = fetch(shoal.url + "/api/v1/clusters", cookie, "POST",
                            json.dumps({"name": "forged", "template": "local-web",
                                        "size": 3}).encode(),
                            {"Content-Type": "application/json", "X-CSRF-Token": "wrong"})
    assert status == 403 and json.loads(body)["error"]["details"]["reason"] == "csrf"
    assert rest(shoal, "/clusters") == [] or all(c["name"] != "forged"
                                                for c in rest(shoal, "/clusters"))


# -- (1) templates and plans ----------------------------------------------------------------------


def test_template_page_plans_a_layout_with_cost_and_tasks(browser, shoal):
    logged_in(browser, shoal)
    browser.find("#templates a[href='/ui/templates/local-web']").click()
    browser.wait_text("h1", "local-web")
    browser.shot()
    assert '"defaults"' in browser.text("#resolved")
    size = browser.find("#f-size")
    size.clear()
    size.send_keys("4")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.find("#plan-result").is_displayed(), "the plan")
    browser.shot("plan")
    rows = [r.text for r in browser.finds("#plan-groups tbody tr")]
    assert any("web-backend" in r for r in rows) and any("web-balancer" in r for r in rows)
    counts = sum(int(r.split()[0]) for r in rows)
    assert counts == 4
    expected = json.loads(fetch(shoal.url + "/api/v1/clusters/plan", None, "POST", json.dumps(
        {"template": "local-web", "size": 4}).encode(), {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shoal.token}"})[2])
    assert browser.text("#plan-tasks") == str(expected["summary"]["tasks"])
    assert float(browser.text("#plan-cost")) == expected["layout"]["cost"]
    assert rest(shoal, "/clusters") == [] or "x" not in [c["name"] for c in rest(shoal, "/clusters")]


def test_an_infeasible_plan_shows_the_solvers_reason_beside_the_form(browser, shoal):
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/templates/local-web")
    size = browser.find("#f-size")
    size.clear()
    size.send_keys("1")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.text("#plan-error") or any(
        e.text for e in browser.finds("#plan-form .field-error")), "the reason")
    browser.shot("infeasible")
    shown = " ".join(e.text for e in browser.finds("#plan-form .field-error, #plan-error"))
    reason = json.loads(fetch(shoal.url + "/api/v1/clusters/plan", None, "POST", json.dumps(
        {"template": "local-web", "size": 1}).encode(), {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shoal.token}"})[2])["error"]["message"]
    assert reason and reason in shown
    assert not browser.find("#plan-result").is_displayed()
    assert browser.find("#create-button").get_attribute("disabled")


# -- (2) clusters: create, follow live, operate ---------------------------------------------------


def confirm(browser, title_part):
    browser.wait(lambda: browser.find("#confirm").is_displayed(), "the plan to confirm")
    assert title_part in browser.text("#confirm-title")
    browser.shot("confirm")
    browser.find("#confirm-yes").click()


def wait_status(browser, status, timeout=120):
    browser.wait(lambda: browser.text("#cluster-status") == status and
                 browser.text("#op-status") in ("SUCCEEDED", "FAILED", "CANCELLED"),
                 f"cluster status {status}", timeout)


def test_create_from_the_form_follows_progress_live_then_resize_and_delete(browser, shoal):
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/templates/local-web")
    browser.find("#f-name").send_keys("webui")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.find("#create-button").is_enabled(), "the plan")
    browser.find("#create-button").click()
    browser.wait(lambda: browser.driver.current_url.endswith("/ui/clusters/webui"), "landing")
    browser.shot("landed")
    # Marks this document: a reload would lose it.
    browser.driver.execute_script("window.sameDocument = true")
    wait_status(browser, "ACTIVE")
    browser.shot("active")
    assert browser.driver.execute_script("return window.sameDocument") is True
    assert browser.text("#op-status") == "SUCCEEDED"
    assert browser.find("#op-bar").get_attribute("value") == browser.find(
        "#op-bar").get_attribute("max")
    events = browser.text("#events")
    assert events  # the log grew while the page watched
    # The nodes table filled in: 3 nodes with addresses, statuses from the stream.
    browser.wait(lambda: len(browser.finds("#nodes tbody tr")) == 3, "three nodes")
    assert all("ACTIVE" in row.text for row in browser.finds("#nodes tbody tr"))
    # The balancer link is a link, and it answers.
    browser.wait(lambda: browser.finds("#links a"), "the links")
    link = [a for a in browser.finds("#links a") if a.text == "balancer"][0]
    href = link.get_attribute("href")
    assert href.startswith("http://127.")
    link.click()
    browser.wait(lambda: len(browser.driver.window_handles) == 2, "the balancer's tab")
    cluster_tab = browser.driver.current_window_handle
    browser.driver.switch_to.window([h for h in browser.driver.window_handles
                                     if h != cluster_tab][0])
    browser.wait(lambda: "backend" in browser.driver.page_source.lower(), "a backend's answer")
    browser.shot("balancer")
    browser.driver.close()
    browser.driver.switch_to.window(cluster_tab)

    # Resize: the plan (layout groups, added nodes, tasks) is shown, then confirmed.
    size = browser.find("#resize-size")
    size.clear()
    size.send_keys("4")
    browser.find("#resize-plan").click()
    browser.wait(lambda: browser.find("#confirm").is_displayed(), "the resize plan")
    assert "Nodes: 3 → 4 (added 1, removed 0" in browser.text("#plan-summary")
    assert "tasks on" in browser.text("#plan-task-count")
    assert rest(shoal, "/clusters/webui")["size"] == 3  # planning changed nothing
    confirm(browser, "resize")
    browser.wait(lambda: browser.text("#op-kind") == "resize", "the resize to start")
    wait_status(browser, "ACTIVE")
    browser.wait(lambda: len(browser.finds("#nodes tbody tr")) == 4, "four nodes")
    # The task table now shows the resize's tasks, not the create's.
    browser.wait(lambda: "CREATE on n4" in browser.text("#tasks"), "the resize's tasks")
    assert "CREATE on n1" not in browser.text("#tasks")
    browser.shot("resized")
    assert browser.driver.execute_script("return window.sameDocument") is True
    assert rest(shoal, "/clusters/webui")["size"] == 4

    # Delete, after its plan.
    browser.find("#delete-plan").click()
    confirm(browser, "delete")
    browser.wait(lambda: browser.text("#cluster-status") == "DELETED", "the delete", 120)
    browser.shot("deleted")
    assert "webui" not in [c["name"] for c in rest(shoal, "/clusters")]


def test_pause_resume_and_cancel_of_a_running_create(browser, shoal, tmp_path):
    from shoal_testkit import catalog

    hold = shoal.home / "hold-ui"
    hold.write_text("")
    shoal.run("catalog", "import", catalog.write(tmp_path / "catalog", fields={
        "hold_while_exists": "hold-ui"}))
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/templates/fake-stack")
    browser.find("#f-name").send_keys("held")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.find("#create-button").is_enabled(), "the plan")
    browser.find("#create-button").click()
    browser.wait(lambda: browser.driver.current_url.endswith("/ui/clusters/held"), "landing")
    browser.wait(lambda: browser.text("#op-running-count") not in ("", "0"), "running tasks")
    assert browser.finds("#op-running li")
    browser.shot("running")
    # Pause and resume, followed live.
    browser.find("#control-pause").click()
    confirm(browser, "Pause")
    browser.wait(lambda: browser.text("#op-status") == "PAUSED", "the pause")
    browser.shot("paused")
    browser.find("#control-resume").click()
    confirm(browser, "Resume")
    browser.wait(lambda: browser.text("#op-status") == "RUNNING", "the resume")
    browser.find("#control-cancel").click()
    confirm(browser, "Cancel")
    # The request is in once the operation leaves RUNNING; then the held actions may end.
    browser.wait(lambda: rest(shoal, "/clusters/held")["operation"]["status"] != "RUNNING",
                 "the cancel to be taken")
    assert not browser.text("#action-error")
    hold.unlink()  # the held actions end; the rollback runs
    browser.wait(lambda: browser.text("#op-status") in ("CANCELLED", "FAILED"), "the cancel", 120)
    browser.shot("cancelled")
    cluster = wait_finished(shoal, "held")
    assert cluster["operation"]["status"] in ("CANCELLED", "FAILED")
    assert cluster["status"] in ("FAILED", "DELETED")


# -- (3) admin -------------------------------------------------------------------------------------


def services(shoal):
    return {s["name"] for s in rest(shoal, "/services")}


def test_admin_service_errors_sit_next_to_their_field_and_write_nothing(browser, shoal):
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/admin")
    browser.find("#new-service").click()
    browser.wait_text("h1", "(new)")
    before = services(shoal)
    # A bad name: the API's details name the field; the message sits beside the name input.
    browser.find("#e-name").send_keys("Bad Name")
    browser.find("#save").click()
    browser.wait(lambda: browser.find('[data-field="name"]').text, "the name's error")
    browser.shot("bad-name")
    assert "name must be a name" in browser.find('[data-field="name"]').text
    assert not browser.find("#json-error").text
    assert services(shoal) == before
    # A bad field deep in the JSON: the message names its path, beside the editor.
    name = browser.find("#e-name")
    name.clear()
    name.send_keys("ui-svc")
    editor = browser.find("#e-json")
    editor.clear()
    editor.send_keys(json.dumps({"name": "ui-svc", "provisioner": {"actions": {
        "install": {"type": 3}}}}))
    browser.find("#save").click()
    browser.wait(lambda: browser.find("#json-error").text, "the editor's error")
    browser.shot("bad-json")
    assert "provisioner.actions.install.type" in browser.find("#json-error").text
    assert not browser.find('[data-field="name"]').text
    assert services(shoal) == before
    # A good one is written, and the page moves to it.
    editor.clear()
    editor.send_keys(json.dumps({"name": "ui-svc", "provisioner": {"actions": {
        "install": {"type": "shell", "fields": {"command": ["true"]}}}}}))
    description = browser.find("#e-description")
    description.send_keys("made in the browser")
    browser.find("#save").click()
    browser.wait(lambda: "/ui/admin/services/ui-svc" in browser.driver.current_url, "the new page")
    browser.shot("created")
    assert rest(shoal, "/services/ui-svc")["description"] == "made in the browser"
    # Edit, then delete (the button asks twice).
    description = browser.find("#e-description")
    description.clear()
    description.send_keys("edited")
    browser.find("#save").click()
    browser.wait(lambda: rest(shoal, "/services/ui-svc")["description"] == "edited", "the edit")
    browser.find("#delete").click()
    browser.find("#delete").click()
    browser.wait(lambda: browser.driver.current_url.split("?")[0].endswith("/ui/admin"),
                 "back on the catalog")
    browser.shot("deleted")
    assert "ui-svc" not in services(shoal)


def test_admin_writes_a_service_as_yaml_errors_beside_the_editor(browser, shoal):
    yaml_editor_flow(browser, shoal)


def test_provider_secrets_are_shown_masked_and_kept(browser, shoal):
    body = {"name": "ui-secret", "providertype": "local", "provisioner": {"api_key": "s3cr3t-x"}}
    status, _, _ = fetch(shoal.url + "/api/v1/providers", None, "POST", json.dumps(body).encode(),
                         {"Content-Type": "application/json",
                          "Authorization": f"Bearer {shoal.token}"})
    assert status == 201
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/admin/providers/ui-secret")
    assert "s3cr3t-x" not in browser.driver.page_source
    assert "********" in browser.find("#e-json").get_attribute("value")
    browser.find("#e-description").send_keys("saved with the secret left masked")
    browser.find("#save").click()
    browser.wait(lambda: rest(shoal, "/providers/ui-secret").get("description"), "the save")
    # Still masked, still set: a masked value sent back keeps the stored secret.
    assert rest(shoal, "/providers/ui-secret")["provisioner"]["api_key"] == "********"


def test_import_of_the_coopr_catalog_archive_lists_its_three_warnings(browser, shoal, tmp_path,
                                                                     coopr_catalog):
    import tarfile

    archive = tmp_path / "coopr-catalog.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(coopr_catalog, arcname="coopr-catalog")
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/admin/import")
    browser.find("#import-file").send_keys(str(archive))
    browser.find("#import-button").click()
    browser.wait(lambda: browser.text("#import-result"), "the import")
    browser.shot("imported")
    warnings = [li.text for li in browser.finds("#import-warnings li")]
    assert len(warnings) == 3, warnings
    assert any("hadoop-hdfs-secondarynamenode" in w for w in warnings)
    assert any("coopr-standalone" in w for w in warnings)
    assert any("ubuntu16" in w for w in warnings)
    assert "lamp" in {t["name"] for t in rest(shoal, "/clustertemplates")}
    # The check page lists the same missing references.
    browser.get(shoal.url + "/ui/admin/check")
    check = browser.text("#check")
    assert "ubuntu16" in check and "coopr-standalone" in check
    # Export: a download link to the API's export, which the session may read.
    browser.get(shoal.url + "/ui/admin")
    link = browser.find("#export")
    assert link.get_attribute("download")
    status, _, body = fetch(link.get_attribute("href"), browser.cookie()["shoal_session"])
    assert status == 200 and len(json.loads(body)["entities"]) > 90
    # Something that is no archive: refused, nothing written.
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive")
    browser.get(shoal.url + "/ui/admin/import")
    browser.find("#import-file").send_keys(str(junk))
    browser.find("#import-button").click()
    browser.wait(lambda: browser.text("#import-error"), "the refusal")
    assert "not a zip or tar archive" in browser.text("#import-error")


def test_plugin_resources_upload_stage_activate_recall_delete(browser, shoal, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("echo hello\n")

    def row(version):
        found = browser.finds(f"#resources tbody tr[data-name='hello'][data-version='{version}']")
        return found[0] if found else None

    def status(version):
        found = row(version)  # None while the page reloads
        return found.find_element("css selector", "td:nth-child(4)").text if found else ""

    def act(version, action):
        row(version).find_element("css selector", f"button[data-act='{action}']").click()

    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/admin/resources")
    for _ in range(2):
        browser.find("#r-name").clear()
        browser.find("#r-name").send_keys("hello")
        browser.find("#r-file").send_keys(str(script))
        browser.find("#upload").click()
        browser.wait(lambda: browser.finds("#resources tbody tr[data-name='hello']"), "upload")
    browser.wait(lambda: len(browser.finds("#resources tbody tr[data-name='hello']")) == 2,
                 "two versions")
    act(1, "stage")
    browser.wait(lambda: status(1) == "staged", "staged")
    act(1, "activate")
    browser.wait(lambda: status(1) == "active", "active")
    browser.shot("active")
    assert rest(shoal, "/resources/scripts/hello")["active"] == 1
    act(1, "recall")
    browser.wait(lambda: status(1) == "inactive", "recalled")
    act(2, "delete")
    browser.wait(lambda: len(browser.finds("#resources tbody tr[data-name='hello']")) == 1,
                 "deleted")
    browser.shot("deleted")
    assert [v["version"] for v in rest(shoal, "/resources/scripts/hello")["versions"]] == [1]


def test_service_operations_show_their_plan_and_controls_say_why_not(browser, shoal):
    shoal.run("cluster", "create", "svcops", "--template", "local-web", "--size", "2", "--wait")
    logged_in(browser, shoal, cluster="svcops")
    # Stop: the plan names the tasks and the nodes they touch; confirmed, it runs and is followed.
    browser.find(".op-form[data-verb='stop'] button").click()
    browser.wait(lambda: browser.find("#confirm").is_displayed(), "the stop plan")
    assert "tasks on 2 nodes" in browser.text("#plan-task-count")
    confirm(browser, "stop")
    browser.wait(lambda: browser.text("#op-kind") == "stop", "the stop to start")
    browser.wait(lambda: browser.text("#op-status") == "SUCCEEDED", "the stop")
    browser.wait(lambda: any("STOP" in r.text for r in browser.finds("#tasks tbody tr")),
                 "the STOP tasks in the table")
    browser.shot("stopped")
    # Pause with nothing running: the API's refusal is shown, nothing changes.
    browser.find("#control-pause").click()
    confirm(browser, "Pause")
    browser.wait(lambda: browser.text("#action-error"), "the refusal")
    assert "no running operation" in browser.text("#action-error")
    # Start again, then the cluster is as before.
    browser.find(".op-form[data-verb='start'] button").click()
    confirm(browser, "start")
    browser.wait(lambda: browser.text("#op-kind") == "start", "the start")
    browser.wait(lambda: browser.text("#op-status") == "SUCCEEDED", "the start to finish")
    shoal.run("cluster", "delete", "svcops", "--wait")


def test_add_remove_services_and_reconfigure_from_the_cluster_page(browser, shoal, tmp_path):
    from selenium.webdriver.support.ui import Select
    from shoal_testkit import catalog

    shoal.run("catalog", "import", catalog.write(tmp_path / "catalog"))
    shoal.run("cluster", "create", "svcs", "--template", "fake-stack", "--size", "2", "--wait")
    logged_in(browser, shoal, cluster="svcs")

    def run(verb, title):
        browser.find(f".op-form[data-verb='{verb}'] button").click()
        browser.wait(lambda: browser.find("#confirm").is_displayed(), f"the {verb} plan")
        plan = browser.text("#plan-task-list")
        confirm(browser, title)
        browser.wait(lambda: browser.text("#op-kind") == verb, f"the {verb} to start")
        browser.wait(lambda: browser.text("#op-status") == "SUCCEEDED", f"the {verb}")
        return plan

    Select(browser.find(".op-form[data-verb='add-services'] select")).select_by_visible_text(
        "cache")
    plan = run("add-services", "add-services")
    assert "INSTALL cache on n1" in plan and "INSTALL cache on n2" in plan
    assert "cache" in rest(shoal, "/clusters/svcs")["services"]
    browser.get(shoal.url + "/ui/clusters/svcs")  # the forms list the cluster's services anew
    Select(browser.find(".op-form[data-verb='remove-services'] select")).select_by_visible_text(
        "cache")
    plan = run("remove-services", "remove-services")
    assert "REMOVE cache on n1" in plan
    assert "cache" not in rest(shoal, "/clusters/svcs")["services"]
    form = browser.find(".op-form[data-verb='reconfigure']")
    form.find_element("css selector", "textarea").send_keys('{"app": {"port": 9090}}')
    plan = run("reconfigure", "reconfigure")
    assert "CONFIGURE" in plan
    # A config that is no JSON: said beside the form, nothing planned.
    form = browser.find(".op-form[data-verb='reconfigure']")
    area = form.find_element("css selector", "textarea")
    area.clear()
    area.send_keys("{bad")
    form.find_element("css selector", "button").click()
    browser.wait(lambda: browser.text("#action-error"), "the refusal")
    assert "not valid JSON" in browser.text("#action-error")
    shoal.run("cluster", "delete", "svcs", "--wait")


# -- (4) nothing from another origin ----------------------------------------------------------------


def test_no_page_loads_anything_from_another_origin_or_breaks_the_csp(browser, shoal):
    shoal.run("cluster", "create", "origins", "--template", "local-web", "--size", "2", "--wait")
    logged_in(browser, shoal, cluster="origins")
    assert browser.driver.current_url == shoal.url + "/ui/clusters/origins"
    origin = urllib.parse.urlsplit(shoal.url)
    pages = ["/ui/clusters/origins", "/ui/templates", "/ui/templates/local-web", "/ui/clusters",
             "/ui/clusters?status=ACTIVE", "/ui/admin", "/ui/admin/providers/local",
             "/ui/admin/services/new", "/ui/admin/import", "/ui/admin/check",
             "/ui/admin/resources", "/ui/admin/people"]
    browser.console()
    for page in pages:
        browser.get(shoal.url + page)
        browser.wait(lambda: browser.driver.execute_script(
            "return document.readyState") == "complete", "the page to load")
        loaded = browser.resources()
        assert loaded, page
        for url in loaded:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme == "data":
                continue
            assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), (page, url)
        problems = [m for m in browser.console()
                    if "Content Security Policy" in m or "Uncaught" in m]
        assert problems == [], (page, problems)
    # Health and drift, as the API reports them: the badge, and a drift check from the page.
    browser.get(shoal.url + "/ui/clusters/origins")
    assert browser.text("#cluster-health") in ("HEALTHY", "DEGRADED", "UNKNOWN")
    browser.find("#check-drift").click()
    browser.wait_text("#drift-line", "Drift check just now: no drift")
    browser.shot("drift")
    assert browser.console() == [] or not [m for m in browser.console() if "Uncaught" in m]
    # The filter works from the list.
    browser.get(shoal.url + "/ui/clusters?status=DELETED")
    assert "origins" not in browser.text("#clusters")
    browser.get(shoal.url + "/ui/clusters?status=ACTIVE")
    assert "origins" in browser.text("#clusters")
    shoal.run("cluster", "delete", "origins", "--wait")


# -- (6) tenancy: leases, a user's session, tenants and users --------------------------------------


def as_user(shoal, token):
    """The same home and server with a user's token: ``shoal ui`` asks with it."""
    client = Shoal(shoal.home)
    client.env["SHOAL_TOKEN"] = token
    return client


@pytest.fixture(scope="module")
def alice(shoal):
    """A user (role user) of the default tenant, with a template on a lease shared with her:
    an hour to start, two at most, an hour per extension; its one service does nothing."""
    assert call(shoal, "POST", "/services", {"name": "noop", "description": "nothing"})[0] == 201
    leased = {"name": "leased", "description": "one service that does nothing, on a lease",
              "defaults": {"services": ["noop"], "provider": "local", "hardwaretype": "sandbox",
                           "imagetype": "host"},
              "administration": {"leaseduration": {"initial": "1h", "max": "2h", "step": "1h"}}}
    assert call(shoal, "POST", "/clustertemplates", leased)[0] == 201
    assert call(shoal, "POST", "/users", {"name": "alice", "role": "user"})[0] == 201
    assert call(shoal, "POST", "/grants", {"template": "leased", "user": "alice"})[0] == 201
    status, issued = call(shoal, "POST", "/users/alice/tokens", {})
    assert status == 201
    return as_user(shoal, issued["token"])


def test_a_users_session_creates_on_a_lease_extends_it_and_sees_only_their_own(
        browser, shoal, alice):
    shoal.run("cluster", "create", "bosses", "--template", "leased", "--size", "1", "--wait")
    # `shoal ui` with a user's token: the session is hers, with her role; no admin links.
    browser.get(login_url(alice))
    assert browser.text("#who") == "default · alice (user)"
    assert browser.finds("#nav-people") == [] and "Catalog" not in browser.text("nav")
    shared = browser.text("#templates")  # only what is shared with her
    assert "leased" in shared and "local-web" not in shared
    browser.get(shoal.url + "/ui/templates/leased")
    assert "lease of 1h" in browser.text("#lease-terms")
    browser.find("#f-name").send_keys("alices")
    browser.find("#f-size").clear()
    browser.find("#f-size").send_keys("1")
    browser.find("#f-lease").send_keys("3h")
    browser.find("#plan-button").click()
    browser.wait(lambda: browser.find("#create-button").is_enabled(), "the plan")
    browser.find("#create-button").click()
    # The API's refusal sits next to the lease field, and nothing was made.
    browser.wait_text('[data-field="lease"]', "longer than the 1h")
    browser.shot("lease-refused")
    assert call(shoal, "GET", "/clusters/alices")[0] == 404
    browser.find("#f-lease").clear()
    browser.find("#f-lease").send_keys("30m")
    browser.find("#create-button").click()
    browser.wait(lambda: browser.driver.current_url.endswith("/ui/clusters/alices"), "landing")
    wait_status(browser, "ACTIVE")
    made = rest(shoal, "/clusters/alices")
    assert made["owner"] == "alice" and browser.text("#owner") == "alice"
    assert 0 < made["expires_at"] - time.time() <= 1800  # 30 min from its creation, not 1h
    assert "(in 2" in browser.text("#expires") or "(in 30" in browser.text("#expires")
    # Extensions: the template's step and max, as the API words them, then one that fits.
    by = browser.find("#extend-by")
    by.clear()
    by.send_keys("2h")
    browser.find("#extend-lease").click()
    browser.wait_text("#extend-error", "at most 1h per extension")
    by.clear()
    by.send_keys("1h")
    browser.find("#extend-lease").click()
    browser.wait_text("#expires", "(extended)")
    assert rest(shoal, "/clusters/alices")["expires_at"] == pytest.approx(
        made["expires_at"] + 3600, abs=5)
    browser.find("#extend-lease").click()
    browser.wait_text("#extend-error", "may not go past 2h")
    browser.shot("extended")
    # Her list: her cluster with owner and expiry, not the owner's.
    browser.get(shoal.url + "/ui/clusters")
    listed = browser.text("#clusters")
    assert "alices" in listed and "bosses" not in listed
    [row] = browser.finds("#clusters tbody tr")
    assert row.find_element("css selector", ".owner").text == "alice"
    assert "(in " in row.find_element("css selector", ".expires").text
    # Admin actions: the API's 403, both for the page and for a call with her session.
    browser.get(shoal.url + "/ui/admin/people")
    assert "403" in browser.text("h1")
    browser.get(shoal.url + "/ui/clusters")
    status = browser.driver.execute_async_script(
        "const done = arguments[0]; window.shoal.api('POST', '/users', "
        "{name: 'mallory', role: 'admin'}).then(() => done(200), (e) => done(e.status))")
    assert status == 403
    assert call(shoal, "GET", "/users/mallory")[0] == 404
    shoal.run("cluster", "delete", "bosses", "--wait")
    shoal.run("cluster", "delete", "alices", "--wait")


def test_admin_page_manages_tenants_users_tokens_and_shared_templates(browser, shoal):
    logged_in(browser, shoal)
    assert "(superadmin)" in browser.text("#who")
    browser.find("#nav-people").click()
    browser.wait_text("#users-section h1", "Users of default")
    # A tenant with quotas, then gone.
    form = browser.find("#tenant-form")
    form.find_element("name", "name").send_keys("team-ui")
    form.find_element("name", "max_clusters").send_keys("2")
    browser.find("#tenant-create").click()
    browser.wait(lambda: browser.finds('#tenants tr[data-name="team-ui"]'), "the new tenant")
    assert call(shoal, "GET", "/tenants/team-ui")[1]["max_clusters"] == 2
    # A bad name: the API's reason beside the field, nothing made.
    form = browser.find("#user-form")
    form.find_element("name", "name").send_keys("Bad Name")
    browser.find("#user-create").click()
    browser.wait(lambda: browser.find('#user-form [data-field="name"]').text, "the refusal")
    assert "Bad Name" not in [u["name"] for u in call(shoal, "GET", "/users")[1]]
    form.find_element("name", "name").clear()
    form.find_element("name", "name").send_keys("bob")
    form.find_element("css selector", "select[name=role] option[value=admin]").click()
    browser.find("#user-create").click()
    browser.wait(lambda: browser.finds('#users tr[data-name="bob"]'), "the new user")
    # A token, shown once: it works as bob; the page's HTML never had it.
    browser.find('#users tr[data-name="bob"] button.issue').click()
    browser.wait(lambda: browser.find("#issued-token").text, "the token")
    token = browser.text("#issued-token")
    browser.shot("token")
    assert call(shoal, "GET", "/whoami", token=token)[1]["user"] == "bob"
    browser.driver.refresh()
    assert token not in browser.driver.page_source
    # Share a template with bob, then stop.
    browser.find("#grant-form select[name=user] option[value=bob]").click()
    browser.find("#grant-create").click()
    browser.wait(lambda: "bob" in browser.text("#grants"), "the grant")
    assert {"template": browser.find("#grant-form select[name=template]").get_attribute(
        "value"), "user": "bob"} in call(shoal, "GET", "/grants")[1]
    stop = [b for b in browser.finds("#grants button") if "bob" in
            b.find_element("xpath", "../..").text][0]
    stop.click()
    stop.click()
    browser.wait(lambda: "bob" not in browser.text("#grants"), "the grant gone")
    # Delete bob (his token stops working) and the tenant: each asks twice.
    for css in ('#users tr[data-name="bob"] button.danger',
                '#tenants tr[data-name="team-ui"] button.danger'):
        button = browser.find(css)
        button.click()
        assert button.text == "Really?"
        button.click()
        browser.wait(lambda: not browser.finds(css), "the row gone")
    assert call(shoal, "GET", "/whoami", token=token)[0] == 401
    assert call(shoal, "GET", "/tenants/team-ui")[0] == 404
    browser.shot("done")


def test_people_page_edits_quotas_and_roles_in_place(browser, shoal):
    assert call(shoal, "POST", "/tenants", {"name": "team-edit", "max_clusters": 2})[0] == 201
    assert call(shoal, "POST", "/users", {"name": "carol", "role": "user",
                                          "max_nodes": 5})[0] == 201
    logged_in(browser, shoal)
    browser.get(shoal.url + "/ui/admin/people")
    tenant_row = '#tenants tr[data-name="team-edit"]'

    def field(row, name):
        return browser.find(f"{row} [name={name}]")

    def save(row):
        browser.find(f"{row} button.save").click()

    def save_and_reload(row):
        # A save that the API takes reloads the page: wait for the new page, not for values
        # the old one already showed (typed there before the click).
        browser.driver.execute_script("window.shoalBeforeSave = true")
        save(row)
        browser.wait(lambda: browser.driver.execute_script(
            "return !window.shoalBeforeSave && document.readyState === 'complete'"),
            "the page anew")

    # A tenant's quotas: set one, set the other, then lift one by emptying it.
    assert browser.driver.execute_script("return arguments[0].value",
                                         field(tenant_row, "max_clusters")) == "2"
    field(tenant_row, "max_clusters").clear()
    field(tenant_row, "max_clusters").send_keys("5")
    field(tenant_row, "max_nodes").send_keys("40")
    save_and_reload(tenant_row)
    browser.wait(lambda: call(shoal, "GET", "/tenants/team-edit")[1]["max_nodes"] == 40,
                 "the tenant's quotas")
    assert call(shoal, "GET", "/tenants/team-edit")[1]["max_clusters"] == 5
    browser.wait(lambda: browser.driver.execute_script(
        "return arguments[0].value", field(tenant_row, "max_nodes")) == "40", "the page anew")
    field(tenant_row, "max_clusters").clear()
    save_and_reload(tenant_row)
    browser.wait(lambda: call(shoal, "GET", "/tenants/team-edit")[1]["max_clusters"] is None,
                 "the limit lifted")
    # Out of range: the API's reason beside that field of that row, nothing changed.
    browser.wait(lambda: browser.find(tenant_row).is_displayed(), "the page anew")
    field(tenant_row, "max_nodes").clear()
    field(tenant_row, "max_nodes").send_keys("2000000000")
    save(tenant_row)
    browser.wait(lambda: browser.find(f'#tenant-edit-team-edit [data-field="max_nodes"]').text,
                 "the refusal")
    browser.shot("tenant-refused")
    assert "max_nodes" in browser.text('#tenant-edit-team-edit [data-field="max_nodes"]')
    assert call(shoal, "GET", "/tenants/team-edit")[1]["max_nodes"] == 40
    # A user's role and quotas.
    user_row = '#users tr[data-name="carol"]'
    browser.get(shoal.url + "/ui/admin/people")
    browser.find(f"{user_row} select[name=role] option[value=admin]").click()
    field(user_row, "max_clusters").send_keys("3")
    field(user_row, "max_nodes").clear()
    save_and_reload(user_row)
    browser.wait(lambda: call(shoal, "GET", "/users/carol")[1]["role"] == "admin", "the role")
    carol = call(shoal, "GET", "/users/carol")[1]
    assert (carol["max_clusters"], carol["max_nodes"]) == (3, None)
    browser.wait(lambda: browser.driver.execute_script(
        "return arguments[0].value", field(user_row, "role")) == "admin", "the page anew")
    browser.shot("edited")
    assert call(shoal, "DELETE", "/users/carol")[0] == 200
    assert call(shoal, "DELETE", "/tenants/team-edit")[0] == 200


def test_drift_repair_and_orphans_from_the_cluster_page(browser, shoal):
    """A node's sandbox removed behind Shoal's back (missing) and a sandbox labelled with the
    cluster that no node holds (an orphan): found by the page's drift check, repaired and
    deleted from the page after their plans, through the API `shoal cluster check` uses."""
    import shutil

    call(shoal, "POST", "/services", {"name": "idle", "description": "runs nothing"})
    assert call(shoal, "POST", "/clustertemplates", {
        "name": "idle-pair", "description": "nodes that run nothing",
        "defaults": {"services": ["idle"], "provider": "local", "hardwaretype": "sandbox",
                     "imagetype": "host"}})[0] == 201
    shoal.run("cluster", "create", "drifty", "--template", "idle-pair", "--size", "2", "--wait")
    [n1] = [p.parent.parent for p in (shoal.home / "nodes").glob("*/n1/.shoal/node.json")
            if json.loads(p.read_text())["hostname"] == "drifty-n1"]
    cluster_dir = n1.parent
    shutil.rmtree(cluster_dir / "n2")  # its services run nothing: no process to stop
    orphan = cluster_dir / "n7"
    (orphan / ".shoal").mkdir(parents=True)
    record = json.loads((n1 / ".shoal" / "node.json").read_text())
    record.update(node_id="n7", hostname="drifty-n7")
    (orphan / ".shoal" / "node.json").write_text(json.dumps(record))

    logged_in(browser, shoal, "drifty")
    browser.find("#check-drift").click()
    browser.wait_text("#drift-line", "drift found on n2")
    assert "1 orphan(s)" in browser.text("#drift-line")
    browser.shot("drifted")
    # Repair: the plan (which node, which tasks), then run and followed live.
    browser.find("#repair-plan").click()
    browser.wait(lambda: browser.find("#confirm").is_displayed(), "the repair plan")
    assert "n2 (missing)" in browser.text("#repair-summary")
    assert "CREATE on n2" in browser.text("#plan-task-list")
    assert not (cluster_dir / "n2").exists()  # planning made nothing
    confirm(browser, "Repair drifty")
    browser.wait(lambda: browser.text("#op-kind") == "repair" or "n2" in browser.text("#tasks"),
                 "the repair to start")
    wait_status(browser, "ACTIVE")
    assert (cluster_dir / "n2").exists()
    # The orphan: listed, confirmed, deleted.
    browser.find("#orphans-plan").click()
    browser.wait(lambda: browser.find("#confirm").is_displayed(), "the orphans")
    assert "/n7 (running, node n7" in browser.text("#orphan-list")
    assert orphan.exists()
    confirm(browser, "orphan")
    browser.wait_text("#drift-line", "Deleted orphan(s)")
    browser.shot("orphans-deleted")
    assert not orphan.exists()
    report = call(shoal, "POST", "/clusters/drifty/check", {})[1]
    assert not report["drifted"] and {n["state"] for n in report["nodes"]} == {"ok"}
    # Nothing left to do: each button says so beside the drift line.
    browser.find("#repair-plan").click()
    browser.wait_text("#drift-error", "nothing to repair")
    browser.find("#orphans-plan").click()
    browser.wait_text("#drift-error", "no orphans")
    shoal.run("cluster", "delete", "drifty", "--wait")


def test_the_cluster_page_says_when_its_session_ends_while_following(browser, shoal, tmp_path):
    """Its token revoked while the page follows an operation: the stream ends, and the page
    says the session ended (and stops reconnecting) instead of showing stale progress."""
    from shoal_testkit import catalog

    shoal.run("catalog", "import", catalog.write(tmp_path / "slow", service_fields={
        "db": {"install": {"sleep": 8}}}))
    shoal.run("cluster", "create", "followed", "--template", "fake-stack", "--size", "2")
    assert call(shoal, "POST", "/users", {"name": "vera", "role": "admin"})[0] == 201
    status, issued = call(shoal, "POST", "/users/vera/tokens", {})
    assert status == 201
    browser.get(login_url(as_user(shoal, issued["token"]), "followed"))
    browser.wait_text("#live-state", "live")
    assert call(shoal, "DELETE", f"/tokens/{issued['id']}")[0] == 200
    browser.wait_text("#live-state", "session has ended")
    browser.shot("session-ended")
    assert "revoked" in browser.text("#live-state")
    assert call(shoal, "GET", "/clusters/followed")[1]["operation"]["status"] == "RUNNING"
    wait_finished(shoal, "followed")
    shoal.run("cluster", "delete", "followed", "--wait")
    assert call(shoal, "DELETE", "/users/vera")[0] == 200
