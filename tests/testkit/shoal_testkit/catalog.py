"""A small catalog on the fake plugins, written as a Coopr-layout directory for ``shoal catalog
import``.

Services: ``base`` (on every node), ``db`` (one node), ``app`` (every other node; runtime-requires
``db``), ``cache`` (optional, every node; runtime-uses ``db``). Template ``fake-stack`` puts
base+db on one node and base+app on the others. Every action of every service is a ``fake``
automator action, so the automator's log shows the whole order of an operation.
"""

import copy
import json
import pathlib

ACTIONS = ("install", "configure", "initialize", "start", "stop", "remove")


def _service(name, description, runtime_requires=(), runtime_uses=(), install_requires=()):
    return {
        "name": name,
        "description": description,
        "dependencies": {
            "provides": [], "conflicts": [],
            "install": {"requires": list(install_requires), "uses": []},
            "runtime": {"requires": list(runtime_requires), "uses": list(runtime_uses)},
        },
        "provisioner": {"actions": {a: {"type": "fake", "fields": {}} for a in ACTIONS}},
    }


def entities(providers=None, fields=None, service_fields=None):
    """{kind folder: [bodies]}.

    ``providers``: {name: provisioner fields} (default one provider ``fake`` with no faults).
    ``fields``: fields for every service action (e.g. ``{"sleep": 0.05}``).
    ``service_fields``: ``{service: {action: fields}}`` merged over those.
    """
    providers = providers if providers is not None else {"fake": {}}
    services = [
        _service("base", "On every node"),
        _service("db", "The one database", ),
        _service("app", "Application servers", runtime_requires=["db"]),
        _service("cache", "Optional cache on every node", runtime_uses=["db"]),
    ]
    for service in services:
        for action, spec in service["provisioner"]["actions"].items():
            spec["fields"].update(copy.deepcopy(fields or {}))
            spec["fields"].update((service_fields or {}).get(service["name"], {}).get(action, {}))
    template = {
        "name": "fake-stack",
        "description": "base everywhere, one db, app on the other nodes",
        "defaults": {
            "services": ["base", "db", "app"],
            "provider": "fake" if "fake" in providers else sorted(providers)[0],
            "hardwaretype": "fake-small",
            "imagetype": "fake-linux",
            "config": {"app": {"db": "%host.service.db%", "port": 8080}},
        },
        "compatibility": {"hardwaretypes": ["fake-small"], "imagetypes": ["fake-linux"],
                          "services": ["base", "db", "app", "cache"]},
        "constraints": {
            "size": {"min": 2},
            "layout": {"cantcoexist": [["db", "app"]]},
            "services": {"db": {"quantities": {"min": 1, "max": 1}}},
        },
    }
    return {
        "providers": [{"name": name, "description": f"fake cloud {name}", "providertype": "fake",
                       "provisioner": dict(config)} for name, config in providers.items()],
        "hardwaretypes": [{"name": "fake-small", "description": "a small fake instance",
                           "providermap": {p: {"flavor": "small", "cost": "1"}
                                           for p in providers}}],
        "imagetypes": [{"name": "fake-linux", "description": "a fake image",
                        "providermap": {p: {"image": "linux", "sshuser": "root"}
                                        for p in providers}}],
        "services": services,
        "clustertemplates": [template],
    }


def write(root, **kwargs):
    """Write ``entities(**kwargs)`` as a catalog directory at ``root``; return its path."""
    root = pathlib.Path(root)
    for folder, bodies in entities(**kwargs).items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for body in bodies:
            (root / folder / f"{body['name']}.json").write_text(json.dumps(body, indent=2))
    return root
