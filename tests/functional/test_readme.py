"""The README documents every command with its help text, and starts with the two commands."""

import pathlib

from cluster_cli.commands import COMMANDS
from cluster_cli.main import LazyEntry

README = (pathlib.Path(__file__).resolve().parents[2] / "README.rst").read_text()


def test_every_command_is_in_the_readme_with_its_help():
    missing = []
    for name, target in COMMANDS.items():
        if name == "complete":  # cliff's own, documented in the Commands intro
            continue
        doc = LazyEntry(name, target).load().__doc__.strip().splitlines()[0]
        if f"``shoal {name}``\n    {doc}" not in README:
            missing.append(f"shoal {name}: {doc}")
    assert missing == []


def test_readme_starts_with_the_main_job_and_the_test_command():
    head = README.split("Shoal makes clusters")[0]
    assert "./start-server.sh" in head
    assert "./tests/run.sh" in head
    assert "./tests/run.sh" in pathlib.Path(__file__).resolve().parents[2].joinpath(
        ".ci/run").read_text()
