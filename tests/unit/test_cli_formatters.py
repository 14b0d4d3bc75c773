"""The CLI's formatters are the ones cliff declares, without reading entry points at start."""

import importlib.metadata

import pytest

from cluster_cli import formatters


@pytest.mark.parametrize("namespace", sorted(formatters.NAMESPACES))
def test_the_named_formatters_are_cliffs_own(namespace):
    declared = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=namespace)
                if ep.value.startswith("cliff.")}
    named = {name: "cliff.formatters." + target
             for name, target in formatters.NAMESPACES[namespace].items()}
    assert named == declared
    manager = formatters.manager(namespace)
    assert sorted(manager.names()) == sorted(declared)  # PyYAML is installed: yaml too
    for name in manager.names():
        assert type(manager[name].obj).__name__ == declared[name].rpartition(":")[2]
