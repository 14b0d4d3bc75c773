"""Large answers through the API: a plan's summary against its full (streamed) task list, and
keyset pages of tasks and nodes that return every row exactly once while other threads write."""

import collections
import json
import threading
import time

import pytest

from cluster_server import operations
from cluster_server.app import create_app

TOKEN = "test-token"


@pytest.fixture
def api(tmp_path):
    app = create_app(home=tmp_path, token=TOKEN, start_engine=False)
    client = app.test_client()

    def call(method, path, json=None):
        return client.open("/api/v1" + path, method=method, json=json,
                           headers={"Authorization": f"Bearer {TOKEN}"})

    call.store = app.store
    return call


def test_a_plans_summary_agrees_with_its_full_task_list(api):
    summary = api("POST", "/clusters/plan", {"template": "local-web", "size": 57})
    assert summary.status_code == 200
    short = summary.get_json()
    assert "tasks" not in short and "nodes" not in short["layout"]
    full = api("POST", "/clusters/plan?full=1", {"template": "local-web", "size": 57})
    assert full.status_code == 200 and full.is_streamed
    plan = json.loads(full.get_data())  # the streamed chunks make one JSON document
    assert plan["summary"] == short["summary"] and plan["groups"] == short["groups"]
    assert len(plan["layout"]["nodes"]) == short["summary"]["nodes"] == 57
    actions = collections.Counter(t["action"] for t in plan["tasks"] if t["action"] != "JOIN")
    assert actions == short["summary"]["actions"]
    assert sum(actions.values()) == short["summary"]["tasks"]
    assert actions["CREATE"] == 57
    ids = [t["id"] for t in plan["tasks"]]
    assert len(set(ids)) == len(ids) and all(d in ids for t in plan["tasks"]
                                             for d in t["depends_on"])


def test_a_change_plans_summary_agrees_with_its_task_list(api):
    operations.create(api.store, "default", {"name": "web", "template": "local-web", "size": 5})
    for body in ({"operation": "resize", "size": 9}, {"operation": "delete"},
                 {"operation": "restart"}):
        short = api("POST", "/clusters/web/plan", body).get_json()
        plan = json.loads(api("POST", "/clusters/web/plan?full=true", body).get_data())
        actions = collections.Counter(t["action"] for t in plan["tasks"] if t["action"] != "JOIN")
        assert actions == short["summary"]["actions"] == plan["summary"]["actions"], body
        assert ("layout" in short) == (body["operation"] == "resize")


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=x", "after=-1", "after=1.5"])
def test_bad_page_values_are_refused_by_name(api, query):
    operations.create(api.store, "default", {"name": "web", "template": "local-web", "size": 2})
    for path in ("/clusters/web/tasks", "/clusters/web"):
        response = api("GET", f"{path}?{query}")
        assert response.status_code == 400
        assert response.get_json()["error"]["details"]["field"] == "query." + query.split("=")[0]


def _writer(store, op_id, cluster_id, stop):
    """Another thread's writes while the pages are read: task statuses and outputs change,
    rollback tasks are appended after the last seq, nodes change status and new ones come."""
    db = store.db
    round_ = 0
    while not stop.is_set():
        round_ += 1
        with store.write():
            db.execute("UPDATE tasks SET status = 'RUNNING', output = output || 'x' WHERE"
                       " operation_id = ? AND seq % 7 = ?", [op_id, round_ % 7])
            seq = db.execute("SELECT MAX(seq) FROM tasks WHERE operation_id = ?",
                             [op_id]).fetchone()[0]
            db.execute("INSERT INTO tasks (id, operation_id, node_id, action, service,"
                       " depends_on, status, seq) VALUES (?, ?, '', 'DELETE', NULL, '[]',"
                       " 'PENDING', ?)", [f"{op_id}/extra:{round_}", op_id, seq + 1])
            db.execute("UPDATE nodes SET status = ? WHERE cluster_id = ? AND rowid % 5 = ?",
                       [f"S{round_ % 3}", cluster_id, round_ % 5])
            db.execute("INSERT INTO nodes (cluster_id, id, hostname, hardwaretype, imagetype,"
                       " services, status, facts, created_at) VALUES (?, ?, ?, 'h', 'i', '[]',"
                       " 'PLANNED', '{}', ?)", [cluster_id, f"x{round_}", f"x{round_}",
                                                time.time()])
        time.sleep(0.001)


def test_pages_return_every_row_exactly_once_under_concurrent_writes(api):
    made = operations.create(api.store, "default",
                             {"name": "web", "template": "local-web", "size": 120})
    op_id, cluster_id = made["operation"], made["cluster_id"]
    before_tasks = {r[0] for r in api.store.db.execute(
        "SELECT id FROM tasks WHERE operation_id = ?", [op_id])}
    before_nodes = {r[0] for r in api.store.db.execute(
        "SELECT id FROM nodes WHERE cluster_id = ?", [cluster_id])}
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(api.store, op_id, cluster_id, stop))
    writer.start()
    try:
        tasks, pages, after = [], 0, None
        while True:
            query = f"?limit=13&operation={op_id}" + (f"&after={after}" if after else "")
            response = api("GET", "/clusters/web/tasks" + query)
            assert response.status_code == 200
            page = response.get_json()
            assert len(page) <= 13
            tasks += [t["id"] for t in page]
            pages += 1
            after = response.headers.get("X-Shoal-Next")
            if after is None:
                break
        nodes, after = [], None
        while True:
            view = api("GET", "/clusters/web?limit=7" + (f"&after={after}" if after else ""))
            body = view.get_json()
            nodes += [n["id"] for n in body["nodes"]]
            assert sum(body["node_counts"].values()) == body["size"]
            after = body["next"]
            if after is None:
                break
    finally:
        stop.set()
        writer.join()
    assert pages > 10
    assert len(tasks) == len(set(tasks)), "a task came twice"
    assert before_tasks <= set(tasks), "a task was skipped"
    assert len(nodes) == len(set(nodes)), "a node came twice"
    assert before_nodes <= set(nodes), "a node was skipped"
    # Rows written during the read come after the ones before it: the pages keep plan order.
    order = [t for t in tasks if t in before_tasks]
    assert order == [r[0] for r in api.store.db.execute(
        "SELECT id FROM tasks WHERE operation_id = ? AND id IN (SELECT value FROM"
        " json_each(?)) ORDER BY seq", [op_id, json.dumps(sorted(before_tasks))])]


def test_without_a_limit_every_row_comes_in_one_answer(api):
    made = operations.create(api.store, "default", {"name": "web", "template": "local-web",
                                                    "size": 30})
    response = api("GET", "/clusters/web/tasks")
    assert "X-Shoal-Next" not in response.headers
    assert len(response.get_json()) == len(made["tasks"])
    body = api("GET", "/clusters/web").get_json()
    assert len(body["nodes"]) == body["size"] == 30 and body["next"] is None
    assert body["node_counts"] == {"PLANNED": 30}
    assert [n["id"] for n in body["nodes"]][:3] == ["n1", "n2", "n3"]  # the order they were made
