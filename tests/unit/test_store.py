"""The SQLite store: migrations, WAL, transactions, concurrency."""

import sqlite3
import threading

import pytest

from cluster_server.errors import NotFound
from cluster_server.store import MIGRATIONS, Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "shoal.db")


def test_migrations_run_once_and_number_the_schema(tmp_path):
    Store(tmp_path / "a.db")
    again = Store(tmp_path / "a.db")
    assert again.schema_version() == len(MIGRATIONS)
    rows = again.db.execute("SELECT version FROM schema_migrations").fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


def test_wal_mode(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_get_list_delete(store):
    store.catalog_put([("service", {"name": "b"}), ("service", {"name": "a", "x": 1})])
    assert [s["name"] for s in store.catalog_list("service")] == ["a", "b"]
    assert store.catalog_get("service", "a") == {"name": "a", "x": 1}
    store.catalog_delete("service", "a")
    with pytest.raises(NotFound, match="service 'a' not found"):
        store.catalog_get("service", "a")
    with pytest.raises(NotFound):
        store.catalog_delete("service", "a")


def test_tenants_are_separate(store):
    store.catalog_put([("service", {"name": "a"})], tenant="acme")
    assert store.catalog_list("service") == []
    assert store.catalog_list("service", tenant="acme") == [{"name": "a"}]


def test_a_failed_batch_writes_nothing(store):
    with pytest.raises(TypeError):
        store.catalog_put([("service", {"name": "ok"}), ("service", {"name": object()})])
    assert store.catalog_list("service") == []


def test_data_survives_reopening(tmp_path):
    Store(tmp_path / "s.db").catalog_put([("provider", {"name": "p"})])
    assert Store(tmp_path / "s.db").catalog_get("provider", "p") == {"name": "p"}


def test_many_threads_writing_never_see_database_locked(store):
    errors = []

    def writer(n):
        try:
            for i in range(40):
                with store.write() as db:
                    db.execute("SELECT COUNT(*) FROM catalog").fetchone()
                    store.catalog_put([("service", {"name": f"s{n}-{i}"})])
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.catalog_list("service")) == 16 * 40


def test_nodes_version_counts_the_changes_macros_can_see(tmp_path):
    store = Store(tmp_path / "shoal.db")
    with store.write() as db:
        db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                   " created_at, updated_at) VALUES ('c1', 'default', 'a', 't', 'p', 'ACTIVE',"
                   " '{}', 0, 0)")

    def version():
        return store.db.execute("SELECT nodes_version FROM clusters WHERE id = 'c1'"
                                ).fetchone()[0]

    def write(sql, *args):
        before = version()
        with store.write() as db:
            db.execute(sql, list(args))
        return version() - before

    assert write("INSERT INTO nodes (cluster_id, id, hostname, hardwaretype, imagetype, services,"
                 " status, facts, created_at) VALUES ('c1', 'n1', 'h', 'hw', 'im', '[]',"
                 " 'PLANNED', '{}', 0)") == 1
    assert write("UPDATE nodes SET status = 'ACTIVE'") == 0  # still live
    assert write("UPDATE nodes SET facts = ?",
                 '{"resource": {"addresses": {"access_v4": "10.0.0.1"}}}') == 1
    assert write("UPDATE nodes SET facts = json_set(facts, '$.uname', 'Linux')") == 0
    assert write("UPDATE nodes SET services = '[\"web\"]'") == 1
    assert write("UPDATE nodes SET status = 'REMOVING'") == 1  # gone from the macros' view
    assert write("DELETE FROM nodes") == 1
