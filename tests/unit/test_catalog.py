"""Catalog schemas, validation errors, references, cycles, partial templates, secrets."""

import copy

import pytest

from cluster_server import catalog
from cluster_server.errors import NotFound, ValidationError
from tests.conftest import load_catalog_dir


@pytest.fixture(scope="module")
def coopr():
    return load_catalog_dir()


def test_every_coopr_entity_is_valid(coopr):
    entities = [(kind, body) for kind, items in coopr.items() for body in items.values()]
    assert len(entities) == 92
    catalog.validate_all(entities)
    catalog.check_cycles(coopr["service"])


def test_coopr_catalog_has_exactly_three_dangling_names(coopr):
    found = {(w["name"], w["ref"]) for w in catalog.dangling(coopr)}
    assert found == {
        ("cdap-singlenode", "hadoop-hdfs-secondarynamenode"),
        ("coopr-standalone-docker", "coopr-standalone"),
        ("docker-base", "ubuntu16"),
    }


@pytest.mark.parametrize("kind, body, field, reason", [
    ("service", {"name": "x", "colour": "red"}, "colour", "is not a known key"),
    ("service", {"name": "x", "dependencies": {"provides": "a"}}, "dependencies.provides",
     "must be a list"),
    ("service", {"name": "x", "dependencies": {"install": {"requires": [1]}}},
     "dependencies.install.requires[0]", "must be a string"),
    ("service", {"name": "x", "provisioner": {"actions": {"install": {"fields": {}}}}},
     "provisioner.actions.install.type", "is required"),
    ("service", {"name": "x", "provisioner": {"actions": {"explode": {"type": "shell"}}}},
     "provisioner.actions.explode", "is not a known key"),
    ("template", {"name": "t", "constraints": {"size": {"min": "3"}}}, "constraints.size.min",
     "must be an integer"),
    ("template", {"name": "t", "constraints": {"size": {"min": True}}}, "constraints.size.min",
     "not a boolean"),
    ("template", {"name": "t", "constraints": {"layout": {"mustcoexist": ["a", "b"]}}},
     "constraints.layout.mustcoexist[0]", "must be a list"),
    ("hardwaretype", {"name": "h", "providermap": {"aws": {"cost": "1"}}},
     "providermap.aws.flavor", "is required"),
    # An infinite or NaN cost made every plan of the provider fail with an internal error.
    ("hardwaretype", {"name": "h", "providermap": {"aws": {"flavor": "f", "cost": float("inf")}}},
     "providermap.aws.cost", "must be a finite number"),
    ("hardwaretype", {"name": "h", "providermap": {"aws": {"flavor": "f", "cost": "NaN"}}},
     "providermap.aws.cost", "must be a finite number"),
    ("hardwaretype", {"name": "h", "providermap": {"aws": {"flavor": "f", "cost": -1}}},
     "providermap.aws.cost", "0 or more"),
    ("hardwaretype", {"name": "h", "providermap": {"aws": {"flavor": "f", "cost": "cheap"}}},
     "providermap.aws.cost", "must be a number"),
    # Counts no layout can meet: refused here rather than by every plan.
    ("template", {"name": "t", "constraints": {"size": {"min": 5, "max": 2}}},
     "constraints.size", "min 5 is more than max 2"),
    ("partial", {"name": "p", "constraints": {"services": {"db": {"quantities": {"max": -1}}}}},
     "constraints.services.db.quantities.max", "must be 0 or more"),
    ("provider", {"name": "p"}, "providertype", "is required"),
    ("provider", {"name": "p", "providertype": "x", "provisioner": {"a": {"b": 1}}},
     "provisioner.a", "must be a string, number or boolean"),
    ("imagetype", {"description": "no name", "providermap": {}}, "name", "is required"),
    ("service", {"name": "bad name!"}, "name", "letters, digits"),
    # A line break in sshuser would add lines to the shell's ssh config and GCE's ssh-keys.
    ("imagetype", {"name": "i", "providermap": {"aws": {
        "image": "ami-1", "sshuser": "ec2-user\n    ProxyCommand id"}}},
     "providermap.aws.sshuser", "must be a login name"),
])
def test_bad_shapes_name_entity_field_and_reason(kind, body, field, reason):
    with pytest.raises(ValidationError) as raised:
        catalog.validate(kind, body)
    error = raised.value
    assert error.details["field"] == field
    assert reason in error.message
    assert error.details["entity"] == kind
    assert field in error.message


def test_not_an_object():
    with pytest.raises(ValidationError, match="must be an object"):
        catalog.validate("service", ["x"])


def test_duplicate_names_in_one_batch_name_both_sources():
    with pytest.raises(ValidationError, match="defined twice .a.json and b.json"):
        catalog.validate_all([("service", {"name": "s"}), ("service", {"name": "s"})],
                             ["a.json", "b.json"])


def test_same_name_in_two_kinds_is_fine():
    catalog.validate_all([("service", {"name": "s"}), ("template", {"name": "s"})])


def _svc(name, requires=(), uses=(), phase="runtime", provides=()):
    return {"name": name, "dependencies": {"provides": list(provides), phase: {
        "requires": list(requires), "uses": list(uses)}}}


def test_cycle_in_service_dependencies_is_rejected_with_the_path():
    services = {"a": _svc("a", ["b"]), "b": _svc("b", uses=["c"]), "c": _svc("c", ["a"])}
    with pytest.raises(ValidationError) as raised:
        catalog.check_cycles(services)
    assert raised.value.details["cycle"] == ["a", "b", "c", "a"]
    assert "a -> b -> c -> a" in raised.value.message


def test_a_cycle_of_extends_is_refused_when_written():
    templates = {"a": {"name": "a", "extends": "b"}, "b": {"name": "b", "extends": {"name": "a"}},
                 "c": {"name": "c", "extends": "a"}}
    with pytest.raises(ValidationError, match="extends forms a cycle: a -> b -> a"):
        catalog.check_extends(templates)
    del templates["b"]["extends"]
    catalog.check_extends(templates)  # a chain is fine


def test_cycle_through_provides_is_found():
    services = {"a": _svc("a", ["virtual"], phase="install"),
                "b": _svc("b", ["a"], phase="install", provides=["virtual"])}
    with pytest.raises(ValidationError, match="install dependencies form a cycle"):
        catalog.check_cycles(services)


def test_install_and_runtime_orders_are_separate_graphs():
    services = {"a": {"name": "a", "dependencies": {"install": {"requires": ["b"]}}},
                "b": {"name": "b", "dependencies": {"runtime": {"requires": ["a"]}}}}
    catalog.check_cycles(services)


def test_unprovided_requirement_is_a_warning():
    warnings = catalog.dangling({"service": {"a": _svc("a", ["zk"])}})
    assert [w["ref"] for w in warnings] == ["zk"]
    assert "requires 'zk'" in warnings[0]["message"]


def test_template_references_of_every_kind_are_checked():
    template = {"name": "t", "extends": {"name": "parent"}, "includes": [{"name": "part"}],
                "defaults": {"services": ["s"], "provider": "p", "hardwaretype": "h",
                             "imagetype": "i"}}
    warnings = catalog.dangling({"template": {"t": template}})
    assert {(w["missing"], w["ref"]) for w in warnings} == {
        ("template", "parent"), ("partial", "part"), ("service", "s"), ("provider", "p"),
        ("hardwaretype", "h"), ("imagetype", "i")}


def test_resolve_merges_parent_partials_and_self_in_order():
    cat = {
        "template": {
            "parent": {"name": "parent", "defaults": {"services": ["base"], "provider": "a",
                                                      "config": {"x": {"y": 1, "z": 1}}},
                       "constraints": {"size": {"min": 1}}},
            "child": {"name": "child", "extends": {"name": "parent"},
                      "includes": [{"name": "monitoring"}],
                      "defaults": {"services": ["web"], "config": {"x": {"z": 2}}}},
        },
        "partial": {"monitoring": {"name": "monitoring", "immutable": True,
                                   "defaults": {"services": ["agent"], "provider": "b"}}},
    }
    resolved = catalog.resolve_template("child", cat)
    assert resolved["defaults"]["services"] == ["base", "agent", "web"]
    assert resolved["defaults"]["provider"] == "b"
    assert resolved["defaults"]["config"] == {"x": {"y": 1, "z": 2}}
    assert resolved["constraints"] == {"size": {"min": 1}}
    assert "extends" not in resolved and "includes" not in resolved
    assert resolved["name"] == "child"


def test_resolve_names_what_is_missing_and_catches_cycles():
    cat = {"template": {"t": {"name": "t", "includes": [{"name": "gone"}]},
                        "a": {"name": "a", "extends": "b"}, "b": {"name": "b", "extends": "a"}}}
    with pytest.raises(NotFound, match="includes partial 'gone'"):
        catalog.resolve_template("t", cat)
    with pytest.raises(ValidationError, match="a -> b -> a"):
        catalog.resolve_template("a", cat)
    with pytest.raises(NotFound, match="template 'zzz' not found"):
        catalog.resolve_template("zzz", cat)


def test_secrets_are_masked_and_kept_on_update():
    stored = {"name": "p", "providertype": "aws",
              "provisioner": {"api_password": "hunter2", "region": "x", "api_user": ""}}
    shown = catalog.mask_provider(stored)
    assert shown["provisioner"] == {"api_password": catalog.MASK, "region": "x", "api_user": ""}
    assert stored["provisioner"]["api_password"] == "hunter2"
    back = catalog.keep_secrets(copy.deepcopy(shown), stored)
    assert back == stored
    fresh = catalog.keep_secrets(copy.deepcopy(shown), None)
    assert fresh["provisioner"]["api_password"] == ""
    assert catalog.mask_provider(stored, sensitive=("region",))["provisioner"]["region"] == \
        catalog.MASK


def test_malformed_macros_are_refused_at_import():
    service = {"name": "s", "provisioner": {"actions": {"start": {
        "type": "shell", "fields": {"args": "--peer %host.service.%"}}}}}
    with pytest.raises(ValidationError) as raised:
        catalog.validate("service", service)
    assert raised.value.details["field"] == "provisioner.actions.start.fields"
    template = {"name": "t", "defaults": {"config": {"x": "%ip.service.[0]%"}}}
    with pytest.raises(ValidationError, match="defaults.config"):
        catalog.validate("template", template)
    catalog.validate("template", {"name": "t", "defaults": {"config": {"x": "100% sure"}}})
