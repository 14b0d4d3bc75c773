"""cliff's output formatters, named here instead of found through entry points.

cliff finds them (and any command hooks) with stevedore, which reads the entry points of every
installed package: 30-50 ms of each command's start, most of a `cluster plan` that the server
answers in 20 ms. These are the formatters cliff itself declares; a formatter whose module
cannot be imported (yaml without PyYAML) is left out, as stevedore would.
"""

import importlib

from stevedore import ExtensionManager
from stevedore.extension import Extension

_LIST = {"csv": "commaseparated:CSVLister", "json": "json_format:JSONFormatter",
         "table": "table:TableFormatter", "value": "value:ValueFormatter",
         "yaml": "yaml_format:YAMLFormatter"}
_SHOW = {"json": "json_format:JSONFormatter", "shell": "shell:ShellFormatter",
         "table": "table:TableFormatter", "value": "value:ValueFormatter",
         "yaml": "yaml_format:YAMLFormatter"}
NAMESPACES = {"cliff.formatter.list": _LIST, "cliff.formatter.show": _SHOW}


def manager(namespace):
    extensions = []
    for name, target in NAMESPACES[namespace].items():
        module, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module("cliff.formatters." + module), attr)
        except ImportError:
            continue
        extensions.append(Extension(name, None, cls, cls()))
    return ExtensionManager.make_test_instance(extensions, namespace=namespace)
