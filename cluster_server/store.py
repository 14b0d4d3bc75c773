"""The SQLite store: one file in SHOAL_HOME, WAL mode, numbered migrations, one connection per thread.

Writes go through ``Store.write()``, a ``BEGIN IMMEDIATE`` transaction: taking the write lock up
front means two threads never both hold a read snapshot and then race to upgrade it, which is
what produces "database is locked" under load. Every row carries its tenant.
"""

import contextlib
import json
import os
import sqlite3
import threading
import time

import sqlite_utils

from cluster_server import vault
from cluster_server.errors import NotFound, StoreKeyError

# Numbered migrations: append, never edit one that has shipped.
MIGRATIONS = [
    # 1: the catalog. One table for every kind keeps import/export and validation generic.
    """
    CREATE TABLE catalog (
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant, kind, name)
    );
    """,
    # 2: clusters, their nodes, operations and the task graph each operation runs.
    """
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        template TEXT NOT NULL,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX clusters_live_name ON clusters(tenant, name) WHERE status != 'DELETED';
    CREATE TABLE nodes (
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        id TEXT NOT NULL,
        hostname TEXT NOT NULL,
        hardwaretype TEXT NOT NULL,
        imagetype TEXT NOT NULL,
        services TEXT NOT NULL,
        status TEXT NOT NULL,
        facts TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        PRIMARY KEY (cluster_id, id)
    );
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL,
        error TEXT,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX operations_cluster ON operations(cluster_id);
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        operation_id TEXT NOT NULL REFERENCES operations(id),
        node_id TEXT NOT NULL,
        action TEXT NOT NULL,
        service TEXT,
        depends_on TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        output TEXT NOT NULL DEFAULT '',
        started_at REAL,
        finished_at REAL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX tasks_operation ON tasks(operation_id, status);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster_id TEXT NOT NULL,
        operation_id TEXT,
        at REAL NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_cluster ON events(cluster_id, id);
    """,
    # 3: small facts about the store itself (e.g. that the default catalog was imported once).
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 4: plugin resources (scripts, archives, keys): one row per uploaded version; the bytes live
    # in files under SHOAL_HOME/resources. The partial unique indexes let SQLite itself keep at
    # most one active and one staged version per name. resource_names keeps the last version
    # number handed out, so a deleted version's number is never reused for other bytes.
    """
    CREATE TABLE resources (
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant, kind, name, version)
    );
    CREATE UNIQUE INDEX resources_one_active ON resources(tenant, kind, name)
        WHERE status = 'active';
    CREATE UNIQUE INDEX resources_one_staged ON resources(tenant, kind, name)
        WHERE status = 'staged';
    CREATE TABLE resource_names (
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        last_version INTEGER NOT NULL,
        PRIMARY KEY (tenant, kind, name)
    );
    """,
    # health (cluster_server/health): the last known state of each service instance's check,
    # since when, the restarts supervision made (timestamps, for its window) and whether it gave
    # up; drift keeps the last comparison of a cluster with what its provider holds.
    """
    CREATE TABLE health (
        cluster_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        service TEXT NOT NULL,
        state TEXT NOT NULL,
        since REAL NOT NULL,
        checked_at REAL,
        failures INTEGER NOT NULL DEFAULT 0,
        output TEXT NOT NULL DEFAULT '',
        restarts TEXT NOT NULL DEFAULT '[]',
        gave_up INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (cluster_id, node_id, service)
    );
    CREATE TABLE drift (
        cluster_id TEXT PRIMARY KEY,
        checked_at REAL NOT NULL,
        drifted INTEGER NOT NULL,
        report TEXT NOT NULL
    );
    """,
    # which queue the Celery executor sent a task to, and which worker ran it (blank on
    # threads).
    """
    ALTER TABLE tasks ADD COLUMN queue TEXT;
    ALTER TABLE tasks ADD COLUMN worker TEXT;
    """,
]


class Store:
    def __init__(self, path):
        self.path = str(path)
        self._local = threading.local()
        # Catalog entries keep provider secrets: the file is the user's alone. SQLite gives its
        # -wal and -shm files the database file's mode, so only this file needs it.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self.path + suffix, 0o600)
        self.migrate()
        self.vault = self._open_vault()
        self._seal_plain_rows()

    @property
    def db(self):
        """This thread's sqlite_utils Database (SQLite connections are not shared across threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: we issue BEGIN ourselves; timeout waits for the write lock.
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            # Freed pages are zeroed, so a secret once stored in clear (before sealing, or an
            # earlier release's row) does not linger in the file after it is rewritten. Debian's
            # SQLite does this by default; other builds do not.
            conn.execute("PRAGMA secure_delete=ON")
            db = self._local.db = sqlite_utils.Database(conn)
        return db

    @contextlib.contextmanager
    def write(self):
        """One write transaction; nested calls join the outer one."""
        conn = self.db.conn
        if conn.in_transaction:
            yield self.db
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self):
        """Several reads that see one state of the store (WAL gives a read transaction one
        snapshot), so a reply never mixes rows from before and after a commit."""
        conn = self.db.conn
        if conn.in_transaction:
            yield self.db
            return
        conn.execute("BEGIN")
        try:
            yield self.db
        finally:
            conn.execute("COMMIT")

    def migrate(self):
        with self.write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for number, script in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_migrations (version) VALUES (?)", [number])

    # -- secrets at rest ---------------------------------------------------------------------

    # The texts that hold provider credentials: a provider's entity, and a cluster's spec, which
    # embeds its provider as it was at create.
    SEALED = (("SELECT rowid, body FROM catalog WHERE kind = 'provider'",
               "UPDATE catalog SET body = ? WHERE rowid = ?"),
              ("SELECT rowid, spec FROM clusters", "UPDATE clusters SET spec = ? WHERE rowid = ?"))

    def _open_vault(self):
        sealed = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM catalog WHERE substr(body, 1, ?) = ?)"
            " OR EXISTS (SELECT 1 FROM clusters WHERE substr(spec, 1, ?) = ?)",
            [len(vault.PREFIX), vault.PREFIX] * 2).fetchone()[0]
        try:
            # A new key only for a store with nothing sealed: with sealed rows, a missing key
            # means a lost one, and a new key would hide that until a read fails.
            return vault.Vault.beside(self.path, create=not sealed)
        except FileNotFoundError:
            raise StoreKeyError(
                f"{self.path} holds sealed secrets but its key {vault.KEY_NAME} is missing from "
                f"{os.path.dirname(self.path)}; restore it from a backup",
                {"field": vault.KEY_NAME, "reason": "missing"}) from None

    def _seal_plain_rows(self):
        """Seal in place what an earlier release stored in clear, then rebuild the file so no
        free page or WAL frame keeps the clear text. Runs at every start; a no-op once done."""
        sealed = 0
        with self.write() as db:
            for select, update in self.SEALED:
                for rowid, text in db.execute(select).fetchall():
                    if not vault.is_sealed(text):
                        db.execute(update, [self.vault.seal(text), rowid])
                        sealed += 1
        if sealed:
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sealed

    def seal(self, value):
        """The stored text of a JSON value that may hold secrets."""
        return self.vault.seal(json.dumps(value, sort_keys=True))

    def unseal(self, text):
        return json.loads(self.vault.unseal(text))

    def _text(self, kind, body):
        return self.seal(body) if kind == "provider" else json.dumps(body, sort_keys=True)

    def _body(self, kind, text):
        return self.unseal(text) if kind == "provider" else json.loads(text)

    def schema_version(self):
        return self.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]

    def setting(self, key, default=None):
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key, value):
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                       [key, json.dumps(value)])

    # -- catalog -------------------------------------------------------------------------------

    def catalog_list(self, kind, tenant="default"):
        rows = self.db.execute(
            "SELECT body FROM catalog WHERE tenant = ? AND kind = ? ORDER BY name", [tenant, kind]
        )
        return [self._body(kind, row[0]) for row in rows]

    def catalog_all(self, tenant="default"):
        """Every entity, as {kind: {name: body}}."""
        result = {}
        rows = self.db.execute(
            "SELECT kind, name, body FROM catalog WHERE tenant = ? ORDER BY kind, name", [tenant]
        )
        for kind, name, body in rows:
            result.setdefault(kind, {})[name] = self._body(kind, body)
        return result

    def catalog_get(self, kind, name, tenant="default"):
        row = self.db.execute(
            "SELECT body FROM catalog WHERE tenant = ? AND kind = ? AND name = ?",
            [tenant, kind, name],
        ).fetchone()
        if row is None:
            raise NotFound(f"{kind} '{name}' not found", {"entity": kind, "name": name})
        return self._body(kind, row[0])

    def catalog_exists(self, kind, name, tenant="default"):
        return self.db.execute(
            "SELECT 1 FROM catalog WHERE tenant = ? AND kind = ? AND name = ?", [tenant, kind, name]
        ).fetchone() is not None

    def catalog_put(self, entities, tenant="default"):
        """Write many (kind, body) pairs in one transaction: all of them or none."""
        now = time.time()
        with self.write() as db:
            for kind, body in entities:
                db.execute(
                    "INSERT OR REPLACE INTO catalog (tenant, kind, name, body, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [tenant, kind, body["name"], self._text(kind, body), now],
                )

    def catalog_delete(self, kind, name, tenant="default"):
        with self.write() as db:
            cursor = db.execute(
                "DELETE FROM catalog WHERE tenant = ? AND kind = ? AND name = ?", [tenant, kind, name]
            )
            if cursor.rowcount == 0:
                raise NotFound(f"{kind} '{name}' not found", {"entity": kind, "name": name})
