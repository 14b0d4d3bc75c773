"""Long answers through the real ``shoal`` binary: a plan's summary and its task list, and
``--limit`` on ``cluster show`` and ``task list`` (the testkit's fake provider and automator)."""

import collections
import json

import pytest
from shoal_testkit import catalog

from tests.conftest import Shoal


@pytest.fixture
def shoal(tmp_path):
    shoal = Shoal(tmp_path / "home", poll_base=0.05)
    shoal.run("server", "start")
    shoal.run("catalog", "import", catalog.write(tmp_path / "catalog"))
    yield shoal
    shoal.run("server", "stop")


def test_plan_prints_counts_by_default_and_every_task_when_asked(shoal):
    plan = ("cluster", "plan", "--template", "fake-stack", "--size", "6")
    default = shoal.run(*plan)
    assert "6 nodes on fake" in default.stderr and "CREATE 6" in default.stderr
    assert "INSTALL" not in default.stdout  # the node groups, not the tasks
    assert "base, db" in default.stdout and "app, base" in default.stdout
    table = shoal.run(*plan, "--tasks", "-f", "value").stdout.splitlines()
    full = json.loads(shoal.run(*plan, "-f", "json", "--full").stdout)
    summary = shoal.json(*plan)
    counted = collections.Counter(t["action"] for t in full["tasks"] if t["action"] != "JOIN")
    assert counted == summary["summary"]["actions"] == full["summary"]["actions"]
    assert sum(group["count"] for group in summary["groups"]) == 6
    assert len(table) == summary["summary"]["tasks"] == sum(counted.values())
    assert collections.Counter(line.split()[1] for line in table) == counted


def test_limit_on_show_and_task_list(shoal):
    shoal.run("cluster", "create", "big", "--template", "fake-stack", "--size", "8", "--wait")
    shown = shoal.run("cluster", "show", "big", "--limit", "3", "-f", "json")
    cluster = json.loads(shown.stdout)
    assert [n["id"] for n in cluster["nodes"]] == ["n1", "n2", "n3"]
    assert cluster["size"] == 8 and cluster["node_counts"] == {"ACTIVE": 8}
    assert "showing 3 of 8 nodes" in shown.stderr
    everything = shoal.json("cluster", "show", "big", "--limit", "0")
    assert len(everything["nodes"]) == 8
    table = shoal.run("cluster", "show", "big")
    assert "ACTIVE 8" in table.stdout and "showing" not in table.stderr

    listed = shoal.run("task", "list", "big", "--limit", "5", "-f", "json")
    assert len(json.loads(listed.stdout)) <= 5
    assert "create succeeded" in listed.stderr and "showing the first 5" in listed.stderr
    all_tasks = shoal.json("task", "list", "big", "--limit", "0")
    # The summary's total is every task but the JOINs, as the list shows them.
    total = int(listed.stderr.split(" tasks:")[0].split()[-1])
    assert len(all_tasks) == total and len({t["ID"] for t in all_tasks}) == total
    refused = shoal.fails("task", "list", "big", "--limit", "-1")
    assert "--limit" in refused.stderr
