"""Flows of the UI tests that both browsers run (tests/functional/test_ui.py with Chromium,
tests/functional/test_ui_firefox.py with Firefox): each drives a real server's pages and checks
the result through the API."""

import json
import urllib.error

from tests.cloudkit import api as rest
from tests.uikit import fetch, login_url


def value(browser, element):
    """A form control's current value (the property; Selenium and Marionette differ on
    get_attribute)."""
    return browser.driver.execute_script("return arguments[0].value", element)


def type_into(element, text):
    element.clear()
    element.send_keys(text)


def sent(browser, path):
    """The page's requests to an API path so far (fetches show in the resource timing)."""
    return [url for url in browser.resources() if url.split("?")[0].endswith("/api/v1" + path)]


def missing(shoal, path):
    try:
        rest(shoal, path)
    except urllib.error.HTTPError as error:
        return error.code == 404
    return False


BAD_SYNTAX = "name: ui-yaml\ndescription: broken\nprovisioner:\n  actions:\n    install: [\n"
BAD_FIELD = ("name: ui-yaml\ndescription: typed as YAML\nprovisioner:\n  actions:\n"
             "    install:\n      type: 3\n")
GOOD = ("name: ui-yaml\ndescription: typed as YAML\nprovisioner:\n  actions:\n"
        "    install:\n      type: shell\n      fields:\n        command: ['true']\n")


def yaml_editor_flow(browser, shoal):
    """A service written in the editor as YAML: a syntax error is shown beside the editor with
    its line and nothing is sent; an API field error sits beside the editor naming the field,
    nothing written; a good one is saved as JSON (read back through the API), then edited as
    YAML on its own page."""
    browser.get(login_url(shoal))
    browser.get(shoal.url + "/ui/admin/services/new")
    editor = browser.find("#e-json")
    assert json.loads(value(browser, editor)) == {"name": "", "description": ""}
    type_into(browser.find("#e-name"), "ui-yaml")
    # JSON -> YAML: the same content with the form's fields, written as YAML.
    browser.find("#e-format-yaml").click()
    browser.wait(lambda: browser.find("#entity-form").get_attribute("data-format") == "yaml",
                 "the YAML editor")
    assert value(browser, editor).strip().startswith("name: ui-yaml")
    browser.shot("yaml")
    # A syntax error: its line beside the editor, and no request left the page.
    type_into(editor, BAD_SYNTAX)
    browser.find("#save").click()
    browser.wait(lambda: browser.find("#json-error").text, "the YAML error")
    browser.shot("yaml-syntax")
    assert "YAML syntax error at line" in browser.text("#json-error")
    assert sent(browser, "/services") == []
    assert missing(shoal, "/services/ui-yaml")
    # The API's field error: beside the editor, naming the field; nothing written.
    type_into(editor, BAD_FIELD)
    browser.find("#save").click()
    browser.wait(lambda: "provisioner.actions.install.type" in browser.text("#json-error"),
                 "the API's field error")
    browser.shot("yaml-bad-field")
    assert not browser.find('[data-field="name"]').text
    assert len(sent(browser, "/services")) == 1
    assert missing(shoal, "/services/ui-yaml")
    # A good one: saved (as JSON, through the API), and the page moves to it.
    type_into(editor, GOOD)
    browser.find("#save").click()
    browser.wait(lambda: "/ui/admin/services/ui-yaml" in browser.driver.current_url,
                 "the new service's page")
    browser.shot("yaml-created")
    saved = rest(shoal, "/services/ui-yaml")
    assert saved["description"] == "typed as YAML"
    assert saved["provisioner"]["actions"]["install"]["fields"]["command"] == ["true"]
    # Its page: shown as JSON; as YAML, edited, saved; YAML -> JSON shows the change.
    editor = browser.find("#e-json")
    assert json.loads(value(browser, editor))["name"] == "ui-yaml"
    browser.find("#e-format-yaml").click()
    browser.wait(lambda: "description: typed as YAML" in value(browser, browser.find("#e-json")),
                 "the service as YAML")
    editor = browser.find("#e-json")
    type_into(editor, value(browser, editor).replace("typed as YAML", "edited as YAML"))
    browser.find("#save").click()
    browser.wait(lambda: rest(shoal, "/services/ui-yaml")["description"] == "edited as YAML",
                 "the edit")
    browser.wait(lambda: "description: edited as YAML" in value(browser, browser.find("#e-json")),
                 "the saved entity, as YAML")
    browser.find("#e-format-json").click()
    browser.wait(lambda: value(browser, browser.find("#e-json")).lstrip().startswith("{"),
                 "the JSON editor")
    assert json.loads(value(browser, browser.find("#e-json")))["description"] == "edited as YAML"
    browser.shot("yaml-edited")
    status, _, _ = fetch(shoal.url + "/api/v1/services/ui-yaml", None, "DELETE", None,
                         {"Authorization": f"Bearer {shoal.token}"})
    assert status == 200
