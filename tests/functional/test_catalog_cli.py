"""The real ``shoal`` binary against a real server process: catalog commands and bad input."""

import json
import urllib.error
import urllib.request

import pytest
import yaml

from tests.conftest import Shoal

NOUNS = {
    "provider": {"name": "p1", "providertype": "local", "description": "a provider"},
    "hardwaretype": {"name": "h1", "providermap": {"p1": {"flavor": "small", "cost": 1}}},
    "imagetype": {"name": "i1", "providermap": {"p1": {"image": "debian"}}},
    "service": {"name": "s1", "description": "svc"},
    "template": {"name": "t1", "defaults": {"services": ["s1"], "provider": "p1"}},
    "partial": {"name": "pt1", "immutable": True, "defaults": {"services": ["s1"]}},
}


@pytest.mark.parametrize("noun", sorted(NOUNS))
def test_crud_for_every_noun(shoal, tmp_path, noun):
    body = NOUNS[noun]
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    shoal.run(noun, "create", path)
    listed = shoal.json(noun, "list")
    assert [row["Name"] for row in listed] == [body["name"]]
    shown = shoal.json(noun, "show", body["name"])
    assert shown["name"] == body["name"]
    for fmt in ("table", "value", "csv", "yaml"):
        out = shoal.run(noun, "list", "-f", fmt).stdout
        assert body["name"] in out
    assert shoal.run(noun, "show", body["name"], "-f", "value", "-c", "name").stdout.strip() \
        == body["name"]
    updated = dict(body, description="changed")
    yml = tmp_path / "body.yaml"
    yml.write_text(yaml.safe_dump(updated))
    shoal.run(noun, "update", body["name"], yml)
    assert shoal.json(noun, "show", body["name"])["description"] == "changed"
    shoal.run(noun, "delete", body["name"])
    assert shoal.json(noun, "list") == []
    result = shoal.fails(noun, "show", body["name"])
    assert "not found" in result.stderr


def test_deleting_an_entity_in_use_warns_about_what_now_names_it(tmp_path):
    # The default catalog's templates use the local provider and the sandbox hardware.
    shoal = Shoal(tmp_path / "home", default_catalog=True)
    try:
        result = shoal.run("provider", "delete", "local")
        assert "warning: template 'local-web' names provider 'local'" in result.stderr
        assert "'local'" in result.stderr
        assert "sandbox" in shoal.run("hardwaretype", "delete", "sandbox").stderr
        # Nothing names a fresh service: no warning.
        (tmp_path / "s.json").write_text(json.dumps({"name": "lonely"}))
        shoal.run("service", "create", tmp_path / "s.json")
        assert "warning" not in shoal.run("service", "delete", "lonely").stderr
    finally:
        shoal.run("server", "stop")


def test_bulk_delete_reports_how_many_failed(shoal, tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"name": "s1"}))
    shoal.run("service", "create", tmp_path / "s.json")
    result = shoal.fails("service", "delete", "s1", "ghost")
    assert "1 of 2 services failed to delete" in result.stderr
    assert shoal.json("service", "list") == []


@pytest.mark.parametrize("name", ["s1#", "s1?x=1", "s1/", "../services/s1", "s 1", "s1ü"])
def test_a_name_is_sent_as_one_path_segment(shoal, tmp_path, name):
    # Unquoted, 'delete s1#' and 'delete s1?x=1' deleted s1, and 'ü' or a space never left the
    # client.
    (tmp_path / "s.json").write_text(json.dumps({"name": "s1"}))
    shoal.run("service", "create", tmp_path / "s.json")
    assert "not found" in shoal.fails("service", "show", name).stderr
    assert "not found" in shoal.fails("service", "delete", name).stderr
    assert shoal.json("service", "show", "s1")["name"] == "s1"


def test_import_coopr_catalog_warns_exactly_three_names(shoal, coopr_catalog):
    result = shoal.run("catalog", "import", coopr_catalog)
    assert "Imported 92 entities" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    joined = "\n".join(warnings)
    for name in ("hadoop-hdfs-secondarynamenode", "coopr-standalone", "ubuntu16"):
        assert name in joined
    check = shoal.json("catalog", "check")
    assert sorted(row["Missing name"] for row in check if "plugin" not in row["Missing kind"]) \
        == ["coopr-standalone", "hadoop-hdfs-secondarynamenode", "ubuntu16"]
    # Coopr's provider types and its chef-solo automator are not Shoal plugins: check says so.
    plugins = {(row["Missing kind"], row["Missing name"]) for row in check
               if "plugin" in row["Missing kind"]}
    assert ("automator plugin", "chef-solo") in plugins
    assert ("provider plugin", "openstack") in plugins
    assert ("automator plugin", "docker") in plugins  # Coopr's; Shoal's is docker-cli
    assert ("provider plugin", "aws") not in plugins
    names = [row["Name"] for row in shoal.json("template", "list")]
    assert "hadoop-distributed" in names and len(names) == 15


def test_export_reimports_to_the_same_catalog(shoal, tmp_path, coopr_catalog):
    shoal.run("catalog", "import", coopr_catalog)
    first = shoal.run("catalog", "export").stdout
    shoal.run("catalog", "export", "--dir", tmp_path / "out")
    (tmp_path / "doc.yaml").write_text(shoal.run("catalog", "export", "--format", "yaml").stdout)
    # Into the same server: nothing changes, secrets included (masked values keep the stored).
    shoal.run("catalog", "import", tmp_path / "out")
    assert shoal.run("catalog", "export").stdout == first
    # Into a new server: the same catalog, except that secrets never left the first one.
    expected = json.loads(first.replace('"********"', '""'))
    for source in (tmp_path / "out", tmp_path / "doc.yaml"):
        other = type(shoal)(tmp_path / f"home-{source.name}")
        other.run("server", "start")
        try:
            other.run("catalog", "import", source)
            assert json.loads(other.run("catalog", "export").stdout) == expected
        finally:
            other.run("server", "stop")


def test_template_show_resolves_partials(shoal, tmp_path):
    (tmp_path / "partialtemplates").mkdir()
    (tmp_path / "clustertemplates").mkdir()
    (tmp_path / "partialtemplates" / "mon.yaml").write_text(
        "name: mon\ndefaults:\n  services: [agent]\n")
    (tmp_path / "clustertemplates" / "web.yaml").write_text(
        "name: web\nincludes:\n  - name: mon\ndefaults:\n  services: [nginx]\n")
    result = shoal.run("catalog", "import", tmp_path)
    assert "service 'agent'" in result.stderr or "agent" in result.stderr
    assert shoal.json("template", "show", "web")["defaults"]["services"] == ["agent", "nginx"]
    assert "includes" in shoal.json("template", "show", "web", "--raw")


BAD = {
    "malformed-json": ("services/x.json", '{"name": "x",', "malformed JSON"),
    "malformed-yaml": ("services/x.yaml", "name: [x\n", "malformed YAML"),
    "unknown-key": ("services/x.json", '{"name": "x", "colour": 1}', "colour is not a known key"),
    "wrong-type": ("clustertemplates/t.json", '{"name": "t", "constraints": {"size": {"min": "a"}}}',
                   "constraints.size.min must be an integer"),
    "missing-field": ("providers/p.json", '{"name": "p"}', "providertype is required"),
    "duplicate": ("services/y.json", '{"name": "good"}', "defined twice"),
    "cycle": ("services/y.json",
              '{"name": "y", "dependencies": {"runtime": {"requires": ["good"]}}}', "cycle"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_rejects_the_whole_import(shoal, tmp_path, case):
    relative, text, message = BAD[case]
    for folder in ("services", "providers", "clustertemplates"):
        (tmp_path / folder).mkdir()
    (tmp_path / "services" / "good.json").write_text(json.dumps(
        {"name": "good", "dependencies": {"runtime": {"requires": ["y"]}}}
        if case == "cycle" else {"name": "good"}))
    (tmp_path / "providers" / "ok.json").write_text('{"name": "ok", "providertype": "local"}')
    (tmp_path / relative).write_text(text)
    result = shoal.fails("catalog", "import", tmp_path)
    assert message in result.stderr
    if case not in ("duplicate", "cycle"):
        assert relative.split("/")[-1] in result.stderr  # the file is named
    assert shoal.json("service", "list") == []
    assert shoal.json("provider", "list") == []


def test_debug_shows_the_traceback(shoal, tmp_path):
    (tmp_path / "x.json").write_text('{"name": "x", "colour": 1}')
    plain = shoal.fails("service", "create", tmp_path / "x.json")
    assert "colour is not a known key" in plain.stderr
    debug = shoal.run("--debug", "service", "create", tmp_path / "x.json", check=False)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_secrets_are_not_printed(shoal, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({
        "name": "p", "providertype": "local", "provisioner": {"api_password": "hunter2"}}))
    outputs = [shoal.run("provider", "create", tmp_path / "p.json").stdout,
               shoal.run("provider", "show", "p", "-f", "json").stdout,
               shoal.run("provider", "list", "-f", "json").stdout,
               shoal.run("catalog", "export").stdout,
               (shoal.home / "server.log").read_text()]
    for out in outputs:
        assert "hunter2" not in out


def test_api_needs_the_token(shoal):
    request = urllib.request.Request(shoal.url + "/api/v1/services")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 401
    body = json.loads(raised.value.read())
    assert body["error"]["code"] == "unauthorized"
    request.add_header("Authorization", f"Bearer {shoal.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == []


def test_yaml_dates_stay_strings_and_values_json_cannot_hold_are_named(shoal, tmp_path):
    # An unquoted date used to fail with "Object of type date is not JSON serializable".
    (tmp_path / "d.yaml").write_text("name: 2024-01-01\n")
    shoal.run("service", "create", tmp_path / "d.yaml")
    assert shoal.json("service", "show", "2024-01-01")["name"] == "2024-01-01"
    (tmp_path / "services").mkdir()
    path = tmp_path / "services" / "x.yaml"
    cases = {
        "name: x\nconfig:\n  at: [1, !!timestamp 2024-01-01]\n":
            "config.at[1]: a date is not allowed here; quote it as a string",
        "name: x\ndescription: !!binary aGVsbG8=\n":
            "description: binary data is not allowed here; write it as a string, without !!binary",
        "name: x\ndescription: !!set {a, b}\n":
            "description: a set is not allowed here; write it as a list",
    }
    for text, message in cases.items():
        path.write_text(text)
        for args in (("service", "create", path), ("catalog", "import", path)):
            result = shoal.fails(*args)
            assert result.returncode == 1
            assert result.stderr.strip() == f"{path}: {message}"
    assert [row["Name"] for row in shoal.json("service", "list")] == ["2024-01-01"]


def test_a_file_that_is_not_utf8_is_named(shoal, tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    result = shoal.fails("service", "create", path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"{path}: not UTF-8 text (byte 13 is 0xe9)"


@pytest.mark.parametrize("name,text,where", [
    ("x.json", '{"name": "d3", "name": "d4"}', ""),
    ("x.json", '{"name": "d3", "config": {"a": 1, "a": 2}}', ""),
    ("x.yaml", "name: d3\ndescription: x\nname: d4\n", "line 3: "),
])
def test_a_key_given_twice_is_refused(shoal, tmp_path, name, text, where):
    # The last one used to win silently.
    (tmp_path / "services").mkdir()
    path = tmp_path / "services" / name
    path.write_text(text)
    key = "a" if '"a": 2' in text else "name"
    for args in (("service", "create", path), ("catalog", "import", tmp_path)):
        result = shoal.fails(*args)
        assert result.returncode == 1
        assert result.stderr.strip() == f"{path}: {where}key '{key}' is given twice"
    assert shoal.json("service", "list") == []


def test_an_empty_config_option_is_refused(shoal):
    for value, message in (("@", "--config @FILE needs a file name"),
                           ("", "--config is empty")):
        result = shoal.fails("cluster", "plan", "--template", "t", "--size", "1",
                             "--config", value)
        assert result.returncode == 1
        assert result.stderr.strip() == message
