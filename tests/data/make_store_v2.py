"""Write tests/data/store-v2.db: a store as the release before tenancy wrote it (commit a458b77,
sealed secrets, no tenants or users), for the tenancy migration test. Run with that release's
code first on the path:

    mkdir /tmp/prev && git archive a458b77 cluster_server extensions | tar -x -C /tmp/prev
    PYTHONPATH=/tmp/prev .venv/bin/python tests/data/make_store_v2.py tests/data/store-v2.db
"""

import pathlib
import shutil
import sys
import tempfile

from cluster_server import operations
from cluster_server.app import create_app

target = pathlib.Path(sys.argv[1])
with tempfile.TemporaryDirectory() as home:
    app = create_app(home=pathlib.Path(home), token="t", start_engine=False)
    client = app.test_client()
    # A tenant named only by its rows (the release before had no tenants table).
    reply = client.post("/api/v1/services", json={"name": "side", "description": "other"},
                        headers={"Authorization": "Bearer t", "X-Shoal-Tenant": "side-team"})
    assert reply.status_code == 201, reply.get_json()
    for name in ("old-web", "old-kv"):
        operations.create(app.store, "default", {"name": name, "template": f"local-{name[4:]}",
                                                 "size": 2})
    app.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(pathlib.Path(home) / "shoal.db", target)
    # The key that unseals its secrets (a test copies both into a home, as store.key).
    shutil.copy(pathlib.Path(home) / "store.key", target.with_suffix(".key"))
print(target)
